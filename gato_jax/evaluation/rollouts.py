"""Evaluation rollouts: N episodes of a task in its real environment, several at a time.

`run_episodes` steps a batch of environments in a host loop and asks the agent for every active
row's action in one call (one batched model call per decoding step for `ModelAgent`). When a
row's episode ends, the row starts the next pending episode, or idles once none is left. Each
episode starts from its own seed, so its outcome does not depend on the batch size for a
deterministic agent that sees only its own row (scripted policies; the model up to float
rounding of padded batches).

Evaluation episodes use a seed stream of their own (`EVAL_STREAM`), apart from the stored data's
and the statistics' episodes, so the agent is never scored on a level it was trained on.
"""

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from gato_jax.data import episodes as episodes_lib
from gato_jax.envs import base
from gato_jax.evaluation import agents

# episodes_lib streams 0-2 are data, expert statistics and random statistics.
EVAL_STREAM = 3


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
  """One evaluation episode.

  Attributes:
    seed: the reset seed.
    episode_return: the sum of rewards.
    length: environment steps taken.
    success: 1/0 where the environment reports success, -1 (SUCCESS_UNDEFINED) where not.
    gave_up: the agent could not act (a scripted policy's planner failed).
  """

  seed: int
  episode_return: float
  length: int
  success: int
  gave_up: bool = False


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


def eval_seeds(task: str, num_episodes: int, base_seed: int = 0) -> list[int]:
  """The reset seeds of a task's evaluation episodes (a function of the arguments alone)."""
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be positive, got {num_episodes}")
  return [episodes_lib.episode_seed(base_seed, task, i, EVAL_STREAM) for i in range(num_episodes)]


def check_episode_args(seeds: Sequence[int], max_steps: int) -> None:
  """What every rollout loop (host or on device) requires of its seeds and step cap."""
  if not seeds:
    raise ValueError("run_episodes needs at least one seed")
  if max_steps < 0:
    raise ValueError(f"max_steps must be >= 0, got {max_steps}")


def run_episodes(envs: Sequence[base.Environment], agent: agents.Agent, seeds: Sequence[int],
                 max_steps: int = 0,
                 timing: RolloutTiming | None = None) -> list[EpisodeOutcome]:
  """Plays one episode per seed with `len(envs)` environments stepped together.

  Args:
    envs: environments of one task, one per batch row (fewer rows than seeds is the norm).
    agent: what acts; `setup(envs)` is called here.
    seeds: one reset seed per episode.
    max_steps: if > 0, a cap on each episode's steps below the environment's own limit.
    timing: filled with the agent's and the environments' time, if given.

  Returns:
    One outcome per seed, in the order of `seeds`.
  """
  if not envs:
    raise ValueError("run_episodes needs at least one environment")
  check_episode_args(seeds, max_steps)
  timing = timing if timing is not None else RolloutTiming()
  agent.setup(envs)
  num_rows = len(envs)
  queue = list(enumerate(seeds))
  outcomes: list[EpisodeOutcome | None] = [None] * len(seeds)
  observations: list = [None] * num_rows
  # Per row: (episode index, seed, return, steps, success, step limit) of its running episode.
  running: list[dict | None] = [None] * num_rows

  def start(row: int) -> None:
    if not queue:
      observations[row], running[row] = None, None
      return
    index, seed = queue.pop(0)
    observations[row] = envs[row].reset(int(seed))
    agent.begin_episode(row, int(seed))
    # Read after reset: BabyAI sets its time limit per episode.
    limit = envs[row].max_episode_steps
    limit = min(limit, max_steps) if max_steps else limit
    running[row] = dict(index=index, seed=int(seed), ret=0.0, steps=0,
                        success=episodes_lib.SUCCESS_UNDEFINED, limit=limit)

  def finish(row: int, gave_up: bool = False) -> None:
    episode = running[row]
    outcomes[episode["index"]] = EpisodeOutcome(
        seed=episode["seed"], episode_return=float(episode["ret"]), length=episode["steps"],
        success=0 if gave_up else episode["success"], gave_up=gave_up)
    agent.end_episode(row)
    start(row)

  for row in range(num_rows):
    start(row)
  while any(r is not None for r in running):
    t0 = time.perf_counter()
    actions = agent.act(list(observations))
    timing.agent_seconds += time.perf_counter() - t0
    timing.agent_calls += 1
    for row, episode in enumerate(running):
      if episode is None:
        continue
      if actions[row] is agents.GAVE_UP:
        finish(row, gave_up=True)
        continue
      t0 = time.perf_counter()
      result = envs[row].step(actions[row])
      timing.env_seconds += time.perf_counter() - t0
      timing.env_steps += 1
      episode["ret"] += float(result.reward)
      episode["steps"] += 1
      if "success" in result.info:
        episode["success"] = int(bool(result.info["success"]))
      observations[row] = result.observation
      if result.terminated or result.truncated or episode["steps"] >= episode["limit"]:
        finish(row)
  return outcomes


def run_task(make_env: Callable[[], base.Environment], agent: agents.Agent, num_episodes: int,
             batch_size: int = 16, seed: int = 0, max_steps: int = 0,
             ) -> tuple[list[EpisodeOutcome], RolloutTiming]:
  """Evaluates `agent` on `num_episodes` episodes of one task (seeds from `eval_seeds`).

  Args:
    make_env: builds one environment of the task (called up to `batch_size` times).
    agent: what acts.
    num_episodes: N, the paper's 50 by default in the configs.
    batch_size: environments stepped together (capped at `num_episodes`).
    seed: the base seed of the evaluation episodes.
    max_steps: if > 0, caps each episode's steps.

  Returns:
    (outcomes in seed order, timing).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  envs = [make_env() for _ in range(min(batch_size, num_episodes))]
  timing = RolloutTiming()
  try:
    seeds = eval_seeds(envs[0].name, num_episodes, seed)
    outcomes = run_episodes(envs, agent, seeds, max_steps, timing)
  finally:
    for env in envs:
      env.close()
  return outcomes, timing


def returns_of(outcomes: Sequence[EpisodeOutcome]) -> np.ndarray:
  return np.asarray([o.episode_return for o in outcomes], np.float64)
