"""The sweep's table and plots, made from its results.json alone (`regenerate(workdir)`).

results.md            size, params, tokens, loss (all and per domain), per-domain and mean
                      normalised score per evaluation point; the power law fitted when the
                      runs differ in size; the size-ordering checks
score_vs_tokens.png   the paper's Figure 8: mean normalised score against tokens processed,
                      one curve per run
loss_vs_compute.png   every run's training-loss curve against training FLOPs, the
                      compute-efficient frontier and the power law fitted to it
"""

import json
from typing import Any

import numpy as np

from gato_jax import files
from gato_jax.evaluation import reports
from gato_jax.sweep import power_law
from gato_jax.sweep.plan import SIZE_KEY

TABLE_FILE = "results.md"
SCORE_PLOT = "score_vs_tokens.png"
LOSS_PLOT = "loss_vs_compute.png"
# Loss-curve points before this fraction of a run's steps are left out of the fit: the first
# steps fall from the uniform-vocabulary loss at a rate set by warm-up, not by compute.
FIT_START_FRACTION = 0.1


def load(workdir: str) -> dict:
  path = files.join(files.resolve(workdir), "results.json")
  if not files.exists(path):
    raise FileNotFoundError(f"no results.json in {workdir}; run the sweep first")
  return files.read_json(path)


def _runs(results: dict) -> list[dict]:
  runs = results.get("runs") or []
  if not runs:
    raise ValueError("results hold no finished run")
  return sorted(runs, key=lambda r: (r["params"], r["name"]))


def _name(run: dict) -> str:
  return run["name"] + ("" if run.get("finished", True) else " (unfinished)")


def _label(run: dict) -> str:
  return f"{_name(run)} ({run['params'] / 1e6:.2f}M)"


def _tokens(value: float) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if value >= scale:
      return f"{value / scale:.3g}{unit}"
  return f"{value:.0f}"


def fit_points(results: dict) -> tuple[np.ndarray, np.ndarray]:
  """(compute, loss) of the compute-efficient frontier of all runs' loss curves."""
  compute, loss = [], []
  for run in _runs(results):
    start = FIT_START_FRACTION * run["steps"]
    for point in run["curve"]:
      if point["step"] >= start and point["loss"] is not None:
        compute.append(point["compute"])
        loss.append(point["loss"])
  compute, loss = np.asarray(compute), np.asarray(loss)
  keep = power_law.frontier(compute, loss)
  return compute[keep], loss[keep]


def fit(results: dict) -> power_law.PowerLaw | None:
  """The power law of the frontier (no offset: CPU ladders are far from irreducible loss); None
  for a sweep of one model size (a learning-rate sweep), whose frontier is no scaling law."""
  if len({run["params"] for run in _runs(results)}) < 2:
    return None
  compute, loss = fit_points(results)
  if len(np.unique(compute)) < 2:
    return None
  return power_law.fit(compute, loss)


def size_ordering(results: dict) -> list[dict[str, Any]]:
  """At each evaluated token count, whether bigger models score higher and reach lower loss.

  Runs that differ only in model size are compared (other axes group them).
  """
  groups: dict[str, list[dict]] = {}
  for run in _runs(results):
    others = {k: v for k, v in run["overrides"].items() if k != SIZE_KEY}
    groups.setdefault(json.dumps(others, sort_keys=True), []).append(run)
  rows = []
  for group, runs in groups.items():
    if len(runs) < 2:
      continue
    shared = set.intersection(*({p["tokens"] for p in run["points"]} for run in runs))
    for tokens in sorted(shared):
      at = [next(p for p in run["points"] if p["tokens"] == tokens) for run in runs]
      scores, losses = [p["mean_score"] for p in at], [p["loss"] for p in at]
      rows.append(
        {
          "group": json.loads(group),
          "tokens": tokens,
          "sizes": [run["name"] for run in runs],
          "scores": scores,
          "losses": losses,
          "score_increases": bool(np.all(np.diff(scores) > 0)),
          "loss_decreases": bool(np.all(np.diff(losses) < 0)),
        }
      )
  return rows


