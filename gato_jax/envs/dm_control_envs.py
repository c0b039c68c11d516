"""DM Control suite tasks with state observations (docs/design.md, Data mixture).

Every observation leaf (joint positions, velocities, touch sensors, ...) is a ContinuousSpec with
mu-law, as Gato tokenizes proprioception. Actions are ContinuousSpec(mu_law=False) in [-1, 1]:
the adapter maps them affinely onto each task's action bounds, so Gato's action tokens always
cover the full range whatever the actuator limits.

Episodes last the suite's time limit (1,000 control steps for these tasks) and end truncated,
never terminated: DM Control tasks have no terminal states.

A Gato timestep is one decision of the task's expert: `ACTION_REPEAT` holds each action for that
many control steps (their rewards add up), the interval its SAC expert was trained to act at
(PlaNet's values for cartpole, point_mass, reacher, walker-stand). Recording every control step
instead stored runs of 2-8 equal actions, and a model trained on them learns to copy the previous
action (the generalist's DM Control rows: 87% of cartpole-balance targets equal the previous
one, and the model predicted the previous one at every step), which then never changes in
closed loop. Returns stay sums over the suite's 1,000 control steps, as the references count them.

The same tasks seen from a camera are the domain "dm_control_pixels" (the paper's "DM Control
Suite Pixels"): `DMControlPixelsEnv` observes {"image": uint8 [64, 64, 3]} rendered headless by
MuJoCo (EGL, in a child process), and its expert is the state task's SAC expert acting on the
state the frame shows, so pixel demonstrations are the state expert's own rollouts.
"""

import multiprocessing
import os
from typing import NoReturn

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


# Control steps each action is held for: the interval the task's expert acts at. The SAC recipes
# (gato_jax/configs/experts/dm_control.py) take their action repeat from here.
ACTION_REPEAT = {
  "cartpole-balance": 8,
  "cartpole-swingup": 8,
  "point_mass-easy": 4,
  "reacher-easy": 4,
  "walker-stand": 2,
  "walker-walk": 1,
  "cheetah-run": 1,
  "finger-spin": 1,
}


def env_version(action_repeat: int) -> str | None:
  """`Environment.version` of a task acting every `action_repeat` control steps (None for every
  step, the interval of the episodes stored before the repeat existed)."""
  return None if action_repeat == 1 else f"action_repeat={action_repeat}"


