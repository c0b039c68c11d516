"""Evaluation rollouts: N episodes of a task in its real environment, on seeds of their own.

Evaluation episodes use a seed stream of their own (`EVAL_STREAM`), apart from the stored data's
and the statistics' episodes, so the agent is never scored on a level it was trained on. The
episodes are played by the one runner (`envs.runner.run_episodes`), on host environments or,
for gymnax tasks, on device (`gymnax_envs.GymnaxBatch`).
"""

from typing import Callable

from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import runner

# episodes_lib streams 0-2 are data, expert statistics and random statistics.
EVAL_STREAM = 3


def eval_seeds(task: str, num_episodes: int, base_seed: int = 0) -> list[int]:
  """The reset seeds of a task's evaluation episodes (a function of the arguments alone)."""
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be positive, got {num_episodes}")
  return [episodes_lib.episode_seed(base_seed, task, i, EVAL_STREAM) for i in range(num_episodes)]


def run_task(
  make_batch: Callable[[int], object],
  agent: runner.Agent,
  num_episodes: int,
  batch_size: int = 16,
  seed: int = 0,
  max_steps: int = 0,
) -> tuple[list[runner.EpisodeOutcome], runner.RolloutTiming]:
  """Evaluates `agent` on `num_episodes` episodes of one task (seeds from `eval_seeds`).

  Args:
    make_batch: `num_envs -> batch` of the task's environments, e.g.
      `runner.host_batch(make_env)` or `lambda n: gymnax_envs.GymnaxBatch(task, n)`.
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
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be positive, got {num_episodes}")
  batch = make_batch(min(batch_size, num_episodes))
  timing = runner.RolloutTiming()
  try:
    seeds = eval_seeds(batch.row_environments()[0].name, num_episodes, seed)
    outcomes = runner.run_episodes(batch, agent, seeds, max_steps, timing)
  finally:
    batch.close()
  return outcomes, timing
