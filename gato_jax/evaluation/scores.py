"""Scores: raw returns, expert-normalised scores, success rates, and aggregates over tasks.

Per task (GATO_SPEC.md, Evaluation): the mean return over N episodes and the normalised score
`(return - random) / (expert - random)`, 100% being the expert that made the data and 0% a
uniformly random policy, with the anchors the data generator recorded (`episodes.TaskStats`).

Per domain (and over all tasks): the mean of the tasks' normalised scores (the paper's
headline), the interquartile mean (IQM) of the task scores, 95% stratified-bootstrap confidence
intervals of both, and how many tasks reach 50%, 80% and 100% of the expert. The bootstrap is
rliable's stratified bootstrap (Agarwal et al., 2021) with episodes as the resampled unit: each
task's N episode scores are resampled with replacement within that task, task means recomputed,
then aggregated, so the interval reflects evaluation noise without mixing tasks. It is
implemented in numpy (rliable would add arch and statsmodels to the pins).
"""

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from gato_jax.data import episodes as episodes_lib

# The paper's headline thresholds: tasks above 50% (and here 80%, 100%) of the expert.
THRESHOLDS = (0.5, 0.8, 1.0)


def check_stats(stats: episodes_lib.TaskStats) -> None:
  """Raises a clear ValueError if `stats` cannot anchor a normalised score."""
  if stats.expert_return is None:
    raise ValueError(
        f"task {stats.task!r} has no recorded expert return, so its normalised score is"
        " undefined; generate its statistics with an expert (tools/generate_data.py) or leave it"
        " out of eval.tasks")
  if not stats.expert_return > stats.random_return:
    raise ValueError(
        f"task {stats.task!r}: expert return {stats.expert_return:.4g} does not beat random"
        f" {stats.random_return:.4g}; the normalised score is undefined")


def normalized_scores(returns, stats: episodes_lib.TaskStats) -> np.ndarray:
  """(return - random) / (expert - random) of each return (float64 array)."""
  check_stats(stats)
  returns = np.asarray(returns, np.float64)
  return (returns - stats.random_return) / (stats.expert_return - stats.random_return)


def iqm(values) -> float:
  """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25), as rliable).

  floor(n / 4) values are cut from each end of the sorted values.
  """
  values = np.sort(np.asarray(values, np.float64).reshape(-1))
  if values.size == 0:
    raise ValueError("iqm of no values")
  cut = int(0.25 * values.size)
  return float(np.mean(values[cut:values.size - cut]))


AGGREGATES = {"mean": lambda task_scores: float(np.mean(task_scores)), "iqm": iqm}


def stratified_bootstrap_ci(per_task: Sequence[np.ndarray], aggregate: str,
                            num_resamples: int = 2000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
  """Percentile CI of an aggregate of task means, resampling episodes within each task.

  Args:
    per_task: one array of episode scores per task (lengths may differ).
    aggregate: "mean" or "iqm", applied across the tasks' mean scores.
    num_resamples: bootstrap replicates.
    confidence: the interval's coverage (0.95 gives the 2.5 and 97.5 percentiles).
    seed: the resampling RNG's seed (the interval is deterministic given it).

  Returns:
    (low, high).
  """
  if aggregate not in AGGREGATES:
    raise ValueError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
  if not per_task or any(np.size(s) == 0 for s in per_task):
    raise ValueError("the bootstrap needs at least one task, each with at least one episode")
  if num_resamples < 1 or not 0 < confidence < 1:
    raise ValueError("num_resamples must be >= 1 and confidence in (0, 1)")
  rng = np.random.default_rng(seed)
  # [R, T]: each replicate's task means; tasks resampled independently (stratified).
  means = np.empty((num_resamples, len(per_task)))
  for t, scores in enumerate(per_task):
    scores = np.asarray(scores, np.float64)
    picks = rng.integers(0, scores.size, (num_resamples, scores.size))
    means[:, t] = scores[picks].mean(axis=1)
  fn = AGGREGATES[aggregate]
  replicates = np.array([fn(row) for row in means])
  alpha = (1.0 - confidence) / 2.0
  low, high = np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)])
  return float(low), float(high)


