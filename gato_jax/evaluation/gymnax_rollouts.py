"""Evaluation rollouts of gymnax tasks with every environment of the batch stepped in one jit call.

gymnax environments are pure JAX, so a batch of them needs no host loop: `GymnaxBatch` resets
and steps all rows with one `jit(vmap(...))` call each, and returns the batch's observations
stacked on a leading row axis. The agent then acts on the whole batch at once
(`agents.Agent.act_batch`: the model tokenizes the stacked observations in one vectorised call
and decodes every row's action in one batched call per token).

Each row replays `gymnax_envs.GymnaxEnvironment`'s key schedule exactly (reset from
`split(key(seed))`, one split per step, the terminal observation from
`info["final_observation"]`), so an episode's outcome is the host loop's (`rollouts.run_episodes`)
for the same seed and the same deterministic agent: bit for bit where the dynamics are
arithmetic and comparisons (CartPole, MinAtar), and up to the last float32 bit of vectorised
sin/cos elsewhere (Pendulum). Tests hold both paths to that.
"""

import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.data import episodes as episodes_lib
from gato_jax.envs import gymnax_envs
from gato_jax.evaluation import agents, rollouts
from gato_jax.tokenizer import specs as token_specs


# One set of jitted functions per task and time limit: every batch of the task (and of any size,
# jit caching per shape) reuses their compilations.
@functools.lru_cache(maxsize=None)
def _batch_functions(env_id: str, max_episode_steps: int | None):
  """Jitted (reset rows, step rows, initial state) over a batch, replaying the adapter's keys."""
  env, params = gymnax_envs.make(env_id, max_episode_steps)
  space = env.action_space(params)

  def reset_row(seed, key, state, fresh):
    key_reset, new_key = jax.random.split(jax.random.key(seed))
    obs, new_state = env.reset(key_reset, params)
    pick = lambda new, old: jnp.where(fresh, new, old)
    return pick(obs, jnp.zeros_like(obs)), pick(new_key, key), jax.tree.map(pick, new_state, state)

  def step_row(key, state, action):
    key, key_step = jax.random.split(key)
    _, state, reward, terminated, truncated, info = env.step(
        key_step, state, gymnax_envs.unit_to_env_action(space, action), params)
    return key, state, info["final_observation"], reward, terminated, truncated

  def initial(seeds):
    key_reset, keys = jax.vmap(lambda s: tuple(jax.random.split(jax.random.key(s))))(seeds)
    _, states = jax.vmap(env.reset, in_axes=(0, None))(key_reset, params)
    return keys, states

  return jax.jit(jax.vmap(reset_row)), jax.jit(jax.vmap(step_row)), jax.jit(initial)


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
    self.env_id = gymnax_envs.canonical_id(env_id)
    self.name = f"{gymnax_envs.DOMAIN}/{self.env_id}"
    self.num_envs = num_envs
    self._max_episode_steps = max_episode_steps
    _, params = gymnax_envs.make(self.env_id, max_episode_steps)
    self.max_episode_steps = int(params.max_steps_in_episode)
    self.observation_spec, self.action_spec = gymnax_envs.gato_specs(self.env_id)
    self._reset, self._step, initial = _batch_functions(self.env_id, max_episode_steps)
    self._keys, self._states = initial(jnp.zeros(num_envs, jnp.int32))

  def row_environments(self) -> list[gymnax_envs.GymnaxEnvironment]:
    """One numpy adapter per row, for what agents read in `setup` (name, specs); never stepped."""
    return [gymnax_envs.GymnaxEnvironment(self.env_id, self._max_episode_steps)
            for _ in range(self.num_envs)]

  def reset(self, seeds: Sequence[int | None]) -> dict:
    """Starts an episode from `seeds[row]` in each row whose seed is not None.

    Returns:
      The new episodes' first observations stacked over rows ({"state": [B, n]} or
      {"grid": [B, 10, 10, C]}); rows left as they were hold zeros.
    """
    if len(seeds) != self.num_envs:
      raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} rows")
    fresh = np.array([s is not None for s in seeds])
    values = np.array([0 if s is None else int(s) for s in seeds], np.int64)
    if np.any((values < 0) | (values > np.iinfo(np.int32).max)):
      raise ValueError(f"reset seeds must be in [0, 2**31), got {values[fresh].tolist()}")
    obs, self._keys, self._states = self._reset(
        jnp.asarray(values, jnp.int32), self._keys, self._states, jnp.asarray(fresh))
    # The adapter's conversion is elementwise: it serves a stacked batch as well.
    return gymnax_envs.to_gato_observation(self.env_id, jax.device_get(obs))

  def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Steps every row with its action (idle rows too; their results are to be ignored).

    Args:
      actions: Gato actions stacked over rows: int [B] for discrete tasks, float [B, d] in
        [-1, 1] for continuous ones.

    Returns:
      (observations as `reset`, float32 rewards [B], terminated [B], truncated [B]); the
      observation of a row that just ended is its episode's last one.
    """
    actions = self._check_actions(actions)
    self._keys, self._states, obs, reward, terminated, truncated = self._step(
        self._keys, self._states, actions)
    obs, reward, terminated, truncated = jax.device_get((obs, reward, terminated, truncated))
    terminated = np.asarray(terminated, bool)
    return (gymnax_envs.to_gato_observation(self.env_id, obs), np.asarray(reward, np.float32),
            terminated, np.asarray(truncated, bool) & ~terminated)

  def _check_actions(self, actions) -> np.ndarray:
    actions = np.asarray(actions)
    spec = self.action_spec
    expected = (self.num_envs, *spec.shape)
    if actions.shape != expected:
      raise ValueError(f"{self.name}: actions must have shape {list(expected)} (rows first),"
                       f" got {list(actions.shape)}")
    if isinstance(spec, token_specs.DiscreteSpec):
      if not np.issubdtype(actions.dtype, np.integer):
        raise TypeError(f"{self.name}: discrete actions must be integers, got {actions.dtype}")
      if np.any((actions < 0) | (actions >= spec.num_values)):
        raise ValueError(f"{self.name}: actions {actions.tolist()} outside [0, {spec.num_values})")
      return actions.astype(np.int32)
    if not np.all(np.isfinite(actions)) or np.any(np.abs(actions) > 1.0):
      raise ValueError(f"{self.name}: continuous actions must be finite and in [-1, 1]")
    return actions.astype(np.float32)


def _stack_actions(actions: Sequence[Any], live: np.ndarray, action_spec) -> np.ndarray:
  """Rows' actions as one array; rows not `live` (idle, gave up) get a zero action."""
  dtype = np.int32 if isinstance(action_spec, token_specs.DiscreteSpec) else np.float32
  out = np.zeros((len(actions), *action_spec.shape), dtype)
  for row, action in enumerate(actions):
    if live[row]:
      out[row] = np.asarray(action)
  return out


