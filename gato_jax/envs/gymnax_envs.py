"""gymnax classic control and MinAtar as Gato tasks, plus a batched, jitted rollout helper.

Gato's view of these tasks:
  * classic control: observation {"state": ContinuousSpec((n,))} (mu-law binned floats);
  * MinAtar: observation {"grid": DiscreteSpec((10, 10), num_values=2**C)}. The C channels are
    0/1 object maps, i.e. discrete values, not an image; each cell becomes one value token, its
    channels' bits packed into one integer (bit c = channel c), so a timestep is 100 tokens
    rather than 100 x C (400 to 700, more than the generalist's 512-token context);
    `to_gymnax_observation` unpacks them for the PPO experts, which see gymnax's grid;
  * actions: DiscreteSpec(num_values=n), or ContinuousSpec((d,), mu_law=False) in [-1, 1] that
    `unit_to_env_action` rescales to the environment's bounds (Pendulum's torque is in [-2, 2]).

The per-step adapter (`GymnaxEnvironment`) talks numpy, as every domain does; `GymnaxBatch` is
the episode runner's on-device backend (`runner.run_episodes`; `GymnaxEnvironment.batch` gives
it to data generation and the task statistics, `episodes.play`): every row of a batch resets and
steps in one `jit(vmap(...))` call, replaying the adapter's key schedule exactly, so an episode's
outcome is the host adapter's for the same seed (bit for bit where the dynamics are arithmetic
and comparisons, up to the last float32 bit of vectorised sin/cos elsewhere). `rollout` plays
whole episodes of a pure-JAX policy (the PPO experts') in one `jit` + `vmap` + `scan`.
"""

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.envs import base, runner
from gato_jax.tokenizer import specs as token_specs

DOMAIN = "gymnax"
# gymnax ids this project supports; MinAtar's observations are grids, classic control's vectors.
CLASSIC_CONTROL = (
  "CartPole-v1",
  "Acrobot-v1",
  "MountainCar-v0",
  "MountainCarContinuous-v0",
  "Pendulum-v1",
)
MINATAR = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
TASKS = CLASSIC_CONTROL + MINATAR

# A policy for `rollout`: (single gymnax observation, PRNG key) -> action in Gato's action space
# (an int for discrete actions, floats in [-1, 1] for continuous ones). Pure jax, vmappable.
PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


def canonical_id(env_id: str) -> str:
  """'gymnax/CartPole-v1' or 'CartPole-v1' -> 'CartPole-v1'; unknown ids raise ValueError."""
  if not isinstance(env_id, str):
    raise TypeError(f"env id must be a string, got {type(env_id).__name__}")
  name = env_id[len(DOMAIN) + 1 :] if env_id.startswith(DOMAIN + "/") else env_id
  if name not in TASKS:
    raise ValueError(f"unknown gymnax task {env_id!r}; supported: {', '.join(TASKS)}")
  return name


def is_minatar(env_id: str) -> bool:
  return canonical_id(env_id) in MINATAR


def make(env_id: str, max_episode_steps: int | None = None):
  """Builds (gymnax env, env params) for a supported task, optionally with another time limit."""
  return _make(canonical_id(env_id), max_episode_steps)


# gymnax environments are stateless and jit their methods with `self` static (hashed by
# identity): one shared instance per task lets every adapter and rollout reuse compilations.
@functools.lru_cache(maxsize=None)
def _make(env_id: str, max_episode_steps: int | None):
  import gymnax  # Imported here so that other domains do not pay for it.

  env, params = gymnax.make(env_id)
  if max_episode_steps is not None:
    if max_episode_steps < 1:
      raise ValueError(f"max_episode_steps must be positive, got {max_episode_steps}")
    params = params.replace(max_steps_in_episode=int(max_episode_steps))
  return env, params


