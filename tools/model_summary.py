r"""Exact parameter count of a Gato config, from shapes alone (jax.eval_shape, no memory).

  python tools/model_summary.py --config=experiments/configs/gato.py:1.18b

Prints `params: N`, then the count per top-level module and per decoder sub-module, and the
deviation from the paper's nominal size where it names one.
"""

import flax.linen as nn
import jax
from ml_collections import config_flags

from gato_jax import launch
from gato_jax.model import NOMINAL_PARAMS, ModelConfig, count_params, init_variables
from gato_jax.tokenizer.constants import padded_vocab_size

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config file.", lock_config=True)


def summarize(model_config: ModelConfig) -> tuple[int, list[tuple[str, int]]]:
  """(total parameters, [(module path, parameters)]) for a model config."""
  shapes = jax.eval_shape(lambda r: init_variables(model_config, r), jax.random.key(0))
  params = nn.unbox(shapes)["params"]
  rows = []
  for name in sorted(params):
    rows.append((name, count_params(params[name])))
    if name == "decoder":
      layers = params[name].get("layers", params[name])
      for sub in sorted(layers):
        rows.append((f"decoder/{sub}", count_params(layers[sub])))
  return count_params(params), rows


def main(argv):
  del argv
  config = _CONFIG.value
  model_config = ModelConfig.from_dict(config.model)
  total, rows = summarize(model_config)
  print(f"params: {total}")
  for name, count in rows:
    print(f"  {name:<32} {count:>14,}  {100 * count / total:5.1f}%")
  nominal = NOMINAL_PARAMS.get(config.model.size)
  if nominal:
    print(f"nominal: {nominal:,.0f} ({100 * (total / nominal - 1):+.1f}%)")
  print(
    f"layers={model_config.num_layers} width={model_config.width} heads={model_config.num_heads}"
    f" head_dim={model_config.head_dim} mlp={model_config.mlp_dim} ({model_config.mlp_activation})"
    f" embedding_rows={padded_vocab_size(model_config.vocab_multiple)}"
  )


if __name__ == "__main__":
  launch.run(main)