def run_episodes(batch: GymnaxBatch, agent: agents.Agent, seeds: Sequence[int],
                 max_steps: int = 0,
                 timing: rollouts.RolloutTiming | None = None) -> list[rollouts.EpisodeOutcome]:
  """Plays one episode per seed, `batch.num_envs` at a time: `rollouts.run_episodes` on device.

  Args:
    batch: the environments.
    agent: what acts (`setup` is called here with one adapter per row).
    seeds: one reset seed per episode.
    max_steps: if > 0, a cap on each episode's steps below the task's own limit.
    timing: filled with the agent's and the environments' time, if given.

  Returns:
    One outcome per seed, in the order of `seeds`.
  """
  rollouts.check_episode_args(seeds, max_steps)
  timing = timing if timing is not None else rollouts.RolloutTiming()
  num_rows = batch.num_envs
  agent.setup(batch.row_environments())
  limit = min(batch.max_episode_steps, max_steps) if max_steps else batch.max_episode_steps
  queue = list(enumerate(seeds))
  outcomes: list[rollouts.EpisodeOutcome | None] = [None] * len(seeds)
  active = np.zeros(num_rows, bool)
  index = np.zeros(num_rows, np.int64)
  row_seed = np.zeros(num_rows, np.int64)
  returns = np.zeros(num_rows, np.float64)  # Summed in float64 as the host loop does.
  steps = np.zeros(num_rows, np.int64)

  def start(rows: Sequence[int], observations: dict | None) -> dict:
    """Resets `rows` to the next queued episodes (idling those left without one)."""
    reset_seeds: list[int | None] = [None] * num_rows
    for row in rows:
      if queue:
        index[row], seed = queue.pop(0)
        row_seed[row], reset_seeds[row] = seed, int(seed)
        active[row], returns[row], steps[row] = True, 0.0, 0
    if not any(s is not None for s in reset_seeds):
      return observations
    t0 = time.perf_counter()
    fresh = batch.reset(reset_seeds)
    timing.env_seconds += time.perf_counter() - t0
    for row, seed in enumerate(reset_seeds):
      if seed is not None:
        agent.begin_episode(row, seed)
    if observations is None:
      return fresh
    chosen = np.array([s is not None for s in reset_seeds])
    return {k: np.where(chosen.reshape((-1,) + (1,) * (v.ndim - 1)), fresh[k], v)
            for k, v in observations.items()}

  def finish(row: int, gave_up: bool = False) -> None:
    outcomes[index[row]] = rollouts.EpisodeOutcome(
        seed=int(row_seed[row]), episode_return=float(returns[row]), length=int(steps[row]),
        success=0 if gave_up else episodes_lib.SUCCESS_UNDEFINED, gave_up=gave_up)
    active[row] = False
    agent.end_episode(row)

  observations = start(range(num_rows), None)
  while active.any():
    t0 = time.perf_counter()
    actions = agent.act_batch(observations, active.copy())
    timing.agent_seconds += time.perf_counter() - t0
    timing.agent_calls += 1
    ended = []
    for row in np.flatnonzero(active):
      if actions[row] is agents.GAVE_UP:
        finish(row, gave_up=True)
        ended.append(row)
    stepped = active.copy()
    if stepped.any():
      t0 = time.perf_counter()
      observations, reward, terminated, truncated = batch.step(
          _stack_actions(actions, stepped, batch.action_spec))
      timing.env_seconds += time.perf_counter() - t0
      timing.env_steps += int(stepped.sum())
      for row in np.flatnonzero(stepped):
        returns[row] += float(reward[row])
        steps[row] += 1
        if terminated[row] or truncated[row] or steps[row] >= limit:
          finish(row)
          ended.append(row)
    observations = start(sorted(ended), observations)
  return outcomes


def run_task(task: str, agent: agents.Agent, num_episodes: int, batch_size: int = 16,
             seed: int = 0, max_steps: int = 0,
             ) -> tuple[list[rollouts.EpisodeOutcome], rollouts.RolloutTiming]:
  """`rollouts.run_task` for a gymnax task: same seeds, environments stepped under jit."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  batch = GymnaxBatch(task, min(batch_size, num_episodes))
  timing = rollouts.RolloutTiming()
  seeds = rollouts.eval_seeds(batch.name, num_episodes, seed)
  return run_episodes(batch, agent, seeds, max_steps, timing), timing
