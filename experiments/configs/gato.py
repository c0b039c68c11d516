"""Entry point of `--config=experiments/configs/gato.py:SIZE[,PRESET...]`
(gato_jax/configs/gato.py)."""

from gato_jax.configs.gato import SLICES, apply_preset, get_config  # noqa: F401
