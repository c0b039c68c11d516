"""The tiny config most trainer tests start from."""


def smoke_config(data_dir: str, **overrides):
  """experiments/configs/gato.py:tiny,smoke on `data_dir`, with `{"group.field": value}`
  overrides."""
  from gato_jax.configs import gato  # pylint: disable=g-import-not-at-top

  config = gato.get_config("tiny,smoke")
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    group, field = key.split(".")
    config[group][field] = value
  return config
