"""Scores: raw returns, expert-normalised scores, success rates, and aggregates over tasks.

Per task (docs/design.md, Evaluation): the mean return over N episodes and the normalised score
`(return - random) / (expert - random)`, 100% being the expert that made the data and 0% a
uniformly random policy, with the anchors the data generator recorded (`episodes.TaskStats`).

Per domain (and over all tasks): the mean of the tasks' normalised scores (the paper's
headline), the interquartile mean (IQM) of the task scores, the optimality gap, 95%
stratified-bootstrap confidence intervals of these, and how many tasks reach 50%, 80% and 100%
of the expert. Aggregates and intervals are rliable's (Agarwal et al., 2021), the library the
IQM convention comes from, with episodes as its "runs": each task's episode scores are
resampled with replacement within that task (tasks may differ in episode counts), task means
recomputed, then aggregated, so the interval reflects evaluation noise without mixing tasks.
Between two evaluations, rliable's probability of improvement; over several, its performance
profiles (`reports.plot_profiles`).
rliable (with arch, statsmodels, pandas) is imported on first use: `import gato_jax` stays light.
"""

import contextlib
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import registry

# The paper's headline thresholds: tasks above 50% (and here 80%, 100%) of the expert.
THRESHOLDS = (0.5, 0.8, 1.0)


def check_stats(stats: episodes_lib.TaskStats) -> None:
  """Raises a clear ValueError if `stats` cannot anchor a normalised score."""
  if stats.expert_return is None:
    raise ValueError(
      f"task {stats.task!r} has no recorded expert return, so its normalised score is"
      " undefined; generate its statistics with an expert (tools/generate_data.py) or leave it"
      " out of eval.tasks"
    )
  if not stats.expert_return > stats.random_return:
    raise ValueError(
      f"task {stats.task!r}: expert return {stats.expert_return:.4g} does not beat random"
      f" {stats.random_return:.4g}; the normalised score is undefined"
    )


def normalized_scores(returns, stats: episodes_lib.TaskStats) -> np.ndarray:
  """(return - random) / (expert - random) of each return (float64 array)."""
  check_stats(stats)
  returns = np.asarray(returns, np.float64)
  return (returns - stats.random_return) / (stats.expert_return - stats.random_return)


def _rliable():
  """rliable's `library` and `metrics` modules, imported on first use (seconds of imports)."""
  from rliable import library, metrics

  return library, metrics


@contextlib.contextmanager
def seeded_global_rng(seed: int):
  """rliable 1.2.0 draws bootstrap indices from numpy's global RNG (`np.random.choice`) and
  ignores its `random_state` argument: seed that RNG for the call, then restore its state."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)


def iqm(values) -> float:
  """Interquartile mean: rliable's `aggregate_iqm` (scipy.stats.trim_mean(x, 0.25)).

  floor(n / 4) values are cut from each end of the sorted values.
  """
  values = np.asarray(values, np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError("iqm of no values")
  return float(_rliable()[1].aggregate_iqm(values))


# Aggregates of the tasks' mean scores: IQM and optimality gap over tasks as in Gato's per-task
# reporting. Each task is averaged over its own episodes first, so tasks evaluated with different
# episode counts (pixel tasks take fewer) weigh the same.
AGGREGATES = {
  "mean": lambda task_means: float(np.mean(task_means)),
  "iqm": iqm,
  "optimality_gap": lambda task_means: float(
    _rliable()[1].aggregate_optimality_gap(np.asarray(task_means, np.float64))
  ),
}


def check_per_task(per_task: Sequence) -> list[np.ndarray]:
  """Each task's episode scores as a float64 vector; a clear error if any task has none."""
  if not per_task or any(np.size(s) == 0 for s in per_task):
    raise ValueError("scores need at least one task, each with at least one episode")
  return [np.asarray(s, np.float64).reshape(-1) for s in per_task]


