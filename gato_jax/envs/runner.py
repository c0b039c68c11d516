"""The one episode runner: a batch of environments, an agent acting for every row, N episodes.

`run_episodes(batch, agent, seeds)` plays one episode per seed, `batch.num_envs` at a time: the
agent acts for all rows in one call, and a row whose episode ends starts the next pending seed.
Each episode starts from its own seed, so its outcome does not depend on the batch size. Data
generation (`record=True` returns RLDS episodes), task statistics, expert and model evaluation
all use it, with one of two backends: `HostBatch` (numpy environments of any domain, stepped one
by one; the agent's `act`) or `gymnax_envs.GymnaxBatch` (pure-JAX environments stepped in one
`jit(vmap(...))` call; the agent's `act_batch` on stacked observations). An `Agent` is the Gato
model (`evaluation.model_agent.ModelAgent`) or per-row `policies.Policy`s (`PolicyAgent`):

  agent.setup(envs)                       # once per task, one row per environment
  agent.begin_episode(row, seed)          # after the row's environment reset(seed)
  actions = agent.act(observations)       # observations[row] is None where a row is idle
  actions = agent.act_batch(stacked, active)  # the same, observation leaves stacked over rows
"""

import abc
import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from gato_jax.envs import base, policies
from gato_jax.tokenizer import specs as token_specs

# An episode's `success` where its task defines none (1/0 where it does).
SUCCESS_UNDEFINED = -1


class _GaveUp:
  """Marker type of GAVE_UP."""

  def __repr__(self) -> str:
    return "GAVE_UP"


# Returned in a row's place by `Agent.act` when its policy cannot choose an action: the runner
# ends that episode there, unfinished (a failure of the policy, not a terminal state).
GAVE_UP = _GaveUp()


class Agent(abc.ABC):
  """Acts for a batch of environments at once.

  Attributes:
    name: recorded in results and stored episodes (e.g. "gato", "babyai_bot").
  """

  name: str = "agent"

  @abc.abstractmethod
  def setup(self, envs: Sequence[base.Environment]) -> None:
    """Prepares one row per environment (all of one task, so they share specs)."""

  @abc.abstractmethod
  def begin_episode(self, row: int, seed: int) -> None:
    """Starts a new episode in `row`; called right after the row's environment reset(seed)."""

  def end_episode(self, row: int) -> None:
    """The episode in `row` ended; the row stays idle until `begin_episode`."""
    del row

  @abc.abstractmethod
  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    """One action per row (None for idle rows, whose observation is None; GAVE_UP allowed)."""

  def act_batch(self, observations: Any, active: np.ndarray) -> list[Any]:
    """`act` on observations whose leaves are stacked over rows; `active[row]` False is idle.

    Idle rows' entries in `observations` are ignored (they may hold anything).
    """
    active = np.asarray(active, bool)
    return self.act(
      [
        jax.tree.map(lambda leaf, row=row: np.asarray(leaf)[row], observations)
        if active[row]
        else None
        for row in range(active.shape[0])
      ]
    )


class PolicyAgent(Agent):
  """One `policies.Policy` per environment, stepped row by row (no batching needed).

  Args:
    make_policy: `(env) -> Policy`, e.g. `registry.make_expert` or `policies.RandomPolicy`.
    name: the agent's name in results; defaults to the policies' own.
  """

  def __init__(
    self, make_policy: Callable[[base.Environment], policies.Policy], name: str | None = None
  ):
    self._make_policy = make_policy
    self._policies: list[policies.Policy] = []
    self.name = name or "policy"
    self._named = name is not None

  def setup(self, envs: Sequence[base.Environment]) -> None:
    if not envs:
      raise ValueError("PolicyAgent.setup needs at least one environment")
    self._policies = [self._make_policy(env) for env in envs]
    if not self._named:
      self.name = getattr(self._policies[0], "name", type(self._policies[0]).__name__)

  def begin_episode(self, row: int, seed: int) -> None:
    self._policies[row].reset(seed)

  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    if len(observations) != len(self._policies):
      raise ValueError(f"got {len(observations)} observations for {len(self._policies)} rows")
    actions = []
    for policy, observation in zip(self._policies, observations):
      if observation is None:
        actions.append(None)
        continue
      try:
        actions.append(policy.act(observation))
      except policies.PolicyGaveUp:
        actions.append(GAVE_UP)
    return actions


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
  """One episode.

  Attributes:
    seed: the reset seed.
    episode_return: the sum of rewards.
    length: environment steps taken.
    success: 1/0 where the environment reports success, SUCCESS_UNDEFINED where not.
    gave_up: the agent could not act (a scripted policy's planner failed).
    episode: the RLDS episode tree (`sources.episodes`' layout) when run with `record=True`.
  """

  seed: int
  episode_return: float
  length: int
  success: int
  gave_up: bool = False
  episode: dict | None = None


