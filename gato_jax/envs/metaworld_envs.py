"""Meta-World (v3) MT10 manipulation tasks with state observations and scripted experts.

Meta-World is an optional extra (setup.py's `metaworld`): it pins mujoco 3.3.0, which dm-control
rejects, so it lives in an environment of its own (README, "Optional extras"). This
module imports without it; building an environment then raises an ImportError that says how to
install it.

Observations are Meta-World's 39 floats (hand position, gripper opening, two object poses, the
same 18 values one step earlier, and the goal position, observable as in the MT benchmarks) as a
mu-law ContinuousSpec. Actions are 4 floats in [-1, 1]: hand displacement (x, y, z) and gripper
effort. Every reset draws the goal and object positions from the task's own random reset space
with the episode's seed (the MT benchmarks fix 50 such draws per task; seeding draws a fresh,
reproducible one per episode). Episodes last Meta-World's 500 steps and end truncated; the
`success` flag latches once the task's success condition has held at any step, the usual
Meta-World success rate.

The expert of each task is the package's scripted policy (metaworld.policies), whose actions are
clipped to [-1, 1] as the simulator would (the policies output raw proportional-control values).
"""

import warnings

import numpy as np

from gato_jax import tokenizer
from gato_jax.envs import base, policies

# MT10, in the benchmark's order (metaworld.env_dict.MT10_V3).
TASKS = (
  "reach-v3",
  "push-v3",
  "pick-place-v3",
  "door-open-v3",
  "drawer-open-v3",
  "drawer-close-v3",
  "button-press-topdown-v3",
  "peg-insert-side-v3",
  "window-open-v3",
  "window-close-v3",
)
OBSERVATION_SIZE = 39
ACTION_SIZE = 4
INSTALL_HINT = (
  "Meta-World is an optional extra: install metaworld==3.1.1 into an environment"
  " without dm-control (README, 'Optional extras')"
)


def _import_metaworld():
  try:
    from metaworld import env_dict
    from metaworld import policies as scripted
  except ImportError as e:
    raise ImportError(
      f"the metaworld domain needs the metaworld package ({e}). {INSTALL_HINT}"
    ) from e
  return env_dict, scripted


class MetaWorldEnv(base.Environment):
  """One Meta-World task, e.g. "metaworld/pick-place-v3", goal observable, seeded per episode."""

  def __init__(self, task: str):
    if task not in TASKS:
      raise ValueError(f"unknown Meta-World task {task!r}; known tasks: {list(TASKS)}")
    env_dict, _ = _import_metaworld()
    self.task = task
    self.name = f"metaworld/{task}"
    env = env_dict.ALL_V3_ENVIRONMENTS[task]()
    # What the MT benchmarks' set_task does (goal observable, task set), except that the reset
    # randomness stays live and comes from the generator that env.seed(seed) reseeds.
    env._partially_observable = False  # pylint: disable=protected-access
    if "sawyer_observation_space" in vars(env):
      del env.sawyer_observation_space  # A cached property computed for the hidden goal.
    env._set_task_called = True  # pylint: disable=protected-access
    env._freeze_rand_vec = False  # pylint: disable=protected-access
    env.seeded_rand_vec = True
    self.sim = env
    self._success = False
    self.observation_spec = {"state": tokenizer.ContinuousSpec((OBSERVATION_SIZE,), mu_law=True)}
    self.action_spec = tokenizer.ContinuousSpec((ACTION_SIZE,), mu_law=False)
    self.max_episode_steps = int(env.max_path_length)

  def _observation(self, obs) -> dict:
    state = np.asarray(obs, np.float32)
    if state.shape != (OBSERVATION_SIZE,):
      raise ValueError(
        f"{self.name}: expected {OBSERVATION_SIZE} observation values, got shape {state.shape}"
      )
    return {"state": state}

  def reset(self, seed: int) -> dict:
    self.sim.seed(int(seed) % 2**32)
    obs, _ = self.sim.reset()
    self._success = False
    return self._observation(obs)

  def step(self, action) -> base.StepResult:
    action = np.asarray(action, np.float32)
    if action.shape != (ACTION_SIZE,):
      raise ValueError(f"{self.name} takes actions of shape ({ACTION_SIZE},), got {action.shape}")
    if not np.all(np.isfinite(action)):
      raise ValueError(f"{self.name}: action has non-finite values: {action}")
    obs, reward, terminated, truncated, info = self.sim.step(np.clip(action, -1.0, 1.0))
    self._success = self._success or bool(info["success"])
    return base.StepResult(
      observation=self._observation(obs),
      reward=float(reward),
      terminated=bool(terminated),
      truncated=bool(truncated),
      info={"success": self._success},
    )

  def close(self) -> None:
    self.sim.close()


class ScriptedPolicy(policies.Policy):
  """metaworld.policies' hand-written controller for the task, reading the 39-d observation."""

  name = "metaworld_scripted"

  def __init__(self, env: MetaWorldEnv):
    if not isinstance(env, MetaWorldEnv):
      raise TypeError(
        f"the Meta-World scripted policy needs a MetaWorldEnv, got {type(env).__name__}"
      )
    _, scripted = _import_metaworld()
    self._policy = scripted.ENV_POLICY_MAP[env.task]()
    # The controllers warn at every step whose raw action exceeds [-1, 1]; we clip by design.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", module="metaworld")

  def act(self, observation) -> np.ndarray:
    action = self._policy.get_action(np.asarray(observation["state"], np.float64))
    return np.clip(np.asarray(action, np.float32), -1.0, 1.0)


def make_env(task: str) -> MetaWorldEnv:
  return MetaWorldEnv(task)


def make_expert(env: MetaWorldEnv) -> ScriptedPolicy:
  return ScriptedPolicy(env)
