"""gymnax classic control and MinAtar as Gato tasks, plus a batched, jitted rollout helper.

Gato's view of these tasks:
  * classic control: observation {"state": ContinuousSpec((n,))} (mu-law binned floats);
  * MinAtar: observation {"grid": DiscreteSpec((10, 10, C), num_values=2)}. The channels are 0/1
    object maps, i.e. discrete values, not an image, so each cell becomes one value token;
  * actions: DiscreteSpec(num_values=n), or ContinuousSpec((d,), mu_law=False) in [-1, 1] that
    `unit_to_env_action` rescales to the environment's bounds (Pendulum's torque is in [-2, 2]).

The per-step adapter (`GymnaxEnvironment`) talks numpy, as every domain does; `rollout` runs many
whole episodes under `jit` + `vmap` for fast expert and random-policy evaluation.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.envs import base
from gato_jax.tokenizer import specs as token_specs

DOMAIN = "gymnax"
# gymnax ids this project supports; MinAtar's observations are grids, classic control's vectors.
CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
                   "Pendulum-v1")
MINATAR = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
TASKS = CLASSIC_CONTROL + MINATAR

# A policy for `rollout`: (single gymnax observation, PRNG key) -> action in Gato's action space
# (an int for discrete actions, floats in [-1, 1] for continuous ones). Pure jax, vmappable.
PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


def canonical_id(env_id: str) -> str:
  """'gymnax/CartPole-v1' or 'CartPole-v1' -> 'CartPole-v1'; unknown ids raise ValueError."""
  if not isinstance(env_id, str):
    raise TypeError(f"env id must be a string, got {type(env_id).__name__}")
  name = env_id[len(DOMAIN) + 1:] if env_id.startswith(DOMAIN + "/") else env_id
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


def gato_specs(env_id: str) -> tuple[dict, Any]:
  """(observation_spec, action_spec) of a task in the tokenizer's terms."""
  env, params = make(env_id)
  obs_shape = tuple(env.observation_space(params).shape)
  if is_minatar(env_id):
    observation_spec = {"grid": token_specs.DiscreteSpec(obs_shape, num_values=2)}
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
    return {"grid": np.rint(obs).astype(np.int32)}
  return {"state": obs.astype(np.float32)}


class GymnaxEnvironment(base.Environment):
  """One gymnax task behind the numpy `base.Environment` interface.

  gymnax resets automatically inside `step`; this adapter instead reports the terminal
  observation (gymnax's `info["final_observation"]`) and refuses further steps until `reset`.
  """

  def __init__(self, env_id: str, max_episode_steps: int | None = None):
    self.env_id = canonical_id(env_id)
    self.name = f"{DOMAIN}/{self.env_id}"
    self._env, self._params = make(self.env_id, max_episode_steps)
    self.max_episode_steps = int(self._params.max_steps_in_episode)
    self.observation_spec, self.action_spec = gato_specs(self.env_id)
    self._action_space = self._env.action_space(self._params)
    # Already jitted by gymnax (static `self`); the shared instance keeps them compiled once.
    self._reset = self._env.reset
    self._step = self._env.step
    self._state = None
    self._key = None

  def reset(self, seed: int) -> dict:
    key_reset, self._key = jax.random.split(jax.random.key(int(seed)))
    obs, self._state = self._reset(key_reset, self._params)
    return to_gato_observation(self.env_id, obs)

  def step(self, action) -> base.StepResult:
    if self._state is None:
      raise RuntimeError(
          f"{self.name}: call reset() before step() (and again after an episode ends)")
    action = self._check_action(action)
    self._key, key_step = jax.random.split(self._key)
    env_action = unit_to_env_action(self._action_space, action)
    _, state, reward, terminated, truncated, info = self._step(
        key_step, self._state, env_action, self._params)
    terminated, truncated = bool(terminated), bool(truncated)
    # After the last step gymnax's state is already the next episode's: drop it.
    self._state = None if (terminated or truncated) else state
    return base.StepResult(
        observation=to_gato_observation(self.env_id, info["final_observation"]),
        reward=float(reward), terminated=terminated, truncated=truncated and not terminated)

  def _check_action(self, action) -> np.ndarray:
    """Validates an action against `action_spec` with a message that names the task."""
    action = np.asarray(action)
    spec = self.action_spec
    if action.shape != spec.shape:
      raise ValueError(
          f"{self.name}: action must have shape {list(spec.shape)}, got {list(action.shape)}")
    if isinstance(spec, token_specs.DiscreteSpec):
      if not np.issubdtype(action.dtype, np.integer):
        raise TypeError(
            f"{self.name}: discrete action must be an integer, got dtype {action.dtype}")
      if not 0 <= int(action) < spec.num_values:
        raise ValueError(f"{self.name}: action {int(action)} outside [0, {spec.num_values})")
      return action.astype(np.int32)
    if not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0):
      raise ValueError(
          f"{self.name}: continuous action must be finite and in [-1, 1], got {action}")
    return action.astype(np.float32)


def random_policy(env_id: str) -> PolicyFn:
  """The uniformly random policy (the 0% anchor of normalised scores), as a `PolicyFn`."""
  _, action_spec = gato_specs(env_id)
  if isinstance(action_spec, token_specs.DiscreteSpec):
    return lambda obs, key: jax.random.randint(key, (), 0, action_spec.num_values)
  return lambda obs, key: jax.random.uniform(key, action_spec.shape, minval=-1.0, maxval=1.0)


def rollout(env_id: str, policy: PolicyFn, num_episodes: int, seed: int = 0,
            max_episode_steps: int | None = None) -> dict[str, np.ndarray]:
  """Plays `num_episodes` whole episodes at once under jit + vmap.

  Args:
    env_id: a supported task id (with or without the "gymnax/" prefix).
    policy: (gymnax observation, key) -> Gato action; see `PolicyFn`.
    num_episodes: episodes played in parallel, each from its own reset key.
    seed: seeds resets, environment noise and the policy's sampling.
    max_episode_steps: the time limit; gymnax's default for the task when None.

  Returns:
    {"returns": float32 [num_episodes], "lengths": int32 [num_episodes]} as numpy arrays.
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be positive, got {num_episodes}")
  env, params = make(env_id, max_episode_steps)
  space = env.action_space(params)
  horizon = int(params.max_steps_in_episode)

  def one_episode(key):
    key_reset, key_run = jax.random.split(key)
    obs, state = env.reset(key_reset, params)

    def body(carry, key_t):
      obs, state, alive, ret, length = carry
      key_act, key_step = jax.random.split(key_t)
      action = unit_to_env_action(space, policy(obs, key_act))
      obs, state, reward, terminated, truncated, _ = env.step(key_step, state, action, params)
      # gymnax resets by itself; `alive` masks everything after the first episode ends.
      ret = ret + jnp.where(alive, reward, 0.0)
      length = length + alive.astype(jnp.int32)
      alive = alive & ~(terminated | truncated)
      return (obs, state, alive, ret, length), None

    init = (obs, state, jnp.array(True), jnp.float32(0.0), jnp.int32(0))
    (_, _, _, ret, length), _ = jax.lax.scan(body, init, jax.random.split(key_run, horizon))
    return ret, length

  keys = jax.random.split(jax.random.key(seed), num_episodes)
  returns, lengths = jax.jit(jax.vmap(one_episode))(keys)
  return {"returns": np.asarray(returns, np.float32), "lengths": np.asarray(lengths, np.int32)}
