r"""The CPU generalist: one small Gato over four control domains, text and captions.

  python experiments/generalist.py [--workdir=~/.cache/gato_jax/generalist] [--stages=...] \
      [--config=experiments/configs/gato.py:small,generalist] [--config.train.steps=...]

The data, training and evaluation all follow `--config` (overrides included): the data stage
prepares the control tasks `config.data.mixture` names (the `generalist` preset's by default).

Stages, each resumable (a rerun continues where a kill stopped it):

- `data`: trains the experts that are trained here (gymnax PPO, DM Control SAC; DM Control from
  pixels reuses the state task's expert) unless cached, then generates --episodes expert
  episodes per control task of the `generalist` mixture (gato_jax/data/presets.py; pixel tasks
  --pixel_episodes), the text corpus and --scenes captioned scenes. Hours on two cores the first
  time: the SAC experts and the rendered pixel episodes dominate.
- `train`: the `small` Gato with the `generalist` preset of gato_jax/configs/gato.py
  (checkpoints every 100 steps).
- `eval`: prompted rollouts of every control task (the preset's episodes per task), text
  perplexity and caption scores; the table goes to the console and --workdir/eval/<step>/.
- `alone`: for each text and vision-language task of the mixture, the same model trained on that
  task alone for the sequences the mixture gave it (`recipes.alone_config`), scored the same way
  and set beside the generalist's newest evaluation (--workdir/alone/comparison.md). It needs
  no generalist checkpoint, so it may run beside `eval` (another process, `--stages=alone`); a
  rerun after the evaluation writes the comparison from the runs already trained.

Each stage's wall time is appended to --workdir/stage_times.jsonl.
"""

import json
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "disable")  # Pixel tasks render in a child process of their own.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

from gato_jax import files, launch, recipes, sharding
from gato_jax.data import catalogue, pipeline, presets
from gato_jax.envs import registry
from gato_jax.evaluation import evaluator, reports

_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/generalist", "Run directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Generated datasets.")
_EPISODES = flags.DEFINE_integer("episodes", 300, "Expert episodes per control task.")
_PIXEL_EPISODES = flags.DEFINE_integer(
  "pixel_episodes", 20, "Expert episodes per DM Control pixels task (~70 s each to render)."
)
_SCENES = flags.DEFINE_integer("scenes", 2000, "Captioned training scenes.")
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "gato.py")
  + ":small,generalist",
  "Training config (experiments/configs/gato.py:SIZE,generalist), overridable per field.",
)
_STAGES = flags.DEFINE_list(
  "stages", ["data", "train", "eval", "alone"], "Which stages to run, in order."
)
STAGES = ("data", "train", "eval", "alone")


def newest_results(workdir: str) -> dict | None:
  """The results of the newest finished evaluation under workdir/eval (one still under way has
  no results file yet); None before any."""
  names = files.listdir(files.join(workdir, "eval"))
  steps = sorted(
    int(d)
    for d in names
    if d.isdigit()
    and files.exists(files.join(reports.results_dir(workdir, int(d)), reports.RESULTS_FILE))
  )
  return reports.load(reports.results_dir(workdir, steps[-1])) if steps else None


