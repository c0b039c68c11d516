"""Per-task return statistics and Gato's data filter: what the pipeline reads of a task's episodes.

A task's statistics (`TaskStats`: the random and the expert policy's mean returns) anchor its
normalised scores and set the least return an episode needs to be trained on
(`return_threshold`). The episode makers (gato_jax.sources) measure and save them; this module
only reads and writes the files, so the training side needs no environment.
"""

import dataclasses
import json
import os

from gato_jax import files

# Gato keeps episodes that reach 80% of the expert (docs/design.md, Training, Data filtering).
DEFAULT_FILTER_FRACTION = 0.8


@dataclasses.dataclass
class TaskStats:
  """Mean returns that anchor a task's normalised score: 0% random, 100% expert.

  Attributes:
    task: "<domain>/<task>".
    random_return / random_return_std / random_episodes / random_success_rate: a uniformly
      random policy's returns over `random_episodes` episodes.
    expert_agent / expert_return / ... : the same for the expert that makes the data; None
      where the task has no expert yet (e.g. DM Control before its SAC agents exist).
    env_version: the environment's `Environment.version` when measured (a change, such as DM
      Control's action repeat, makes every number here stale).
  """

  task: str
  random_return: float
  random_return_std: float
  random_episodes: int
  random_success_rate: float | None = None
  expert_agent: str | None = None
  expert_version: str | None = None  # The expert's `Policy.version` when measured.
  expert_return: float | None = None
  expert_return_std: float | None = None
  expert_episodes: int = 0
  expert_success_rate: float | None = None
  env_version: str | None = None


def stats_path(data_dir: str, task: str) -> str:
  """Where a task's statistics live: <data_dir>/gato_meta/stats/<domain>/<task>.json."""
  return os.path.join(os.path.expanduser(data_dir), "gato_meta", "stats", f"{task}.json")


def save_stats(stats: TaskStats, data_dir: str) -> str:
  return files.write_json(stats_path(data_dir, stats.task), dataclasses.asdict(stats))


def load_stats(data_dir: str, task: str) -> TaskStats:
  path = stats_path(data_dir, task)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"no statistics for task {task!r} at {path}; run tools/generate_data.py for it first"
    )
  with open(path) as f:
    return TaskStats(**json.load(f))


def return_threshold(stats: TaskStats, fraction: float = DEFAULT_FILTER_FRACTION) -> float:
  """The least return an episode needs to be kept: random + fraction * (expert - random).

  The paper keeps episodes with "at least 80% of the expert return". Measured from the random
  return this is a normalised score >= 80%, which equals the paper's rule when random scores 0
  (most of its tasks) and stays meaningful for negative returns: with expert -150 and random
  -1200 (Pendulum-like), 0.8 * expert = -120 would reject the expert's own typical episodes,
  while random + 0.8 * gap = -360 keeps them.
  """
  if stats.expert_return is None:
    raise ValueError(f"task {stats.task!r} has no expert return, so it cannot be filtered")
  gap = stats.expert_return - stats.random_return
  if not gap > 0:
    raise ValueError(
      f"task {stats.task!r}: expert return {stats.expert_return:.4g} does not beat random"
      f" {stats.random_return:.4g}; normalised scores and filtering are undefined"
    )
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"filter fraction must be in [0, 1], got {fraction}")
  return stats.random_return + fraction * gap
