"""Evaluation reports: `DIR/eval/STEP/results.json`, markdown tables and a bar chart.

results.json holds the control tasks' scores ("tasks", "domains", "overall") and, when text or
vision-language tasks were evaluated, "text" (perplexity) and "vision_language" (BLEU-4, CIDEr,
VQA accuracy, sample captions and answers) sections, each keyed by task.

The JSON is the record; the markdown table and the PNG chart are pure functions of it, so
`regenerate(directory)` rebuilds both byte for byte from a results.json alone (e.g. after
editing the plotting code, or on another machine).
"""

import io
import math
from typing import Any, Callable, Mapping

import numpy as np

from gato_jax import files
from gato_jax.envs import registry
from gato_jax.evaluation import scores

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
CHART_FILE = "normalized_scores.png"


def results_dir(workdir: str, step: int | None) -> str:
  """`workdir/eval/<step>`; "final" names a params tree given without a step."""
  return files.join(files.resolve(workdir), "eval", str(step) if step is not None else "final")


def _clean(value: Any) -> Any:
  """NaN/inf -> None, so the file is valid JSON for every reader."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  return value


def _pct(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def _ci(interval) -> str:
  return "-" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _fmt(value) -> str:
  return "-" if value is None else f"{value:.4g}"


def _control_tables(results: dict) -> list[str]:
  lines = [
    "| task | return | random | expert | normalised | success | episodes |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for task, row in sorted(results["tasks"].items()):
    anchors = results.get("stats", {}).get(task, {})
    lines.append(
      f"| {task} | {row['return']:.4g} | {_fmt(anchors.get('random_return'))} |"
      f" {_fmt(anchors.get('expert_return'))} | {_pct(row['normalized_score'])} |"
      f" {_pct(row.get('success_rate'))} | {row['episodes']} |"
    )
  lines += [
    "",
    "| domain | tasks | mean | mean 95% CI | IQM | IQM 95% CI | >=50% | >=80% | >=100% |",
    "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
  ]
  rows = sorted(results["domains"].items()) + [("all", results["overall"])]
  for name, agg in rows:
    lines.append(
      f"| {name} | {agg['num_tasks']} | {_pct(agg['mean'])} | {_ci(agg.get('mean_ci'))} |"
      f" {_pct(agg['iqm'])} | {_ci(agg.get('iqm_ci'))} | {agg['above_50']} | {agg['above_80']} |"
      f" {agg['above_100']} |"
    )
  return lines


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _non_control_tables(results: dict) -> list[str]:
  lines = []
  text = results.get("text") or {}
  if text:
    lines += [
      "",
      "Held-out text:",
      "",
      "| task | documents | tokens | perplexity | nats/token |",
      "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task, row in sorted(text.items()):
      lines.append(
        f"| {task} | {row['documents']} | {row['tokens']} | {_fmt(row['perplexity'])} |"
        f" {_fmt(row['nll_per_token'])} |"
      )
  vision = results.get("vision_language") or {}
  if vision:
    lines += [
      "",
      "Held-out vision-language:",
      "",
      "| task | examples | BLEU-4 | CIDEr | VQA accuracy |",
      "| --- | ---: | ---: | ---: | ---: |",
    ]
    for task, row in sorted(vision.items()):
      lines.append(
        f"| {task} | {row['examples']} | {_fmt(row.get('bleu4'))} |"
        f" {_fmt(row.get('cider'))} | {_pct(row.get('vqa_accuracy'))} |"
      )
    for task, row in sorted(vision.items()):
      samples = row.get("samples") or []
      if not samples:
        continue
      if "reference" in samples[0]:
        lines += ["", f"Sample captions, {task}:", "", "| generated | reference |", "| --- | --- |"]
        lines += [f"| {_cell(s['generated'])} | {_cell(s['reference'])} |" for s in samples]
      else:
        lines += [
          "",
          f"Sample answers, {task}:",
          "",
          "| question | answer | predicted |",
          "| --- | --- | --- |",
        ]
        lines += [
          f"| {_cell(s['question'])} | {_cell(s['answer'])} | {_cell(s['predicted'])} |"
          for s in samples
        ]
  return lines


def render_markdown(results: dict) -> str:
  """The per-task and per-domain tables of a results dict, as markdown."""
  lines = [f"# Evaluation at step {results.get('step', '?')}", ""]
  if results.get("tasks"):
    lines += _control_tables(results)
  lines += _non_control_tables(results)
  timing = results.get("timing")
  if timing and timing.get("agent_calls"):
    lines += [
      "",
      f"Seconds per batched agent step: {timing['seconds_per_agent_call']:.4g}"
      f" ({timing['agent_calls']} calls, batch of up to {timing.get('batch_size', '?')}).",
    ]
  return "\n".join(lines) + "\n"


def render_chart(results: dict, path: str) -> None:
  """A bar chart PNG of per-task normalised scores (100% = expert), one colour per domain."""
  import matplotlib

  matplotlib.use("Agg")  # No display; deterministic raster output.
  from matplotlib import pyplot as plt

  tasks = sorted(results["tasks"])
  values = [100 * results["tasks"][t]["normalized_score"] for t in tasks]
  domains = sorted({registry.domain_of(t) for t in tasks})
  colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(domains)}
  fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(tasks) + 2.0), 4.0), dpi=100)
  ax.bar(range(len(tasks)), values, color=[colours[registry.domain_of(t)] for t in tasks])
  for y, style in ((100, "-"), (50, ":")):
    ax.axhline(y, color="grey", linestyle=style, linewidth=0.8)
  ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=8)
  ax.set_ylabel("normalised score (% of expert)")
  ax.set_title(f"Gato evaluation, step {results.get('step', '?')}")
  handles = [matplotlib.patches.Patch(color=colours[d], label=d) for d in domains]
  if handles:  # None when only text and vision-language tasks were evaluated.
    ax.legend(handles=handles, fontsize=8)
  fig.tight_layout()
  save_png(fig, path)
  plt.close(fig)


def episode_scores(results: dict) -> dict[str, list[float]]:
  """task -> episode normalised scores of a control evaluation's results (for rliable)."""
  return {
    task: summary["episode_normalized_scores"]
    for task, summary in results["tasks"].items()
    if "episode_normalized_scores" in summary
  }