def train_alone(cfg, workdir: str) -> str:
  """Trains and scores each text and vision-language task of the mixture alone (for the rows the
  mixture gave it) and writes the comparison with the generalist's newest evaluation; returns
  the table.

  Needs no generalist checkpoint, so it can run beside the `eval` stage; before any evaluation
  it trains and scores the alone runs and leaves the comparison to a rerun (which reuses them).
  """
  rates = pipeline.mixture_weights(cfg.data)
  alone_rows = {}
  for task in evaluator.non_control_tasks(cfg):
    alone = recipes.alone_config(cfg, task, rates[task])
    alone_dir = files.join(workdir, "alone", catalogue.seqio_name(task))
    recipes.train(alone, alone_dir)
    results = evaluator.evaluate(alone, alone_dir)  # Rows already scored are read back.
    section = next(s for s in evaluator.NON_CONTROL_SECTIONS if task in results.get(s, {}))
    alone_rows[task] = (section, results[section][task], alone.train.steps)
  generalist = newest_results(workdir)
  if generalist is None:
    scored = ", ".join(
      f"{task} {metric} {row[metric]:.4g}"
      for task, (_, row, _) in alone_rows.items()
      for metric in evaluator.NON_CONTROL_METRICS
      if row.get(metric) is not None
    )
    return (
      f"trained alone: {scored}. No evaluation under {files.join(workdir, 'eval')} yet:"
      " rerun --stages=alone after --stages=eval for the comparison."
    )
  lines = [
    f"Generalist (step {generalist.get('step')}) against the same model trained on one task"
    " alone for the sequences the mixture gave that task:",
    "",
    "| task | metric | generalist | alone | alone's steps | share of rows |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  ]
  rows = {}
  for task, (section, theirs, steps) in alone_rows.items():
    ours = generalist.get(section, {}).get(task, {})
    rows[task] = {"generalist": ours, "alone": theirs, "alone_steps": steps}
    for metric in evaluator.NON_CONTROL_METRICS:
      if theirs.get(metric) is None:
        continue
      mine = ours.get(metric)
      lines.append(
        f"| {task} | {metric} | {'n/a' if mine is None else f'{mine:.4g}'} |"
        f" {theirs[metric]:.4g} | {steps} | {rates[task]:.3f} |"
      )
  table = "\n".join(lines) + "\n"
  files.write_json(files.join(workdir, "alone", "comparison.json"), rows)
  files.write_bytes(files.join(workdir, "alone", "comparison.md"), table.encode())
  return table


def control_episodes(tasks) -> dict[str, int]:
  """Stored episodes each control task of `tasks` gets: --pixel_episodes for DM Control from
  pixels, else --episodes."""
  return {
    task: _PIXEL_EPISODES.value if task.startswith("dm_control_pixels/") else _EPISODES.value
    for task in tasks
    if not registry.is_example_task(task)
  }


def record_stage(workdir: str, stage: str, seconds: float) -> None:
  """Appends a stage's wall time (one JSON line) to workdir/stage_times.jsonl."""
  line = {"stage": stage, "seconds": round(seconds, 1), "cpus": os.cpu_count()}
  line.update(machine=platform.processor() or platform.machine(), finished=time.time())
  files.append_bytes(files.join(workdir, "stage_times.jsonl"), (json.dumps(line) + "\n").encode())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_STAGES.value) - set(STAGES))
  if unknown:
    raise app.UsageError(f"unknown stages {unknown}; stages: {', '.join(STAGES)}")
  started = time.time()
  workdir = files.resolve(_WORKDIR.value)  # A local path or a URI (gs://...).
  data_dir = os.path.expanduser(_DATA_DIR.value)
  cfg = _CONFIG.value
  cfg.data.data_dir = data_dir
  episodes = control_episodes(presets.preset_tasks(cfg.data.mixture))
  # Every stage reads the first --episodes (--pixel_episodes) of each control task's stored
  # episodes, so a data_dir holding more (or the quickstart's fewer, extended here) serves this
  # run's data exactly; the config's own entries come last and win.
  counts = ",".join(f"{task}={n}" for task, n in episodes.items())
  cfg.data.task_max_episodes = ",".join(filter(None, [counts, cfg.data.task_max_episodes]))
  # Before the data stage's expert training, the first JAX computation.
  sharding.initialize_from_config(cfg)
  for stage in (s for s in STAGES if s in _STAGES.value):
    stage_start = time.time()
    if stage == "data":
      tasks = presets.preset_tasks(cfg.data.mixture)
      recipes.prepare_data(
        tasks, data_dir, episodes, _SCENES.value, action_noise=cfg.data.action_noise
      )
    elif stage == "train":
      recipes.train(cfg, workdir)
    elif stage == "eval":
      results = evaluator.evaluate(cfg, workdir)
      print(reports.render_markdown(results))
      print(f"report in {reports.results_dir(workdir, results.get('step'))}", flush=True)
    else:
      print(train_alone(cfg, workdir), flush=True)
    record_stage(workdir, stage, time.time() - stage_start)
    print(f"{stage} done in {(time.time() - stage_start) / 60:.1f} min", flush=True)
  print(f"generalist finished in {(time.time() - started) / 60:.1f} min", flush=True)
  logging.info("done")


if __name__ == "__main__":
  launch.run(main)
