"""Noisy demonstrations: an environment that executes a perturbed copy of each action it is given.

An expert's stored episodes cover only the narrow band of states its own actions lead to: a
DM Control SAC expert keeps cartpole-balance within a few hundred of the 1,024 mu-law bins of
each observation value. A policy imitating it leaves that band after its first small error and
meets observation tokens whose embeddings never trained (docs/generalist.md). Data in which the
*executed* action carries noise while the *stored* action is the expert's clean choice (DART,
Laskey et al. 2017) shows the expert recovering from the states its imitator will drift to.

`NoisyActions(env, scale)` is that environment: the runner records the action the agent
returned, while the wrapped environment receives
- for a continuous action leaf (values in [-1, 1]): the action plus N(0, scale^2) noise per
  value, clipped to [-1, 1];
- for a discrete leaf: a uniformly random value with probability `scale`, else the action.
The noise of an episode is drawn from its reset seed alone, so episodes stay functions of their
seeds (resumable, deterministic generation) and replaying a stored episode's actions through
`NoisyActions` from its seed reproduces it.
"""

from typing import Any

import numpy as np

from gato_jax.data import catalogue
from gato_jax.envs import base
from gato_jax.tokenizer import specs as token_specs

# Mixed into each episode's seed so that the noise is not correlated with the environment's own
# use of the same seed.
_NOISE_STREAM = 0x6E6F6973


def check_scale(scale: float, task: str = "") -> float:
  """`scale` as a float, or a ValueError naming the task for a value outside [0, 1]."""
  scale = float(scale)
  if not 0.0 <= scale <= 1.0:  # Also refuses NaN.
    where = f" of {task}" if task else ""
    raise ValueError(
      f"action noise{where} must be in [0, 1] (the std of continuous actions in [-1, 1], the"
      f" probability of a random discrete action), got {scale}"
    )
  return scale


def scale_for(task: str, spec: str, setting: str = "data.action_noise") -> float:
  """The noise `spec` ("dm_control=0.3,gymnax/Pendulum-v1=0.2": per task or domain) gives
  `task`; 0.0 where it names neither."""
  return catalogue.value_for(task, spec, 0.0, setting, check_scale, "noise in [0, 1]")


class NoisyActions(base.Environment):
  """`env` executing each action with noise of `scale` (module docstring); specs, name and
  version are `env`'s, since the stored episodes are its task's.

  Attributes:
    env: the wrapped environment.
    scale: the noise (std of continuous values, probability of a random discrete value).
    last_executed: the action the wrapped environment received at the latest step.
  """

  def __init__(self, env: base.Environment, scale: float):
    self.env = env
    self.scale = check_scale(scale, env.name)
    self.name = env.name
    self.observation_spec = env.observation_spec
    self.action_spec = env.action_spec
    self.version = env.version
    token_specs.action_leaf_specs(env.action_spec)  # Refuses a spec that is not all values.
    self._rng: np.random.Generator | None = None
    self._pending: base.StepResult | None = None
    self.last_executed: Any = None

  @property
  def max_episode_steps(self) -> int:  # Read after reset: BabyAI sets it per episode.
    return self.env.max_episode_steps

  def reset(self, seed: int) -> Any:
    self._rng = np.random.default_rng([int(seed) % 2**63, _NOISE_STREAM])
    return self.env.reset(seed)

  def perturb(self, action: Any) -> Any:
    """The action the wrapped environment executes in place of `action`."""
    if self._rng is None:
      raise RuntimeError(f"{self.name}: reset(seed) before step (the noise is drawn from it)")
    leaves = []
    for _, value, leaf in token_specs.flatten_with_paths(action, self.action_spec):
      value = np.asarray(value)
      if isinstance(leaf, token_specs.DiscreteSpec):
        swap = self._rng.random(value.shape) < self.scale
        drawn = self._rng.integers(0, leaf.num_values, value.shape)
        leaves.append(np.where(swap, drawn, value).astype(value.dtype))
      else:
        noise = self.scale * self._rng.standard_normal(value.shape)
        leaves.append(np.clip(value + noise, -1.0, 1.0).astype(value.dtype))
    return token_specs.unflatten(self.action_spec, leaves)

  def step(self, action: Any) -> base.StepResult:
    self.last_executed = self.perturb(action)
    return self.env.step(self.last_executed)

  # Environments that simulate in a process of their own (DM Control from pixels) step side by
  # side in a batch (runner.HostBatch); others step at step_async and return at step_wait.
  def step_async(self, action: Any) -> None:
    self.last_executed = self.perturb(action)
    if hasattr(self.env, "step_async"):
      self.env.step_async(self.last_executed)
    else:
      self._pending = self.env.step(self.last_executed)

  def step_wait(self) -> base.StepResult:
    if self._pending is not None:
      result, self._pending = self._pending, None
      return result
    return self.env.step_wait()

  def random_action(self, rng) -> Any:
    return self.env.random_action(rng)

  def close(self) -> None:
    self.env.close()
