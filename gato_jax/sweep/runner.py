"""Runs a sweep's runs, resumably, and collects their results into one JSON file.

Layout under the sweep's workdir:
  runs/<name>/                   an ordinary training run (checkpoints/, metrics.jsonl, eval/)
  runs/<name>/run_config.json    the run's full config, checked on resume
  runs/<name>/sweep_points/S.json  the evaluation at step S (written once evaluated)
  runs/<name>/sweep_result.json  the run's result; its presence marks the run done
  results.json                   every finished run's result (what the report is made from)

A run trains in segments that end at its evaluation steps (`train.stop_at_step`, which stops
exactly as a preemption would), and each segment's checkpoint is evaluated before training
goes on. A killed sweep therefore resumes inside a run from the newest checkpoint, re-does at
most one segment's evaluation, and never repeats a finished run.
"""

import copy
import json
import shlex
import time
from typing import Any, Callable, Iterable

from absl import logging
import ml_collections
import numpy as np

from gato_jax import files, workdir_lock
from gato_jax.sweep.plan import Run

RESULTS_FILE = "results.json"
RUN_RESULT_FILE = "sweep_result.json"
RUN_CONFIG_FILE = "run_config.json"
POINTS_DIR = "sweep_points"
CURVE_POINTS = 200  # Loss-curve points kept per run (plots need no more).

# (config, workdir) -> None: trains until config.train.stop_at_step (or train.steps), resuming.
TrainFn = Callable[[ml_collections.ConfigDict, str], Any]
# (config, workdir, step) -> evaluator results ("tasks", "domains", "overall") of checkpoint step.
EvaluateFn = Callable[[ml_collections.ConfigDict, str, int], dict]


def run_dir(workdir: str, run: Run) -> str:
  return files.join(files.resolve(workdir), "runs", run.name)


def is_done(workdir: str, run: Run) -> bool:
  return files.exists(files.join(run_dir(workdir, run), RUN_RESULT_FILE))


def pending(workdir: str, runs: Iterable[Run]) -> list[Run]:
  return [run for run in runs if not is_done(workdir, run)]


def checkpoint_steps(directory: str) -> list[int]:
  """Steps with a finished checkpoint in `directory/checkpoints` (orbax names them by step;
  an unfinished save carries a temporary suffix and does not count)."""
  from gato_jax import checkpoint  # pylint: disable=g-import-not-at-top  (orbax: not to plan)

  path = files.join(directory, checkpoint.CHECKPOINTS_DIR)
  if not files.isdir(path):
    return []
  return sorted(int(name) for name in files.listdir(path) if name.isdigit())


def _recorded_config(config: ml_collections.ConfigDict) -> dict:
  """The config as the run records it; stop_at_step changes per segment and is left out."""
  record = json.loads(config.to_json_best_effort())
  record["train"].pop("stop_at_step", None)
  return record


def _check_run_config(directory: str, run: Run) -> None:
  path = files.join(directory, RUN_CONFIG_FILE)
  record = _recorded_config(run.config)
  if files.exists(path):
    previous = files.read_json(path)
    # `arg` only labels how the config was built (e.g. which preset), not what it is.
    previous.pop("arg", None)
    record.pop("arg", None)
    if previous != record:
      changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
      raise ValueError(
        f"{directory} holds run {run.name!r} with a different config (groups {changed});"
        " resume with the original sweep config or use another --workdir"
      )
  else:
    files.write_json(path, record)


def loss_curve(
  records: list[dict], window_steps: int, key: str = "loss"
) -> list[tuple[int, float]]:
  """(step, `key` averaged over the logged steps in (step - window, step]) per step logging it.

  `key` is the training loss or one domain's ("loss/<domain>", logged for the steps whose batch
  had that domain's rows). A step logged twice (a resumed segment replays steps after the last
  checkpoint) counts once, with its newest value: replayed steps are exact repeats of the same
  batches.
  """
  by_step = {}
  for record in records:
    if record.get(key) is not None:
      by_step[int(record["step"])] = float(record[key])
  steps = np.array(sorted(by_step), np.int64)
  losses = np.array([by_step[s] for s in steps], np.float64)
  curve = []
  for i, step in enumerate(steps):
    inside = steps[: i + 1] > step - max(window_steps, 1)
    curve.append((int(step), float(np.mean(losses[: i + 1][inside]))))
  return curve