@functools.lru_cache(maxsize=None)
def observation_shape(env_id: str) -> tuple[int, ...]:
  """gymnax's observation shape of a task (MinAtar: [10, 10, C]); cached, as the per-step
  observation conversions ask for it."""
  env, params = make(env_id)
  return tuple(env.observation_space(params).shape)


def gato_specs(env_id: str) -> tuple[dict, Any]:
  """(observation_spec, action_spec) of a task in the tokenizer's terms."""
  env, params = make(env_id)
  obs_shape = observation_shape(env_id)
  if is_minatar(env_id):
    *cells, channels = obs_shape
    observation_spec = {"grid": token_specs.DiscreteSpec(tuple(cells), num_values=2**channels)}
  else:
    observation_spec = {"state": token_specs.ContinuousSpec(obs_shape, mu_law=True)}
  space = env.action_space(params)
  if hasattr(space, "n"):
    action_spec = token_specs.DiscreteSpec((), num_values=int(space.n))
  else:
    action_spec = token_specs.ContinuousSpec(tuple(space.shape), mu_law=False)
  return observation_spec, action_spec


def unit_to_env_action(space, action):
  """Gato action -> gymnax action: discrete ids pass through, [-1, 1] maps onto [low, high]."""
  if hasattr(space, "n"):
    return jnp.asarray(action, jnp.int32)
  action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
  low, high = jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32)
  return low + (action + 1.0) * 0.5 * (high - low)


def to_gato_observation(env_id: str, obs) -> dict:
  """A gymnax observation (float32, MinAtar's 0./1.) -> the adapter's numpy observation dict."""
  obs = np.asarray(obs)
  if is_minatar(env_id):
    bits = np.rint(obs).astype(np.int32)
    return {
      "grid": np.sum(bits << np.arange(bits.shape[-1], dtype=np.int32), axis=-1, dtype=np.int32)
    }
  return {"state": obs.astype(np.float32)}


def to_gymnax_observation(env_id: str, observation) -> np.ndarray:
  """The adapter's observation (dict or its one array, batched or not) -> gymnax's float32 array:
  the inverse of `to_gato_observation` (MinAtar's packed cells back to 0/1 channels)."""
  if isinstance(observation, dict):
    if len(observation) != 1:
      raise ValueError(f"expected a one-leaf observation dict, got keys {sorted(observation)}")
    (observation,) = observation.values()
  observation = np.asarray(observation)
  if not is_minatar(env_id):
    return observation.astype(np.float32)
  *cells, channels = observation_shape(env_id)
  if observation.shape[-2:] != tuple(cells):
    raise ValueError(
      f"{env_id}: expected packed [..., {cells[0]}, {cells[1]}] cells, got {observation.shape}"
    )
  bits = (observation.astype(np.int32)[..., None] >> np.arange(channels, dtype=np.int32)) & 1
  return bits.astype(np.float32)


class GymnaxEnvironment(base.Environment):
  """One gymnax task behind the numpy `base.Environment` interface.

  gymnax resets automatically inside `step`; this adapter instead reports the terminal
  observation (gymnax's `info["final_observation"]`) and refuses further steps until `reset`.
  """

  def __init__(self, env_id: str, max_episode_steps: int | None = None):
    self.env_id = canonical_id(env_id)
    self.name = f"{DOMAIN}/{self.env_id}"
    self._time_limit = max_episode_steps
    self._env, self._params = make(self.env_id, max_episode_steps)
    self.max_episode_steps = int(self._params.max_steps_in_episode)
    self.observation_spec, self.action_spec = gato_specs(self.env_id)
    self._action_space = self._env.action_space(self._params)
    # Already jitted by gymnax (static `self`); the shared instance keeps them compiled once.
    self._reset = self._env.reset
    self._step = self._env.step
    self._state = None
    self._key = None

  def batch(self, num_envs: int) -> "GymnaxBatch":
    """`num_envs` rows of this task (and time limit) stepped on device: `episodes.play` plays
    the task's episodes in it, each as this adapter would from the same seed."""
    return GymnaxBatch(self.env_id, num_envs, self._time_limit)

  def reset(self, seed: int) -> dict:
    key_reset, self._key = jax.random.split(jax.random.key(int(seed)))
    obs, self._state = self._reset(key_reset, self._params)
    return to_gato_observation(self.env_id, obs)

  def step(self, action) -> base.StepResult:
    if self._state is None:
      raise RuntimeError(
        f"{self.name}: call reset() before step() (and again after an episode ends)"
      )
    action = check_actions(self.name, self.action_spec, action)
    self._key, key_step = jax.random.split(self._key)
    env_action = unit_to_env_action(self._action_space, action)
    _, state, reward, terminated, truncated, info = self._step(
      key_step, self._state, env_action, self._params
    )
    terminated, truncated = bool(terminated), bool(truncated)
    # After the last step gymnax's state is already the next episode's: drop it.
    self._state = None if (terminated or truncated) else state
    return base.StepResult(
      observation=to_gato_observation(self.env_id, info["final_observation"]),
      reward=float(reward),
      terminated=terminated,
      truncated=truncated and not terminated,
    )


