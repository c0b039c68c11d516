r"""Control-step latency with a key/value cache: one JSON line per size.

A control step appends one timestep's observation (and `|`) to a cache that already holds
`--context` tokens, then decodes the action token by token with masked logits, as an agent does
at every environment step. Reported: `control_step_ms` (median), and its two parts. As the agent
does, both compute logits over the action ids alone (`id_window`), not the whole vocabulary.

  python tools/bench/decode.py --config=experiments/configs/gato.py:small --sizes=tiny,small
"""

import json
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from gato_jax import tokenizer as T
from gato_jax.inference.decode import decode_tokens, init_cache, prefill
from gato_jax.model import Gato, ModelConfig, init_variables

# A sibling of this script: its folder is on sys.path however the script is started.
import bench_common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config.", lock_config=True)
_SIZES = flags.DEFINE_list("sizes", None, "Sizes to measure (default: the config's).")
_CONTEXT = flags.DEFINE_integer(
  "context", 1024, "Cache length; filled up to leave room for a step."
)
_OBSERVATION_TOKENS = flags.DEFINE_integer(
  "observation_tokens", 40, "Tokens per observation (incl. |)."
)
_ACTION_TOKENS = flags.DEFINE_integer("action_tokens", 6, "Action tokens decoded per step.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed control steps per size.")


def main(argv):
  del argv
  config = _CONFIG.value
  for size in _SIZES.value or [config.model.size]:
    cfg = ModelConfig.from_dict(
      {**config.model.to_dict(), "size": size, "max_decode_length": _CONTEXT.value}
    )
    model = Gato(cfg)
    params = nn.unbox(jax.jit(lambda r: init_variables(cfg, r))(jax.random.key(0)))["params"]
    step_tokens = _OBSERVATION_TOKENS.value + _ACTION_TOKENS.value
    history = bench_common.random_batch(cfg, 1, _CONTEXT.value - step_tokens, 0)
    _, cache = prefill(params, init_cache(cfg, 1), history, model=model)
    observation = bench_common.random_batch(cfg, 1, _OBSERVATION_TOKENS.value, 0, seed=1)
    window = (T.VALUE_OFFSET, T.SEPARATOR_ID)
    ranges = jnp.asarray(np.tile([window], (_ACTION_TOKENS.value, 1)))

    def control_step():
      t0 = time.perf_counter()
      logits, step_cache = prefill(
        params, cache, observation, model=model, last_only=True, id_window=window
      )
      jax.block_until_ready(logits)
      t1 = time.perf_counter()
      ids, _ = decode_tokens(
        params,
        step_cache,
        logits[:, -1],
        ranges,
        jax.random.key(0),
        model=model,
        temperature=0.0,
        id_window=window,
      )
      jax.block_until_ready(ids)
      return t1 - t0, time.perf_counter() - t1

    control_step()  # Compile both functions.
    times = np.array([control_step() for _ in range(_REPEATS.value)])
    print(
      json.dumps(
        {
          "size": size,
          "context": _CONTEXT.value,
          "observation_tokens": _OBSERVATION_TOKENS.value,
          "action_tokens": _ACTION_TOKENS.value,
          "dtype": cfg.dtype,
          "control_step_ms": round(1e3 * float(np.median(times.sum(1))), 3),
          "prefill_ms": round(1e3 * float(np.median(times[:, 0])), 3),
          "decode_ms": round(1e3 * float(np.median(times[:, 1])), 3),
          "device": jax.devices()[0].device_kind,
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