def _summarise_eval(results: dict) -> dict:
  """What a sweep keeps of an evaluation: mean normalised score overall, per domain, per task."""
  overall = results["overall"]
  return {
    "mean_score": overall.get("mean_over_domains", overall["mean"]),
    "domains": {d: agg["mean"] for d, agg in results["domains"].items()},
    "tasks": {t: row["normalized_score"] for t, row in results["tasks"].items()},
    "returns": {t: row["return"] for t, row in results["tasks"].items()},
  }


def model_costs(config: ml_collections.ConfigDict) -> tuple[int, float]:
  """(parameter count, training FLOPs per token) of the run's model, from shapes alone."""
  from gato_jax.model import ModelConfig
  from gato_jax.training import flops
  from gato_jax.training.step import abstract_param_count

  model_config = ModelConfig.from_dict(config.model)
  params = abstract_param_count(model_config)
  return params, flops.train_flops_per_token(model_config, params, config.train.seq_len)


def execute(
  run: Run,
  workdir: str,
  train_fn: TrainFn,
  evaluate_fn: EvaluateFn,
  costs: tuple[int, float] | None = None,
  loss_window_steps: int = 1,
) -> dict:
  """Trains and evaluates one run to completion (resuming), writes and returns its result.

  Args:
    run: the run (from `plan.plan`).
    workdir: the sweep's directory.
    train_fn, evaluate_fn: the trainer and the evaluator (injectable for tests).
    costs: (parameters, FLOPs per token); None computes them from the model config.
    loss_window_steps: training losses are averaged over this many steps before each point.
  """
  import jax  # pylint: disable=g-import-not-at-top  (planning a sweep never needs jax)

  from gato_jax import sharding  # pylint: disable=g-import-not-at-top

  # Before any JAX computation (the model costs below): JAX refuses to join a job after one.
  sharding.initialize_from_config(run.config)
  # A run is evaluated between its segments; refused here, before anything trains.
  sharding.require_one_host(f"sweep run {run.name}, which evaluates between segments,")
  directory = run_dir(workdir, run)
  result_path = files.join(directory, RUN_RESULT_FILE)
  if files.exists(result_path):
    return files.read_json(result_path)
  # Held between training segments too: another sweep process must not run this run. The
  # trainer takes the same lock of this process's index, which it then holds reentrantly.
  with workdir_lock.WorkdirLock(directory, jax.process_index()):
    _check_run_config(directory, run)
    params, flops_per_token = costs or model_costs(run.config)
    for step in run.eval_steps:
      point_path = files.join(directory, POINTS_DIR, f"{step}.json")
      if files.exists(point_path):
        continue
      started = time.time()
      if step not in checkpoint_steps(directory):
        config = copy.deepcopy(run.config)
        config.train.stop_at_step = step if step < config.train.steps else 0
        logging.info("sweep: training %s to step %d of %d", run.name, step, config.train.steps)
        train_fn(config, directory)
        if step not in checkpoint_steps(directory):
          raise RuntimeError(
            f"training {run.name} to step {step} left no checkpoint {step} in"
            f" {directory}/checkpoints"
          )
      trained = time.time()
      logging.info("sweep: evaluating %s at step %d", run.name, step)
      summary = _summarise_eval(evaluate_fn(run.config, directory, step))
      files.write_json(
        point_path,
        {
          "step": step,
          **summary,
          "train_seconds": trained - started,
          "eval_seconds": time.time() - trained,
        },
      )

    result = build_result(run, directory, params, flops_per_token, loss_window_steps)
    files.write_json(result_path, result)
    return result


def _value_at(curve: list[tuple[int, float]], step: int) -> float | None:
  """The curve's value at its last step at or before `step` (None if it starts later)."""
  before = [value for s, value in curve if s <= step]
  return before[-1] if before else None


