r"""Tokenizer throughput, in timesteps per second: one JSON line per case.

Cases cross two timestep shapes with three ways of calling the tokenizer:
- `dm_control`: walker-like state, 24 continuous observation values in 3 keys, 6 torques.
- `atari`: an 80x80 RGB frame (25 patches) and one of 18 buttons.
- `host_timestep`: numpy, one `tokenize_timestep` call per timestep (the per-step data path).
- `host_episode`: numpy, `tokenize_episode` over an episode of `--episode_length` timesteps.
- `jit_batch`: jitted `tokenize_episode` on the default JAX device, episode already on device.

Usage:
  python tools/bench/tokenizer.py [--episode_length=500] [--seconds=2]
"""

import json
import time

from absl import app, flags
import jax
import numpy as np

from gato_jax import tokenizer as T

_EPISODE_LENGTH = flags.DEFINE_integer("episode_length", 500, "Timesteps per benchmark episode.")
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Minimum measuring time per case.")


def _cases(rng, length):
  walker_obs_spec = {
    "height": T.ContinuousSpec(()),
    "orientations": T.ContinuousSpec((14,)),
    "velocity": T.ContinuousSpec((9,)),
  }
  walker_obs = {
    "height": rng.standard_normal(length).astype(np.float32),
    "orientations": rng.standard_normal((length, 14)).astype(np.float32),
    "velocity": rng.standard_normal((length, 9)).astype(np.float32),
  }
  walker_act_spec = T.ContinuousSpec((6,), mu_law=False)
  walker_act = rng.uniform(-1, 1, (length, 6)).astype(np.float32)
  atari_obs_spec = {"frame": T.ImageSpec()}
  atari_obs = {"frame": rng.integers(0, 256, (length, 80, 80, 3), dtype=np.uint8)}
  atari_act_spec = T.DiscreteSpec((), num_values=18)
  atari_act = rng.integers(0, 18, length).astype(np.int32)
  return {
    "dm_control": (walker_obs, walker_act, walker_obs_spec, walker_act_spec),
    "atari": (atari_obs, atari_act, atari_obs_spec, atari_act_spec),
  }


def _rate(fn, timesteps_per_call: int, min_seconds: float) -> float:
  fn()  # Warm-up (and compilation for jitted cases).
  calls, start = 0, time.perf_counter()
  while True:
    fn()
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      return calls * timesteps_per_call / elapsed


def main(argv):
  del argv
  length, seconds = _EPISODE_LENGTH.value, _SECONDS.value
  rng = np.random.default_rng(0)
  for name, (obs, act, obs_spec, act_spec) in _cases(rng, length).items():
    steps = [
      (jax.tree.map(lambda v: v[t], obs), jax.tree.map(lambda v: v[t], act)) for t in range(length)
    ]

    def host_timestep():
      for o, a in steps:
        T.tokenize_timestep(o, a, obs_spec, act_spec)

    def host_episode():
      T.tokenize_episode(obs, act, obs_spec, act_spec)

    jitted = jax.jit(lambda o, a: T.tokenize_episode(o, a, obs_spec, act_spec))
    device_obs, device_act = jax.device_put((obs, act))

    def jit_batch():
      jax.block_until_ready(jitted(device_obs, device_act))

    tokens_per_step = T.tokenize_timestep(*steps[0], obs_spec, act_spec).num_tokens
    for path, fn in [
      ("host_timestep", host_timestep),
      ("host_episode", host_episode),
      ("jit_batch", jit_batch),
    ]:
      rate = _rate(fn, length, seconds)
      print(
        json.dumps(
          {
            "case": f"{name}/{path}",
            "timesteps_per_second": round(rate, 1),
            "tokens_per_timestep": tokens_per_step,
            "episode_length": length,
            "device": str(jax.devices()[0].platform) if path == "jit_batch" else "host",
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