@dataclasses.dataclass
class RolloutTiming:
  """Wall-clock split of a rollout: the agent's batched calls and the environment steps."""

  agent_seconds: float = 0.0
  env_seconds: float = 0.0
  agent_calls: int = 0  # Batched act() calls.
  env_steps: int = 0  # Single-environment steps.

  @property
  def seconds_per_agent_call(self) -> float:
    return self.agent_seconds / max(self.agent_calls, 1)


class HostBatch:
  """Numpy environments of one task stepped one by one on the host (any domain)."""

  def __init__(self, envs: Sequence[base.Environment]):
    if not envs:
      raise ValueError("a batch needs at least one environment")
    self.envs = list(envs)
    self.num_envs = len(self.envs)
    self.action_spec = self.envs[0].action_spec
    self.observations: list = [None] * self.num_envs

  def row_environments(self) -> list[base.Environment]:
    return self.envs

  def reset(self, seeds: Sequence[int | None]) -> None:
    for row, seed in enumerate(seeds):
      if seed is not None:
        self.observations[row] = self.envs[row].reset(int(seed))

  def step_limit(self, row: int) -> int:
    return self.envs[row].max_episode_steps  # Read after reset: BabyAI sets it per episode.

  def observation(self, row: int) -> Any:
    return self.observations[row]

  def act(self, agent: Agent, active: np.ndarray) -> list[Any]:
    return agent.act([o if live else None for o, live in zip(self.observations, active)])

  def step(self, actions: Sequence[Any], live: np.ndarray):
    """Steps the `live` rows -> (rewards, terminated, truncated, infos), one entry per row."""
    rewards, terminated, truncated, infos = ([None] * self.num_envs for _ in range(4))
    rows = np.flatnonzero(live)
    # Environments that simulate in a process of their own (step_async / step_wait) all start
    # their step before any is waited for, so they run side by side.
    started = {row for row in rows if hasattr(self.envs[row], "step_async")}
    for row in rows:
      if row in started:
        self.envs[row].step_async(actions[row])
    for row in rows:
      env = self.envs[row]
      result = env.step_wait() if row in started else env.step(actions[row])
      self.observations[row] = result.observation
      rewards[row], terminated[row] = result.reward, result.terminated
      truncated[row] = result.truncated
      infos[row] = result.info
    return rewards, terminated, truncated, infos

  def close(self) -> None:
    for env in self.envs:
      env.close()


def host_batch(make_env: Callable[[], base.Environment]) -> Callable[[int], HostBatch]:
  """`num_envs -> HostBatch` of `make_env()` environments (`evaluation.rollouts.run_task`)."""
  return lambda num_envs: HostBatch([make_env() for _ in range(num_envs)])


def _stack(trees: list, spec: Any) -> Any:
  """Stacks a list of trees shaped like `spec` along a new time axis; text becomes object arrays."""
  columns = [[] for _ in token_specs.leaf_specs(spec)]
  for tree in trees:
    for column, (_, value, _) in zip(columns, token_specs.flatten_with_paths(tree, spec)):
      column.append(value)
  leaves = []
  for column, (_, leaf) in zip(columns, token_specs.leaf_specs(spec)):
    if isinstance(leaf, token_specs.TextSpec):
      leaves.append(np.array(column, dtype=object))
    else:
      leaves.append(np.stack([np.asarray(v) for v in column]))
  return token_specs.unflatten(spec, leaves)


def _episode_tree(
  env: base.Environment,
  agent_name: str,
  seed: int,
  trajectory: dict,
  terminated: bool,
  success: int,
) -> dict:
  """The RLDS episode of a recorded trajectory (layout in `sources.episodes`' docstring)."""
  # The extra last step carries the final observation; its action/reward are padding (RLDS).
  actions = trajectory["actions"] + [policies.zero_action(env.action_spec)]
  rewards = np.asarray(trajectory["rewards"] + [0.0], np.float32)
  discounts = [0.0 if t else 1.0 for t in trajectory["terminated"]] + [0.0 if terminated else 1.0]
  num_steps = len(trajectory["observations"])
  is_last = np.arange(num_steps) == num_steps - 1
  return {
    "steps": {
      "observation": _stack(trajectory["observations"], env.observation_spec),
      "action": _stack(actions, env.action_spec),
      "reward": rewards,
      "discount": np.asarray(discounts, np.float32),
      "is_first": np.arange(num_steps) == 0,
      "is_last": is_last,
      "is_terminal": is_last & terminated,
    },
    "episode_metadata": {
      "task": env.name,
      "agent": agent_name,
      # float32 like the rewards: TFDS stores floats as tf.train.Example float32 lists.
      "return": np.float32(np.sum(rewards, dtype=np.float64)),
      "success": np.int8(success),
      "seed": np.int64(seed),
    },
  }