def bootstrap(
  samples: Sequence[np.ndarray],
  func,
  num_resamples: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """rliable's percentile bootstrap of `func(*samples)`, each sample resampled on its own.

  `samples` are episode-score vectors (one per task, or per task and run): each is a separate
  input of rliable's `StratifiedIndependentBootstrap` (what `get_interval_estimates` uses for a
  list of arrays), so episodes are resampled within their own task and counts may differ.

  Returns:
    (the point estimate, [low, high] rows): func's output at the data and its interval.
  """
  if num_resamples < 1 or not 0 < confidence < 1:
    raise ValueError("num_resamples must be >= 1 and confidence in (0, 1)")
  samples = check_per_task(samples)
  library, _ = _rliable()
  with seeded_global_rng(seed):
    point, intervals = library.get_interval_estimates(
      {"run": [s[:, None] for s in samples]},
      lambda *columns: np.atleast_1d(func(*[c[:, 0] for c in columns])),
      reps=num_resamples,
      confidence_interval_size=confidence,
    )
  return np.atleast_1d(point["run"]), np.asarray(intervals["run"]).reshape(2, -1)


def stratified_bootstrap_ci(
  per_task: Sequence[np.ndarray],
  aggregate: str,
  num_resamples: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
) -> tuple[float, float]:
  """rliable's percentile CI of an aggregate over the tasks' mean scores (see `bootstrap`).

  Args:
    per_task: one array of episode scores per task (counts may differ).
    aggregate: a name in AGGREGATES, applied across the tasks' mean scores.
    num_resamples: bootstrap replicates.
    confidence: the interval's coverage (0.95 gives the 2.5 and 97.5 percentiles).
    seed: the resampling RNG's seed (the interval is deterministic given it).

  Returns:
    (low, high).
  """
  if aggregate not in AGGREGATES:
    raise ValueError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
  fn = AGGREGATES[aggregate]
  _, interval = bootstrap(
    per_task, lambda *tasks: fn([np.mean(t) for t in tasks]), num_resamples, confidence, seed
  )
  low, high = interval[:, 0]
  return float(low), float(high)


def probability_of_improvement(
  x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], num_resamples: int = 2000, seed: int = 0
) -> dict:
  """P(an episode of run x scores above one of run y), averaged over their common tasks.

  rliable's `probability_of_improvement` (the Mann-Whitney statistic) per task, the mean over
  tasks, with its stratified bootstrap interval; episode counts may differ between the runs and
  between tasks.

  Args:
    x, y: task -> episode normalised scores of two evaluations (e.g. two checkpoints).

  Returns:
    {"probability", "ci": [low, high], "tasks": the common tasks}.
  """
  tasks = sorted(set(x) & set(y))
  if not tasks:
    raise ValueError("the two runs have no task in common")
  _, metrics = _rliable()
  n = len(tasks)

  def mean_over_tasks(*samples):
    return np.mean(
      [
        metrics.probability_of_improvement(samples[t][:, None], samples[n + t][:, None])
        for t in range(n)
      ]
    )

  point, interval = bootstrap(
    [x[t] for t in tasks] + [y[t] for t in tasks], mean_over_tasks, num_resamples, seed=seed
  )
  return {
    "probability": float(point[0]),
    "ci": [float(v) for v in interval[:, 0]],
    "tasks": tasks,
  }


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

  ARRAYS = ("returns", "normalized", "successes", "lengths")

  def to_json(self) -> dict:
    """Every episode's values with their dtypes: `from_json` rebuilds these exactly."""
    out = {"task": self.task}
    for name in self.ARRAYS:
      values = np.asarray(getattr(self, name))
      out[name] = {"dtype": values.dtype.str, "values": values.tolist()}
    return out

  @classmethod
  def from_json(cls, value: dict) -> "TaskScores":
    arrays = {
      name: np.asarray(value[name]["values"], dtype=np.dtype(value[name]["dtype"]))
      for name in cls.ARRAYS
    }
    return cls(task=value["task"], **arrays)

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
  """TaskScores of rollout outcomes (`runner.EpisodeOutcome`s) against `stats`."""
  if stats.task != task:
    raise ValueError(f"statistics are of task {stats.task!r}, not {task!r}")
  if not outcomes:
    raise ValueError(f"task {task!r} has no episodes to score")
  returns = np.asarray([o.episode_return for o in outcomes], np.float64)
  return TaskScores(
    task=task,
    returns=returns,
    normalized=normalized_scores(returns, stats),
    successes=np.asarray([o.success for o in outcomes], np.int64),
    lengths=np.asarray([o.length for o in outcomes], np.int64),
  )


def aggregate(per_task: Mapping[str, np.ndarray], num_resamples: int = 2000, seed: int = 0) -> dict:
  """Mean and IQM of task scores with bootstrap CIs, and counts above THRESHOLDS.

  Args:
    per_task: task -> that task's episode normalised scores.
    num_resamples: bootstrap replicates (0 skips the intervals).
    seed: the bootstrap's seed.
  """
  if not per_task:
    raise ValueError("aggregate needs at least one task")
  names = sorted(per_task)
  scores = check_per_task([per_task[name] for name in names])
  task_means = np.array([s.mean() for s in scores])
  out = {"num_tasks": len(names)}
  if num_resamples:
    # One set of replicates for every aggregate: the resampled indices depend only on the
    # episode counts and the seed, so each interval equals `stratified_bootstrap_ci`'s.
    _, intervals = bootstrap(
      scores,
      lambda *tasks: [fn([np.mean(t) for t in tasks]) for fn in AGGREGATES.values()],
      num_resamples,
      seed=seed,
    )
  for i, (name, fn) in enumerate(AGGREGATES.items()):
    out[name] = fn(task_means)
    out[f"{name}_ci"] = [float(v) for v in intervals[:, i]] if num_resamples else None
  for threshold in THRESHOLDS:
    count = int(np.sum(task_means >= threshold))
    key = f"above_{int(round(threshold * 100))}"
    out[key] = count
    out[f"{key}_fraction"] = count / len(names)
  return out


def summarize(tasks: Mapping[str, TaskScores], num_resamples: int = 2000, seed: int = 0) -> dict:
  """{"tasks": per task summary, "domains": per domain aggregate, "overall": all tasks}."""
  by_domain: dict[str, dict[str, np.ndarray]] = {}
  for name, scores in tasks.items():
    by_domain.setdefault(registry.domain_of(name), {})[name] = scores.normalized
  domains = {d: aggregate(by_domain[d], num_resamples, seed) for d in sorted(by_domain)}
  overall = aggregate({n: s.normalized for n, s in tasks.items()}, num_resamples, seed)
  # The paper's scaling plots average within each domain, then across domains.
  overall["mean_over_domains"] = float(np.mean([d["mean"] for d in domains.values()]))
  return {
    "tasks": {name: tasks[name].summary() for name in sorted(tasks)},
    "domains": domains,
    "overall": overall,
  }