def render_markdown(results: dict) -> str:
  runs = _runs(results)
  domains = sorted({d for run in runs for p in run["points"] for d in p["domains"]})
  # Results written before per-domain losses were kept have none; their cells stay empty.
  loss_domains = sorted(
    {d for run in runs for p in run["points"] for d in p.get("domain_losses", {})}
  )
  header = (
    ["run", "params", "tokens", "loss"]
    + [f"{d} loss" for d in loss_domains]
    + [f"{d} score" for d in domains]
    + ["mean score"]
  )
  lines = [
    f"# Sweep `{results.get('ladder', '')}`",
    "",
    "| " + " | ".join(header) + " |",
    "|" + "---|" * len(header),
  ]
  for run in runs:
    for p in run["points"]:
      cells = [_name(run), f"{run['params'] / 1e6:.2f}M", _tokens(p["tokens"]), f"{p['loss']:.3f}"]
      domain_losses = p.get("domain_losses", {})
      cells += [f"{domain_losses[d]:.3f}" if d in domain_losses else "" for d in loss_domains]
      cells += [f"{100 * p['domains'][d]:.1f}%" if d in p["domains"] else "" for d in domains]
      cells.append(f"{100 * p['mean_score']:.1f}%")
      lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    "Loss: training loss averaged over the steps before the point; a domain's loss is over"
    " its own targets (text tokens or actions) only. Scores:"
    " normalised to the data's expert (100%) and a random policy (0%), averaged within"
    " each domain, then across domains.",
  ]
  law = fit(results)
  if law:
    lines += [
      "",
      f"Power law fitted to the compute-efficient frontier: {law.describe()}"
      f" (C in training FLOPs; RMS log residual {law.rmse_log:.3f}).",
    ]
  ordering = size_ordering(results)
  if ordering:
    scores = sum(r["score_increases"] for r in ordering)
    losses = sum(r["loss_decreases"] for r in ordering)
    count = len(ordering)
    lines += [
      "",
      f"Bigger is better at equal tokens: score rises with size at {scores} of"
      f" {count} token counts, loss falls with size at {losses} of {count}.",
    ]
  timing = [
    f"{run['name']} train {run.get('train_seconds', 0.0) / 60:.1f} min + eval"
    f" {run.get('eval_seconds', 0.0) / 60:.1f} min"
    for run in runs
  ]
  lines += ["", "Wall time: " + ", ".join(timing) + "."]
  if results.get("missing"):
    lines += ["", f"Unfinished runs (not shown): {', '.join(results['missing'])}."]
  return "\n".join(lines) + "\n"


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # No display; deterministic raster output.
  from matplotlib import pyplot as plt

  return plt


def plot_scores(results: dict, path: str) -> None:
  """Mean normalised score (%) against tokens processed, one curve per run (Figure 8)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=100)
  for run in _runs(results):
    tokens = [p["tokens"] for p in run["points"]]
    ax.plot(tokens, [100 * p["mean_score"] for p in run["points"]], marker="o", label=_label(run))
  ax.axhline(0, color="grey", linewidth=0.8)  # A random policy.
  ax.set_xlabel("tokens processed")
  ax.set_ylabel("mean normalised score (% of expert)")
  ax.set_title(f"Score vs tokens, sweep {results.get('ladder', '')}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  reports.save_png(fig, path)
  plt.close(fig)


def plot_loss(results: dict, path: str) -> None:
  """Training loss against training FLOPs (log-log), the frontier and its power law."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=100)
  for run in _runs(results):
    curve = [p for p in run["curve"] if p["step"] > 0 and p["loss"] is not None]
    (line,) = ax.plot(
      [p["compute"] for p in curve],
      [p["loss"] for p in curve],
      linewidth=1.0,
      alpha=0.8,
      label=_label(run),
    )
    ax.plot(
      [p["compute"] for p in run["points"]],
      [p["loss"] for p in run["points"]],
      "o",
      color=line.get_color(),
      markersize=4,
    )
  law = fit(results)
  if law:
    compute, _ = fit_points(results)
    grid = np.geomspace(compute.min(), compute.max(), 50)
    ax.plot(grid, law(grid), "k--", linewidth=1.2, label=law.describe())
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("training compute (FLOPs)")
  ax.set_ylabel("training loss")
  ax.set_title(f"Loss vs compute, sweep {results.get('ladder', '')}")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)
  fig.tight_layout()
  reports.save_png(fig, path)
  plt.close(fig)


def regenerate(workdir: str) -> dict[str, str]:
  """Rebuilds the table and both plots from `workdir/results.json`; returns their paths."""
  workdir = files.resolve(workdir)
  return reports.write_table_and_plots(
    workdir,
    load(workdir),
    render_markdown,
    TABLE_FILE,
    {"scores": (SCORE_PLOT, plot_scores), "loss": (LOSS_PLOT, plot_loss)},
  )