def build_result(
  run: Run, directory: str, params: int, flops_per_token: float, loss_window_steps: int
) -> dict:
  """The run's result from its evaluated points and metrics.jsonl; `finished` says whether every
  evaluation point is there (a partial result shows a sweep in progress)."""
  from gato_jax.training import metrics_log  # Imports jax, which planning a sweep never needs.

  records = (
    metrics_log.read_metrics(directory)
    if files.exists(files.join(directory, "metrics.jsonl"))
    else []
  )
  curve = loss_curve(records, loss_window_steps)
  if not curve:
    raise RuntimeError(f"{directory}/metrics.jsonl has no logged loss")
  # Each domain's own loss (its text or action targets only): a mixture's total loss weighs the
  # domains by their targets, where text rows have the most and the highest loss, so comparing
  # recipes for control needs the control domains' losses apart.
  prefix = metrics_log.DOMAIN_LOSS_PREFIX
  domain_keys = sorted({k for r in records for k in r if k.startswith(prefix)})
  domain_curves = {
    key[len(prefix) :]: loss_curve(records, loss_window_steps, key) for key in domain_keys
  }
  tokens_per_step = run.tokens_per_step
  points = []
  for step in run.eval_steps:
    point_path = files.join(directory, POINTS_DIR, f"{step}.json")
    if not files.exists(point_path):
      continue
    point = files.read_json(point_path)
    loss = _value_at(curve, step)
    if loss is None:
      raise RuntimeError(f"{run.name}: no loss logged at or before step {step}")
    domain_losses = {d: _value_at(c, step) for d, c in domain_curves.items()}
    tokens = step * tokens_per_step
    points.append(
      {
        **point,
        "tokens": tokens,
        "compute": tokens * flops_per_token,
        "loss": loss,
        "domain_losses": {d: v for d, v in domain_losses.items() if v is not None},
      }
    )
  keep = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), CURVE_POINTS)).astype(int))
  return {
    "name": run.name,
    "overrides": run.overrides,
    "size": run.config.model.size,
    "params": int(params),
    "flops_per_token": float(flops_per_token),
    "tokens_per_step": tokens_per_step,
    "steps": run.config.train.steps,
    "finished": len(points) == len(run.eval_steps),
    "points": points,
    "curve": [
      {
        "step": curve[i][0],
        "tokens": curve[i][0] * tokens_per_step,
        "compute": curve[i][0] * tokens_per_step * flops_per_token,
        "loss": curve[i][1],
      }
      for i in keep
    ],
    "train_seconds": sum(p["train_seconds"] for p in points),
    "eval_seconds": sum(p["eval_seconds"] for p in points),
  }


def collect(
  workdir: str,
  runs: Iterable[Run],
  ladder: str = "",
  loss_window_steps: int = 1,
  costs_fn: Callable[[ml_collections.ConfigDict], tuple[int, float]] = model_costs,
) -> dict:
  """Gathers the runs' results into `workdir/results.json`; returns what it wrote.

  Finished runs contribute their result; unfinished runs with evaluated points a partial one
  (`"finished": false`); runs with none are listed under "missing".
  """
  gathered, missing = [], []
  for run in runs:
    directory = run_dir(workdir, run)
    if is_done(workdir, run):
      gathered.append(files.read_json(files.join(directory, RUN_RESULT_FILE)))
    elif files.isdir(files.join(directory, POINTS_DIR)) and files.listdir(
      files.join(directory, POINTS_DIR)
    ):
      gathered.append(build_result(run, directory, *costs_fn(run.config), loss_window_steps))
    else:
      missing.append(run.name)
  results = {"ladder": ladder, "runs": gathered, "missing": missing}
  files.write_json(files.join(files.resolve(workdir), RESULTS_FILE), results)
  return results


def launch_commands(
  runs: Iterable[Run],
  workdir: str,
  base_argv: list[str],
  zone: str | None = None,
  project: str | None = None,
) -> list[str]:
  """What runs each run: `base_argv` (the sweep launcher and its flags) plus --run; for a run
  sized for a TPU slice (`sweep.slices`), that command on every host of a slice of its own
  (`gato_jax.pod.launch_script`: create, install, run, follow, delete; `zone`, `project` where).
  """
  from gato_jax import files, pod  # pylint: disable=g-import-not-at-top

  lines = []
  for run in runs:
    flags = [*base_argv[2:], f"--workdir={workdir}", f"--run={run.name}"]
    tpu = pod.config_slice(run.config)
    if tpu is None:
      lines.append(shlex.join([*base_argv[:2], *flags]))
      continue
    if not files.is_remote(workdir):
      raise ValueError(
        f"run {run.name} trains on a TPU slice, whose hosts share one run folder and whose disks"
        f" go when it is deleted: --workdir={workdir} must be a bucket (gs://BUCKET/...)"
      )
    name = pod.tpu_name(f"gato-{run.name}")
    # The slice's checkout has the launcher at its repository path, wherever it was run from here.
    worker_argv = ["experiments/sweep.py", *flags]
    lines += pod.launch_script(tpu, name, worker_argv, zone, project, title=f"run {run.name}")
  return lines
