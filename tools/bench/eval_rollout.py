r"""Evaluation rollout step time: host-loop environments vs gymnax under jit + vmap.

One rollout step is what a batch of evaluation episodes costs per environment step: the model
agent's batched call (tokenize the observations, extend the cache, decode the action tokens)
plus stepping every environment. The host backend (`runner.HostBatch`) steps one
`GymnaxEnvironment` after another; the jit backend (`gymnax_envs.GymnaxBatch`) steps the whole
batch in one jitted vmapped call and tokenizes the stacked observations in one call. Both play
the same episodes (same seeds, same greedy actions). One JSON line per (size, path): medians over
interleaved repeats of the milliseconds per rollout step, split into agent and environments.

  python tools/bench/eval_rollout.py --sizes=tiny,small --task=gymnax/CartPole-v1 --num_envs=16
"""

import json

from absl import app, flags
import flax.linen as nn
import jax
import numpy as np

from gato_jax.envs import gymnax_envs, runner
from gato_jax.evaluation import model_agent, rollouts
from gato_jax.model import ModelConfig, init_variables

_SIZES = flags.DEFINE_list("sizes", ["tiny", "small"], "Model sizes to measure.")
_TASK = flags.DEFINE_string("task", "gymnax/CartPole-v1", "A gymnax task.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 16, "Environments stepped together.")
_EPISODES = flags.DEFINE_integer("episodes", 32, "Episodes played (eval.episodes).")
_STEPS = flags.DEFINE_integer("steps", 60, "Most steps per episode (eval.max_steps).")
_CONTEXT = flags.DEFINE_integer("context", 1024, "The model's max_decode_length.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per path (the median is reported).")


def _measure(path: str, cfg: ModelConfig, params) -> runner.RolloutTiming:
  agent = model_agent.ModelAgent(cfg, params)
  make_batch = lambda num_envs: gymnax_envs.GymnaxBatch(_TASK.value, num_envs)
  if path == "host":
    make_batch = runner.host_batch(lambda: gymnax_envs.GymnaxEnvironment(_TASK.value))
  return rollouts.run_task(make_batch, agent, _EPISODES.value, _NUM_ENVS.value, 0, _STEPS.value)[1]


def main(argv):
  del argv
  for size in _SIZES.value:
    cfg = ModelConfig.from_size(size, max_decode_length=_CONTEXT.value)
    params = nn.unbox(jax.jit(lambda r: init_variables(cfg, r))(jax.random.key(0)))["params"]
    paths = ("host", "jit")
    for path in paths:
      _measure(path, cfg, params)  # Compiles every shape the timed runs meet.
    # Interleaved repeats, medians: on a shared machine the load drifts between runs.
    runs = {path: [] for path in paths}
    for _ in range(_REPEATS.value):
      for path in paths:
        runs[path].append(_measure(path, cfg, params))
    for path in paths:
      ms = lambda seconds, timing: 1e3 * seconds / max(timing.agent_calls, 1)
      median = lambda f: round(float(np.median([f(t) for t in runs[path]])), 3)
      timing = runs[path][0]
      print(
        json.dumps(
          {
            "size": size,
            "path": path,
            "task": _TASK.value,
            "num_envs": _NUM_ENVS.value,
            "episodes": _EPISODES.value,
            "context": _CONTEXT.value,
            "repeats": _REPEATS.value,
            "rollout_step_ms": median(lambda t: ms(t.agent_seconds + t.env_seconds, t)),
            "agent_ms": median(lambda t: ms(t.agent_seconds, t)),
            "env_ms": median(lambda t: ms(t.env_seconds, t)),
            "steps": timing.agent_calls,
            "env_steps": timing.env_steps,
            "device": jax.devices()[0].device_kind,
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
