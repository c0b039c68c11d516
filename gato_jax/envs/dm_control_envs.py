"""DM Control suite tasks with state observations (GATO_SPEC.md: "DM Control").

Every observation leaf (joint positions, velocities, touch sensors, ...) is a ContinuousSpec with
mu-law, as Gato tokenizes proprioception. Actions are ContinuousSpec(mu_law=False) in [-1, 1]:
the adapter maps them affinely onto each task's action bounds, so Gato's action tokens always
cover the full range whatever the actuator limits.

Episodes last the suite's time limit (1,000 control steps for these tasks) and end truncated,
never terminated: DM Control tasks have no terminal states.
"""

import os

import numpy as np

from gato_jax import tokenizer
from gato_jax.envs import base

# "<suite domain>-<suite task>"; a dash, because suite names contain underscores (point_mass).
TASKS = (
  "cartpole-balance",
  "cartpole-swingup",
  "point_mass-easy",
  "reacher-easy",
  "walker-stand",
  "walker-walk",
  "cheetah-run",
  "finger-spin",
)


class DMControlEnv(base.Environment):
  """One DM Control suite task, e.g. "dm_control/cartpole-swingup", with state observations."""

  def __init__(self, task: str):
    if task not in TASKS:
      raise ValueError(f"unknown DM Control task {task!r}; known tasks: {list(TASKS)}")
    # State observations need no renderer; without this dm_control probes for a display (GLFW).
    os.environ.setdefault("MUJOCO_GL", "disable")
    from dm_control import suite

    self.name = f"dm_control/{task}"
    suite_domain, suite_task = task.split("-", 1)
    self._env = suite.load(suite_domain, suite_task, task_kwargs={"random": 0})
    self.observation_spec = {
      key: tokenizer.ContinuousSpec(tuple(spec.shape), mu_law=True)
      for key, spec in self._env.observation_spec().items()
    }
    bounds = self._env.action_spec()
    self._low = np.asarray(bounds.minimum, np.float64) * np.ones(bounds.shape)
    self._high = np.asarray(bounds.maximum, np.float64) * np.ones(bounds.shape)
    if not np.all(np.isfinite(self._low) & np.isfinite(self._high) & (self._high > self._low)):
      raise ValueError(f"{self.name}: actions need finite bounds to rescale, got {bounds}")
    self.action_spec = tokenizer.ContinuousSpec(tuple(bounds.shape), mu_law=False)
    # control.Environment keeps its limit in a private field; every suite task sets one.
    self.max_episode_steps = int(round(getattr(self._env, "_step_limit", 1000)))

  def _observation(self, timestep) -> dict:
    return {
      key: np.asarray(timestep.observation[key], np.float32).reshape(spec.shape)
      for key, spec in self.observation_spec.items()
    }

  def reset(self, seed: int) -> dict:
    # Suite tasks draw their initial state from task.random; replacing that RandomState makes
    # each episode a function of its seed alone, without reloading the model.
    self._env.task._random = np.random.RandomState(int(seed) % 2**32)  # pylint: disable=protected-access
    return self._observation(self._env.reset())

  def to_env_action(self, action) -> np.ndarray:
    """[-1, 1] -> the task's [minimum, maximum] (clipped: decoded bin centres may overshoot)."""
    action = np.asarray(action, np.float64)
    if action.shape != self.action_spec.shape:
      raise ValueError(
        f"{self.name} takes actions of shape {self.action_spec.shape}, got {action.shape}"
      )
    if not np.all(np.isfinite(action)):
      raise ValueError(f"{self.name}: action has non-finite values: {action}")
    unit = (np.clip(action, -1.0, 1.0) + 1.0) / 2.0
    return self._low + unit * (self._high - self._low)

  def step(self, action) -> base.StepResult:
    timestep = self._env.step(self.to_env_action(action))
    last = timestep.last()
    terminated = bool(last and timestep.discount == 0.0)
    return base.StepResult(
      observation=self._observation(timestep),
      reward=float(timestep.reward or 0.0),
      terminated=terminated,
      truncated=bool(last and not terminated),
    )

  def close(self) -> None:
    self._env.close()


def make_env(task: str) -> DMControlEnv:
  return DMControlEnv(task)