class DMControlEnv(base.Environment):
  """One DM Control suite task, e.g. "dm_control/cartpole-swingup", with state observations.

  Args:
    task: a `TASKS` entry.
    renderer: MUJOCO_GL's value when it is unset.
    action_repeat: control steps each action is held for; None: the task's `ACTION_REPEAT`
      (SAC training passes 1 and repeats its actions itself).
  """

  def __init__(self, task: str, renderer: str = "disable", action_repeat: int | None = None):
    if task not in TASKS:
      raise ValueError(f"unknown DM Control task {task!r}; known tasks: {list(TASKS)}")
    self.action_repeat = ACTION_REPEAT[task] if action_repeat is None else int(action_repeat)
    if self.action_repeat < 1:
      raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
    self.version = env_version(self.action_repeat)
    # State observations need no renderer; without this dm_control probes for a display (GLFW).
    os.environ.setdefault("MUJOCO_GL", renderer)
    from dm_control import suite

    self.name = f"dm_control/{task}"
    suite_domain, suite_task = task.split("-", 1)
    self._env = suite.load(suite_domain, suite_task, task_kwargs={"random": 0})
    self.state_spec = {
      key: tokenizer.ContinuousSpec(tuple(spec.shape), mu_law=True)
      for key, spec in self._env.observation_spec().items()
    }
    self.observation_spec = self.state_spec
    bounds = self._env.action_spec()
    self._low = np.asarray(bounds.minimum, np.float64) * np.ones(bounds.shape)
    self._high = np.asarray(bounds.maximum, np.float64) * np.ones(bounds.shape)
    if not np.all(np.isfinite(self._low) & np.isfinite(self._high) & (self._high > self._low)):
      raise ValueError(f"{self.name}: actions need finite bounds to rescale, got {bounds}")
    self.action_spec = tokenizer.ContinuousSpec(tuple(bounds.shape), mu_law=False)
    # control.Environment keeps its limit in a private field; every suite task sets one.
    control_steps = int(round(getattr(self._env, "_step_limit", 1000)))
    self.max_episode_steps = -(-control_steps // self.action_repeat)

  def _observation(self, timestep) -> dict:
    return {
      key: np.asarray(timestep.observation[key], np.float32).reshape(spec.shape)
      for key, spec in self.state_spec.items()
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
    env_action, reward = self.to_env_action(action), 0.0
    for _ in range(self.action_repeat):
      timestep = self._env.step(env_action)
      reward += float(timestep.reward or 0.0)
      if timestep.last():
        break
    last = timestep.last()
    terminated = bool(last and timestep.discount == 0.0)
    return base.StepResult(
      observation=self._observation(timestep),
      reward=reward,
      terminated=terminated,
      truncated=bool(last and not terminated),
    )

  def close(self) -> None:
    self._env.close()


def make_env(task: str) -> DMControlEnv:
  return DMControlEnv(task)


PIXELS_DOMAIN = "dm_control_pixels"
# 64x64 frames are 16 patches a step: a 1,000-step episode is about 23k tokens with its actions
# when every control step is a timestep (2.9k at cartpole's action repeat of 8).
PIXELS_SIZE = 64
_RENDERERS = ("egl", "osmesa", "glfw")


class DMControlPixelsEnv(base.Environment):
  """A DM Control suite task seen by camera 0: "dm_control_pixels/walker-walk".

  Observations are {"image": uint8 [size, size, 3]}; actions, rewards and time limits are the
  state task's. `state_observation` holds the state of the frame last returned, for the state
  expert that acts on it (`dm_control_experts.make_expert`).

  The simulator and its renderer run in a child process: Mesa's EGL and TensorFlow (which the
  data pipeline loads) crash when both live in one process (each brings its own LLVM), and
  MUJOCO_GL is read once, when dm_control is imported. The child uses the MUJOCO_GL of the
  environment if it names a renderer (egl, osmesa, glfw), else egl.
  """

  def __init__(self, task: str, size: int = PIXELS_SIZE):
    if task not in TASKS:
      raise ValueError(f"unknown DM Control task {task!r}; known tasks: {list(TASKS)}")
    self.name = f"{PIXELS_DOMAIN}/{task}"
    self.state_task = f"dm_control/{task}"  # Whose returns these are (generation.ensure_stats).
    self.size = int(size)
    # The state task's interval: one frame is rendered per decision, not per control step.
    self.action_repeat = ACTION_REPEAT[task]
    self.version = env_version(self.action_repeat)
    context = multiprocessing.get_context("spawn")
    self._conn, child = context.Pipe()
    self._process = context.Process(
      target=_render_worker, args=(child, task, self.size, self.action_repeat), daemon=True
    )
    self._process.start()
    child.close()
    self.state_spec, self.action_spec, self.max_episode_steps = self._call("specs")
    self.observation_spec = {"image": tokenizer.ImageSpec()}
    self.state_observation: dict | None = None

  def _call(self, *request):
    self._send(*request)
    return self._receive()

  def _send(self, *request) -> None:
    try:
      self._conn.send(request)
    except (BrokenPipeError, ConnectionResetError) as e:
      self._died(e)

  def _receive(self):
    try:
      ok, value = self._conn.recv()
    except (EOFError, BrokenPipeError, ConnectionResetError) as e:
      self._died(e)
    if not ok:
      raise RuntimeError(f"{self.name}: {value}")
    return value

  def _died(self, error: Exception) -> NoReturn:
    code = self._process.exitcode
    raise RuntimeError(f"{self.name}: the renderer process died (exit code {code})") from error

  def reset(self, seed: int) -> dict:
    image, self.state_observation = self._call("reset", int(seed))
    return {"image": image}

  def step(self, action) -> base.StepResult:
    self.step_async(action)
    return self.step_wait()

  def step_async(self, action) -> None:
    """Starts a step in the child and returns at once: `runner.HostBatch` starts every row's
    step before waiting for any, so the children render side by side."""
    self._send("step", np.asarray(action))

  def step_wait(self) -> base.StepResult:
    """The result of the step `step_async` started."""
    image, self.state_observation, reward, terminated, truncated = self._receive()
    return base.StepResult({"image": image}, reward, terminated, truncated)

  def close(self) -> None:
    if self._process.is_alive():
      try:
        self._conn.send(("close",))
      except (BrokenPipeError, OSError):
        pass  # Already gone: nothing left to stop.
      self._process.join(timeout=10)
    self._conn.close()


def _render_worker(conn, task: str, size: int, action_repeat: int) -> None:
  """The child of `DMControlPixelsEnv`: serves specs, reset and step with rendered frames."""
  if os.environ.get("MUJOCO_GL") not in _RENDERERS:
    os.environ["MUJOCO_GL"] = "egl"
  env = DMControlEnv(task, renderer=os.environ["MUJOCO_GL"], action_repeat=action_repeat)
  frame = lambda: np.asarray(
    env._env.physics.render(height=size, width=size, camera_id=0),
    np.uint8,  # pylint: disable=protected-access
  )
  while True:
    try:
      request = conn.recv()
    except EOFError:
      request = ("close",)  # The parent exited without closing the environment.
    try:
      if request[0] == "close":
        env.close()
        return
      if request[0] == "specs":
        value = (env.state_spec, env.action_spec, env.max_episode_steps)
      elif request[0] == "reset":
        state = env.reset(request[1])
        value = (frame(), state)
      else:
        result = env.step(request[1])
        value = (frame(), result.observation, result.reward, result.terminated, result.truncated)
      conn.send((True, value))
    except Exception as e:  # pylint: disable=broad-except
      # The parent raises it with the task's name; the child keeps serving.
      conn.send((False, f"{type(e).__name__}: {e}"))


def make_pixels_env(task: str) -> DMControlPixelsEnv:
  return DMControlPixelsEnv(task)