def check_actions(name: str, spec: Any, actions, rows: int | None = None) -> np.ndarray:
  """Validates one action (`rows` None) or a batch stacked over `rows` against `spec`.

  Returns:
    The actions as int32 (discrete) or float32 (continuous); errors name the task.
  """
  actions = np.asarray(actions)
  expected = spec.shape if rows is None else (rows, *spec.shape)
  if actions.shape != expected:
    raise ValueError(
      f"{name}: action must have shape {list(expected)}"
      f"{' (rows first)' if rows is not None else ''}, got {list(actions.shape)}"
    )
  if isinstance(spec, token_specs.DiscreteSpec):
    if not np.issubdtype(actions.dtype, np.integer):
      raise TypeError(f"{name}: discrete actions must be integers, got dtype {actions.dtype}")
    if np.any((actions < 0) | (actions >= spec.num_values)):
      raise ValueError(f"{name}: action {actions.tolist()} outside [0, {spec.num_values})")
    return actions.astype(np.int32)
  if not np.all(np.isfinite(actions)) or np.any(np.abs(actions) > 1.0):
    raise ValueError(f"{name}: continuous actions must be finite and in [-1, 1], got {actions}")
  return actions.astype(np.float32)


# One set of jitted functions per task and time limit: every batch of the task (and of any size,
# jit caching per shape) reuses their compilations.
@functools.lru_cache(maxsize=None)
def _batch_functions(env_id: str, max_episode_steps: int | None):
  """Jitted (reset rows, step rows, initial state) over a batch, replaying the adapter's keys."""
  env, params = make(env_id, max_episode_steps)
  space = env.action_space(params)

  def reset_row(seed, key, state, fresh):
    key_reset, new_key = jax.random.split(jax.random.key(seed))
    obs, new_state = env.reset(key_reset, params)
    pick = lambda new, old: jnp.where(fresh, new, old)
    return pick(obs, jnp.zeros_like(obs)), pick(new_key, key), jax.tree.map(pick, new_state, state)

  def step_row(key, state, action):
    key, key_step = jax.random.split(key)
    _, state, reward, terminated, truncated, info = env.step(
      key_step, state, unit_to_env_action(space, action), params
    )
    return key, state, info["final_observation"], reward, terminated, truncated

  reset_rows = jax.jit(jax.vmap(reset_row))

  def initial(num_envs: int):
    """Every row reset from seed 0 (what rows never started hold), through `reset_rows`: a
    jitted function of its own would compile the PRNG and the reset a second time (seconds)."""
    seeds, fresh = np.zeros(num_envs, np.int32), np.ones(num_envs, bool)
    keys, states = jax.eval_shape(
      jax.vmap(lambda s: (jax.random.key(s), env.reset(jax.random.key(s), params)[1])), seeds
    )
    key_data = jax.eval_shape(jax.random.key_data, keys)
    blank_keys = jax.random.wrap_key_data(np.zeros(key_data.shape, key_data.dtype))
    blank_states = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), states)
    _, keys, states = reset_rows(seeds, blank_keys, blank_states, fresh)
    return keys, states

  return reset_rows, jax.jit(jax.vmap(step_row)), initial


