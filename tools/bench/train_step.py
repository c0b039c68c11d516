r"""Training-step throughput and model FLOPs utilisation: one JSON line per size.

  python tools/bench/train_step.py --config=experiments/configs/gato.py:small \
      --sizes=tiny,small --config.train.batch_size=8 --config.train.seq_len=256

Keys: `tokens_per_second`, `mfu` (null where the device's peak is unknown: pass
--peak_tflops), `step_ms`, `params`. FLOPs per token are 6 N plus causal attention.
"""

import json

from absl import app, flags
import jax
from ml_collections import config_flags

from gato_jax import sharding
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training import flops
from gato_jax.training.step import (abstract_param_count, batch_shardings, create_train_state,
                                     make_train_step, max_targets_per_row)
from tools.bench import _common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config.", lock_config=True)
_SIZES = flags.DEFINE_list("sizes", None, "Sizes to measure (default: the config's).")
_NUM_PATCHES = flags.DEFINE_integer("num_patches", 32, "Image-patch slots per sequence.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Minimum measuring time per size.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of all devices together.")


def main(argv):
  del argv
  config = _CONFIG.value
  mesh = sharding.create_mesh(config.mesh.shape)
  for size in _SIZES.value or [config.model.size]:
    model_config = ModelConfig.from_dict({**config.model.to_dict(), "size": size})
    num_params = abstract_param_count(model_config)
    state, trainer = create_train_state(model_config, OptimizerConfig.from_dict(config.optimizer),
                                        mesh, config.mesh.rules, jax.random.key(0))
    batch = _common.random_batch(model_config, config.train.batch_size, config.train.seq_len,
                                 _NUM_PATCHES.value)
    batch = jax.device_put(batch, batch_shardings(trainer, batch))
    step = make_train_step(trainer, batch)
    holder = {"state": state}
    # As the trainer does: logits only where the loss counts, unless the config says otherwise.
    num_targets = max_targets_per_row(batch) if config.train.logits_at_targets_only else None

    def run():
      holder["state"], metrics = step(holder["state"], batch, jax.random.key(0), num_targets)
      jax.block_until_ready(metrics["loss"])

    seconds = _common.time_calls(run, _SECONDS.value)
    tokens = config.train.batch_size * config.train.seq_len
    step_flops = flops.train_flops_per_token(model_config, num_params, config.train.seq_len) * tokens
    peak = flops.peak_flops(_PEAK_TFLOPS.value)
    print(json.dumps({
        "size": size, "params": num_params, "batch_size": config.train.batch_size,
        "seq_len": config.train.seq_len, "dtype": model_config.dtype,
        "remat_policy": model_config.remat_policy, "step_ms": round(1e3 * seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1),
        "mfu": round(step_flops / seconds / peak, 4) if peak else None,
        "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
    }), flush=True)
    del state, holder


if __name__ == "__main__":
  app.run(main)