@dataclasses.dataclass
class TaskScores:
  """One task's evaluation.

  Attributes:
    task: "<domain>/<task>".
    returns: each episode's return.
    normalized: each episode's normalised score.
    successes: each episode's success (1/0), or -1 where the task defines none.
    lengths: each episode's steps.
  """

  task: str
  returns: np.ndarray
  normalized: np.ndarray
  successes: np.ndarray
  lengths: np.ndarray

  def summary(self) -> dict:
    """JSON-ready per-task results (means, plus the per-episode values for re-analysis)."""
    defined = self.successes[self.successes != episodes_lib.SUCCESS_UNDEFINED]
    return {
        "return": float(np.mean(self.returns)),
        "return_std": float(np.std(self.returns)),
        "normalized_score": float(np.mean(self.normalized)),
        "success_rate": float(np.mean(defined)) if defined.size == self.successes.size else None,
        "episodes": int(self.returns.size),
        "mean_length": float(np.mean(self.lengths)),
        "episode_returns": [float(r) for r in self.returns],
        "episode_normalized_scores": [float(s) for s in self.normalized],
    }


def score_task(task: str, outcomes, stats: episodes_lib.TaskStats) -> TaskScores:
  """TaskScores of rollout outcomes (`rollouts.EpisodeOutcome`s) against `stats`."""
  if stats.task != task:
    raise ValueError(f"statistics are of task {stats.task!r}, not {task!r}")
  if not outcomes:
    raise ValueError(f"task {task!r} has no episodes to score")
  returns = np.asarray([o.episode_return for o in outcomes], np.float64)
  return TaskScores(
      task=task, returns=returns, normalized=normalized_scores(returns, stats),
      successes=np.asarray([o.success for o in outcomes], np.int64),
      lengths=np.asarray([o.length for o in outcomes], np.int64))


def aggregate(per_task: Mapping[str, np.ndarray], num_resamples: int = 2000,
              seed: int = 0) -> dict:
  """Mean and IQM of task scores with bootstrap CIs, and counts above THRESHOLDS.

  Args:
    per_task: task -> that task's episode normalised scores.
    num_resamples: bootstrap replicates (0 skips the intervals).
    seed: the bootstrap's seed.
  """
  if not per_task:
    raise ValueError("aggregate needs at least one task")
  names = sorted(per_task)
  scores = [np.asarray(per_task[name], np.float64) for name in names]
  task_means = np.array([s.mean() for s in scores])
  out = {"num_tasks": len(names), "mean": float(task_means.mean()), "iqm": iqm(task_means)}
  for name in AGGREGATES:
    out[f"{name}_ci"] = (list(stratified_bootstrap_ci(scores, name, num_resamples, seed=seed))
                         if num_resamples else None)
  for threshold in THRESHOLDS:
    count = int(np.sum(task_means >= threshold))
    key = f"above_{int(round(threshold * 100))}"
    out[key] = count
    out[f"{key}_fraction"] = count / len(names)
  return out


def domain_of(task: str) -> str:
  return task.partition("/")[0]


def summarize(tasks: Mapping[str, TaskScores], num_resamples: int = 2000, seed: int = 0) -> dict:
  """{"tasks": per task summary, "domains": per domain aggregate, "overall": all tasks}."""
  by_domain: dict[str, dict[str, np.ndarray]] = {}
  for name, scores in tasks.items():
    by_domain.setdefault(domain_of(name), {})[name] = scores.normalized
  domains = {d: aggregate(by_domain[d], num_resamples, seed) for d in sorted(by_domain)}
  overall = aggregate({n: s.normalized for n, s in tasks.items()}, num_resamples, seed)
  # The paper's scaling plots average within each domain, then across domains.
  overall["mean_over_domains"] = float(np.mean([d["mean"] for d in domains.values()]))
  return {"tasks": {name: tasks[name].summary() for name in sorted(tasks)},
          "domains": domains, "overall": overall}