class GymnaxBatch:
  """`num_envs` environments of one gymnax task, reset and stepped as one jitted call.

  Args:
    env_id: "gymnax/<id>" or "<id>".
    num_envs: rows of the batch.
    max_episode_steps: the time limit; the task's own when None (as `GymnaxEnvironment`).
  """

  def __init__(self, env_id: str, num_envs: int, max_episode_steps: int | None = None):
    if num_envs < 1:
      raise ValueError(f"num_envs must be positive, got {num_envs}")
    # The numpy adapter holds the task's name, specs and limit; agents read it, nobody steps it.
    self.env = GymnaxEnvironment(env_id, max_episode_steps)
    self.env_id, self.name, self.action_spec = self.env.env_id, self.env.name, self.env.action_spec
    self.num_envs = num_envs
    self.max_episode_steps = self.env.max_episode_steps
    self._reset, self._step, initial = _batch_functions(self.env_id, max_episode_steps)
    self._keys, self._states = initial(num_envs)
    self.observations = None  # Stacked over rows once `reset` has run.

  def row_environments(self) -> list[GymnaxEnvironment]:
    return [self.env] * self.num_envs

  def reset(self, seeds: Sequence[int | None]) -> None:
    """Starts an episode from `seeds[row]` in each row whose seed is not None.

    `observations` then holds the new episodes' first observations in those rows, stacked over
    rows ({"state": [B, n]} or {"grid": [B, 10, 10]}); other rows keep theirs.
    """
    if len(seeds) != self.num_envs:
      raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} rows")
    fresh = np.array([s is not None for s in seeds])
    values = np.array([0 if s is None else int(s) for s in seeds], np.int64)
    if np.any((values < 0) | (values > np.iinfo(np.int32).max)):
      raise ValueError(f"reset seeds must be in [0, 2**31), got {values[fresh].tolist()}")
    obs, self._keys, self._states = self._reset(
      jnp.asarray(values, jnp.int32), self._keys, self._states, jnp.asarray(fresh)
    )
    # The adapter's conversion is elementwise: it serves a stacked batch as well.
    new = to_gato_observation(self.env_id, jax.device_get(obs))
    if self.observations is None:
      self.observations = new
      return
    self.observations = {
      k: np.where(fresh.reshape((-1,) + (1,) * (v.ndim - 1)), new[k], v)
      for k, v in self.observations.items()
    }

  def step_limit(self, row: int) -> int:
    del row  # One limit for every row.
    return self.max_episode_steps

  def observation(self, row: int) -> dict:
    return {k: v[row] for k, v in self.observations.items()}

  def act(self, agent, active: np.ndarray) -> list:
    """The agent's actions for every row, from the stacked observations (`act_batch`)."""
    return agent.act_batch(self.observations, active)

  def step(self, actions: Sequence[Any], live: np.ndarray):
    """Steps every row (idle ones with a zero action, their results to be ignored).

    Args:
      actions: one Gato action per row (an int for discrete tasks, floats in [-1, 1] for
        continuous ones); rows not `live` may hold anything.
      live: the rows whose actions count.

    Returns:
      (float32 rewards [B], terminated [B], truncated [B], infos: None per row); `observations`
      then holds each row's next observation (a row that just ended: its episode's last one).
    """
    stacked = check_actions(
      self.name, self.action_spec, _stack_actions(actions, live, self.action_spec), self.num_envs
    )
    self._keys, self._states, obs, reward, terminated, truncated = self._step(
      self._keys, self._states, stacked
    )
    obs, reward, terminated, truncated = jax.device_get((obs, reward, terminated, truncated))
    terminated = np.asarray(terminated, bool)
    self.observations = to_gato_observation(self.env_id, obs)
    return (
      np.asarray(reward, np.float32),
      terminated,
      np.asarray(truncated, bool) & ~terminated,
      [None] * self.num_envs,
    )

  def close(self) -> None:
    """Nothing to release: the jitted functions are shared by every batch of the task."""