def run_episodes(
  batch,
  agent: Agent,
  seeds: Sequence[int],
  max_steps: int = 0,
  timing: RolloutTiming | None = None,
  record: bool = False,
) -> list[EpisodeOutcome]:
  """Plays one episode per seed with the batch's rows stepped together.

  Args:
    batch: a `HostBatch` or `gymnax_envs.GymnaxBatch` of one task.
    agent: what acts; `setup(batch.row_environments())` is called here.
    seeds: one reset seed per episode.
    max_steps: if > 0, a cap on each episode's steps below the environment's own limit.
    timing: filled with the agent's and the environments' time, if given.
    record: also return each episode's RLDS tree (`EpisodeOutcome.episode`).

  Returns:
    One outcome per seed, in the order of `seeds`.
  """
  if not seeds:
    raise ValueError("run_episodes needs at least one seed")
  if max_steps < 0:
    raise ValueError(f"max_steps must be >= 0, got {max_steps}")
  timing = timing if timing is not None else RolloutTiming()
  envs = batch.row_environments()
  agent.setup(envs)
  num_rows = batch.num_envs
  queue = list(enumerate(seeds))
  outcomes: list[EpisodeOutcome | None] = [None] * len(seeds)
  active = np.zeros(num_rows, bool)
  # Per row: (episode index, seed, return, steps, success, step limit, trajectory) of its episode.
  running: list[dict | None] = [None] * num_rows

  def start(rows: Sequence[int]) -> None:
    """Resets `rows` to the next queued episodes (idling those left without one)."""
    reset_seeds: list[int | None] = [None] * num_rows
    for row in rows:
      if queue:
        index, seed = queue.pop(0)
        reset_seeds[row] = int(seed)
        running[row] = dict(
          index=index, seed=int(seed), ret=0.0, steps=0, success=SUCCESS_UNDEFINED
        )
        active[row] = True
    if all(s is None for s in reset_seeds):
      return
    t0 = time.perf_counter()
    batch.reset(reset_seeds)
    timing.env_seconds += time.perf_counter() - t0
    for row, seed in enumerate(reset_seeds):
      if seed is not None:
        agent.begin_episode(row, seed)
        limit = batch.step_limit(row)
        running[row]["limit"] = min(limit, max_steps) if max_steps else limit
        if record:
          running[row]["trajectory"] = dict(
            observations=[batch.observation(row)], actions=[], rewards=[], terminated=[]
          )

  def finish(row: int, gave_up: bool = False, terminated: bool = False) -> None:
    episode = running[row]
    success = 0 if gave_up else episode["success"]
    tree = (
      _episode_tree(
        envs[row], agent.name, episode["seed"], episode["trajectory"], terminated, success
      )
      if record
      else None
    )
    outcomes[episode["index"]] = EpisodeOutcome(
      seed=episode["seed"],
      episode_return=float(episode["ret"]),
      length=episode["steps"],
      success=success,
      gave_up=gave_up,
      episode=tree,
    )
    active[row] = False
    agent.end_episode(row)

  start(range(num_rows))
  while active.any():
    t0 = time.perf_counter()
    actions = batch.act(agent, active.copy())
    timing.agent_seconds += time.perf_counter() - t0
    timing.agent_calls += 1
    ended = []
    for row in np.flatnonzero(active):
      if actions[row] is GAVE_UP:
        finish(row, gave_up=True)
        ended.append(row)
    live = active.copy()
    if live.any():
      t0 = time.perf_counter()
      rewards, terminated, truncated, infos = batch.step(actions, live)
      timing.env_seconds += time.perf_counter() - t0
      timing.env_steps += int(live.sum())
      for row in np.flatnonzero(live):
        episode = running[row]
        episode["ret"] += float(rewards[row])
        episode["steps"] += 1
        info = infos[row] or {}
        if "success" in info:
          episode["success"] = int(bool(info["success"]))
        if record:
          trajectory = episode["trajectory"]
          trajectory["actions"].append(actions[row])
          trajectory["rewards"].append(rewards[row])
          trajectory["terminated"].append(bool(terminated[row]))
          trajectory["observations"].append(batch.observation(row))
        if terminated[row] or truncated[row] or episode["steps"] >= episode["limit"]:
          finish(row, terminated=bool(terminated[row]))
          ended.append(row)
    start(sorted(ended))
  return outcomes
