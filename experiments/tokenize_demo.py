r"""Tokenizes one real DM Control timestep and prints its Gato tokens.

A first look at the tokenizer until the quickstart (training) exists:

  python experiments/tokenize_demo.py --domain=cartpole --task=swingup
"""

import os

# State observations need no renderer; without this dm_control probes GLFW and warns.
os.environ.setdefault("MUJOCO_GL", "disable")

from absl import app, flags
import numpy as np

from gato_jax import tokenizer

_DOMAIN = flags.DEFINE_string("domain", "cartpole", "DM Control suite domain.")
_TASK = flags.DEFINE_string("task", "swingup", "DM Control suite task.")
_SEED = flags.DEFINE_integer("seed", 0, "Environment and action seed.")
_STEPS = flags.DEFINE_integer("steps", 10, "Random steps taken before the printed timestep.")

_KIND_NAMES = {kind: kind.name.lower() for kind in tokenizer.TokenKind}


def _fmt(values) -> str:
  return "[" + ", ".join(f"{v:+.4f}" for v in np.ravel(values)) + "]"


def specs_from_dm_control(env):
  """Gato leaf specs for a DM Control environment's state observations and actions."""
  observation_spec = {
    name: tokenizer.ContinuousSpec(shape=spec.shape, mu_law=True)
    for name, spec in env.observation_spec().items()
  }
  action = env.action_spec()
  if np.any(action.minimum < -1) or np.any(action.maximum > 1):
    raise ValueError(f"actions outside [-1, 1] need rescaling first: {action}")
  return observation_spec, tokenizer.ContinuousSpec(shape=action.shape, mu_law=False)


def main(argv):
  del argv
  from dm_control import suite

  env = suite.load(_DOMAIN.value, _TASK.value, task_kwargs={"random": _SEED.value})
  observation_spec, action_spec = specs_from_dm_control(env)
  rng = np.random.default_rng(_SEED.value)
  spec = env.action_spec()
  timestep = env.reset()
  for _ in range(_STEPS.value):
    timestep = env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape))
  action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(np.float32)
  observation = {
    k: np.asarray(v, np.float32).reshape(observation_spec[k].shape)
    for k, v in timestep.observation.items()
  }

  group = tokenizer.tokenize_timestep(observation, action, observation_spec, action_spec)
  print(f"DM Control {_DOMAIN.value}/{_TASK.value}, step {_STEPS.value}")
  for name in sorted(observation):
    print(f"  observation/{name}: {_fmt(observation[name])}")
  print(f"  action: {_fmt(action)}")
  print(f"{group.num_tokens} tokens (observation, separator, action):")
  print(f"  {'slot':>4}  {'id':>6}  {'kind':<10}  {'local_pos':>9}  loss")
  for i in range(group.num_tokens):
    print(
      f"  {i:>4}  {int(group.tokens[i]):>6}  {_KIND_NAMES[int(group.kinds[i])]:<10}"
      f"  {int(group.local_positions[i]):>9}  {int(group.loss_mask[i])}"
    )
  decoded = tokenizer.detokenize_action(group.tokens[group.action_mask], action_spec)
  print(
    f"decoded action: {_fmt(decoded)}"
    f" (max error {np.abs(decoded - action).max():.5f}, half a bin is {1 / 1024:.5f})"
  )


if __name__ == "__main__":
  app.run(main)