def _stack_actions(actions: Sequence[Any], live: np.ndarray, action_spec) -> np.ndarray:
  """Rows' actions as one array; rows not `live` (idle, gave up) get a zero action."""
  dtype = np.int32 if isinstance(action_spec, token_specs.DiscreteSpec) else np.float32
  out = np.zeros((len(actions), *action_spec.shape), dtype)
  for row, action in enumerate(actions):
    if live[row]:
      out[row] = np.asarray(action)
  return out


class PolicyFnAgent(runner.Agent):
  """A pure-JAX `PolicyFn` acting for every row of a `GymnaxBatch` in one jitted call.

  The t-th action of an episode samples with fold_in(key(episode seed), t): an episode's
  actions depend on its seed alone, not on the batch it is played in.
  """

  def __init__(self, policy: PolicyFn, name: str = "policy_fn"):
    self.name = name

    def act(obs, seed, step):
      return policy(obs, jax.random.fold_in(jax.random.key(seed), step))

    self._act = jax.jit(jax.vmap(act))
    self._seeds, self._steps = np.zeros(0, np.int32), np.zeros(0, np.int32)
    self._env_id = None

  def setup(self, envs: Sequence[base.Environment]) -> None:
    self._env_id = envs[0].env_id if envs else None
    self._seeds = np.zeros(len(envs), np.int32)
    self._steps = np.zeros(len(envs), np.int32)

  def begin_episode(self, row: int, seed: int) -> None:
    self._seeds[row], self._steps[row] = seed, 0

  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    raise TypeError("PolicyFnAgent acts on stacked observations: play it in a GymnaxBatch")

  def act_batch(self, observations: dict, active: np.ndarray) -> list[Any]:
    stacked = to_gymnax_observation(self._env_id, observations)
    actions = np.asarray(self._act(jnp.asarray(stacked), self._seeds, self._steps))
    active = np.asarray(active, bool)
    self._steps += active
    return [action if on else None for action, on in zip(actions, active)]


def rollout(
  env_id: str,
  policy: PolicyFn | PolicyFnAgent,
  num_episodes: int,
  seed: int = 0,
  max_episode_steps: int | None = None,
  num_envs: int = 64,
) -> dict[str, np.ndarray]:
  """Plays `num_episodes` episodes of a pure-JAX policy through the episode runner.

  Args:
    env_id: a supported task id (with or without the "gymnax/" prefix).
    policy: (gymnax observation, key) -> Gato action; see `PolicyFn`. Or its `PolicyFnAgent`:
      one agent compiles once for every rollout (and `episodes.play`) it plays.
    num_episodes: episodes to play, each from its own reset seed (drawn from `seed`).
    seed: seeds resets, environment noise and the policy's sampling.
    max_episode_steps: the time limit; gymnax's default for the task when None.
    num_envs: environments stepped together.

  Returns:
    {"returns": float32 [num_episodes], "lengths": int32 [num_episodes]} as numpy arrays.
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be positive, got {num_episodes}")
  seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, num_episodes)
  batch = GymnaxBatch(env_id, min(num_envs, num_episodes), max_episode_steps)
  agent = policy if isinstance(policy, PolicyFnAgent) else PolicyFnAgent(policy)
  outcomes = runner.run_episodes(batch, agent, [int(s) for s in seeds])
  return {
    "returns": np.array([o.episode_return for o in outcomes], np.float32),
    "lengths": np.array([o.length for o in outcomes], np.int32),
  }