def plot_profiles(runs: dict, path: str, num_resamples: int = 2000, seed: int = 0) -> str:
  """rliable's performance profiles of several runs (name -> task -> episode scores) as a PNG.

  Over the tasks every run has; per run, at each tau, the mean over tasks of the fraction of a
  task's episodes scoring above tau (rliable's score distribution, with each task weighed the
  same when episode counts differ), with its stratified bootstrap interval.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  from rliable import plot_utils

  common = sorted(set.intersection(*(set(tasks) for tasks in runs.values())))
  if not common:
    raise ValueError("the runs have no task in common to draw profiles over")
  taus = np.linspace(0.0, 1.5, 31)

  def profile(*tasks):
    return np.array([np.mean([np.mean(t > tau) for t in tasks]) for tau in taus])

  profiles, intervals = {}, {}
  for name, tasks in runs.items():
    profiles[name], intervals[name] = scores.bootstrap(
      [tasks[t] for t in common], profile, num_resamples, seed=seed
    )
  fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
  plot_utils.plot_performance_profiles(
    profiles, taus, performance_profile_cis=intervals, xlabel="normalised score (1 = expert)", ax=ax
  )
  ax.legend(sorted(runs), fontsize=8)
  fig.tight_layout()
  save_png(fig, path)
  plt.close(fig)
  return path


def save_png(fig, path: str) -> None:
  """Writes matplotlib figure `fig` as a PNG to `path` (a local path or a URI) through the path
  layer. No creation metadata: the same results give the same bytes."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", metadata={"Software": None})
  files.write_bytes(path, buffer.getvalue())


def write(results: dict, directory: str) -> dict[str, str]:
  """Writes results.json, the markdown table and the chart under `directory`; returns paths."""
  files.write_json(files.join(directory, RESULTS_FILE), _clean(results))
  return regenerate(directory)


def load(directory: str) -> dict:
  path = files.join(directory, RESULTS_FILE)
  if not files.exists(path):
    raise FileNotFoundError(f"no {RESULTS_FILE} in {directory}")
  return files.read_json(path)


def regenerate(directory: str) -> dict[str, str]:
  """Rebuilds the markdown table and the chart from `directory/results.json` alone."""
  return {
    "results": files.join(directory, RESULTS_FILE),
    **write_table_and_plots(
      directory, load(directory), render_markdown, TABLE_FILE, {"chart": (CHART_FILE, render_chart)}
    ),
  }


def write_table_and_plots(
  directory: str,
  results: dict,
  render_table: Callable[[dict], str],
  table_file: str,
  plots: Mapping[str, tuple[str, Callable[[dict, str], None]]],
) -> dict[str, str]:
  """Writes `render_table(results)` to `table_file` and each plot {key: (file, plot(results,
  path))} under `directory`; returns {"table": path, key: path, ...}."""
  paths = {"table": files.join(directory, table_file)}
  files.write_bytes(paths["table"], render_table(results).encode())
  for key, (name, plot) in plots.items():
    paths[key] = files.join(directory, name)
    plot(results, paths[key])
  return paths
