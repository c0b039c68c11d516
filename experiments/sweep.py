r"""Scaling sweeps: trains a ladder of sizes with one recipe and plots the scaling curves.

  python experiments/sweep.py --config=experiments/configs/sweep.py:cpu \
      --workdir=~/.cache/gato_jax/sweep_cpu
  python experiments/sweep.py --config=experiments/configs/sweep.py:paper --workdir=DIR \
      --dispatch=print

--dispatch:
  local   (default) prepare the data, run every unfinished run here one after another, then
          write DIR/results.json, results.md, score_vs_tokens.png and loss_vs_compute.png.
  print   print the commands for a cluster: data preparation, one per unfinished run (each is
          this command with --run=NAME), and the report. A run with a TPU slice (the sweep
          config's `slices`, e.g. the paper ladder) prints as that slice's launch: create it,
          install, the --run command on every host (--worker=all), follow, delete (--zone,
          --project; gato_jax.pod, docs/tpu_pod.md).
  prepare generate the sweep's expert data only.
  report  rebuild results.json and the table and plots from the finished runs.

Rerunning resumes: finished runs are skipped, an unfinished run continues from its newest
checkpoint. `--run=NAME` runs that one run only (what `print` emits).
"""

import os
import shlex
import sys
import time

os.environ.setdefault("MUJOCO_GL", "disable")  # State-based environments need no renderer.

from absl import app, flags, logging
from ml_collections import config_flags

from gato_jax import files, launch, workdir_lock
from gato_jax.sweep import plan, report, runner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: runs/, results and plots.")
_DISPATCH = flags.DEFINE_enum(
  "dispatch",
  "local",
  ["local", "print", "prepare", "report"],
  "What to do with the unfinished runs (see the module docstring).",
)
_RUN = flags.DEFINE_string("run", None, "Run only this run (a name under DIR/runs).")
_ZONE = flags.DEFINE_string("zone", None, "print: the TPU slices' zone (default: gcloud's).")
_PROJECT = flags.DEFINE_string("project", None, "print: their project (default: gcloud's).")
flags.mark_flags_as_required(["config", "workdir"])


def prepare_data(sweep) -> None:
  """Trains missing experts and generates the sweep's episodes (both resumable)."""
  tasks = [t.strip() for t in sweep.data.tasks.split(",") if t.strip()]
  if tasks:
    from gato_jax import recipes

    recipes.prepare_data(tasks, sweep.base.data.data_dir, sweep.data.episodes)


def _train(config, workdir):
  from gato_jax import train

  return train.train_and_evaluate(config, workdir)


def _evaluate(config, workdir, step):
  from gato_jax.evaluation import evaluator

  return evaluator.evaluate(config, workdir, step=step)


def _base_argv() -> list[str]:
  """This command as launched, less the flags that differ per printed command."""
  dropped = ("workdir", "dispatch", "run", "zone", "project")
  return ["python", sys.argv[0], *launch.argv_without(sys.argv[1:], dropped)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sweep = _CONFIG.value
  workdir = files.resolve(_WORKDIR.value)  # A local path or a URI (gs://...).
  runs = plan.plan(sweep)
  if _RUN.value:
    selected = [run for run in runs if run.name == _RUN.value]
    if not selected:
      raise app.UsageError(
        f"no run {_RUN.value!r} in this sweep; runs: {', '.join(run.name for run in runs)}"
      )
  else:
    selected = runs
  if _DISPATCH.value != "print" and not _RUN.value:
    # Held until this process exits; a --run process holds only its run (runner.execute).
    workdir_lock.WorkdirLock(workdir).acquire()
  todo = runner.pending(workdir, selected)
  logging.info("sweep %s: %d runs, %d unfinished", sweep.ladder, len(selected), len(todo))

  if _DISPATCH.value == "print":
    base = _base_argv()
    if sweep.data.tasks:
      print(shlex.join([*base, f"--workdir={workdir}", "--dispatch=prepare"]))
    elif sweep.slices and not files.is_remote(sweep.base.data.data_dir):
      print(
        f"# Prepare: every host reads base.data.data_dir ({sweep.base.data.data_dir}), so"
        " generate the mixture's datasets (tools/generate_data.py) into a bucket and add"
        " --config.base.data.data_dir=gs://BUCKET/data to this command."
      )
    for command in runner.launch_commands(todo, workdir, base, _ZONE.value, _PROJECT.value):
      print(command)
    print(shlex.join([*base, f"--workdir={workdir}", "--dispatch=report"]))
    return
  if _DISPATCH.value in ("local", "prepare"):
    prepare_data(sweep)
  if _DISPATCH.value == "local":
    for run in todo:
      started = time.time()
      runner.execute(run, workdir, _train, _evaluate, loss_window_steps=sweep.loss_window_steps)
      print(f"sweep: run {run.name} finished in {(time.time() - started) / 60:.1f} min", flush=True)
  if _DISPATCH.value in ("local", "report") and not _RUN.value:
    results = runner.collect(workdir, runs, sweep.ladder, sweep.loss_window_steps)
    if results["runs"]:
      paths = report.regenerate(workdir)
      print(report.render_markdown(results))
      print(f"sweep report: {paths}")
    else:
      print("sweep: no finished run to report yet")


if __name__ == "__main__":
  # Printing the commands writes nothing: the commands it prints write the sweep's folder.
  launch.run(main, logs_in_workdir=lambda: _DISPATCH.value != "print")
