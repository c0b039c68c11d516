r"""The CPU generalist: one small Gato over five control domains, text and captions.

  python experiments/generalist.py [--workdir=~/.cache/gato_jax/generalist] [--stages=...]

Stages, each resumable (a rerun continues where a kill stopped it):

- `data`: trains the experts that are trained here (gymnax PPO, DM Control SAC; DM Control from
  pixels reuses the state task's expert) unless cached, then generates --episodes expert
  episodes per control task of the `generalist` mixture (gato_jax/data/presets.py; pixel tasks
  --pixel_episodes), the text corpus and --scenes captioned scenes. Hours on two cores the first time: the SAC experts and
  the rendered pixel episodes dominate.
- `train`: the `small` Gato with the `generalist` preset of experiments/configs/gato.py
  (checkpoints every 100 steps).
- `eval`: prompted rollouts of every control task (the preset's episodes per task), text
  perplexity and caption scores; the table goes to the console and --workdir/eval/<step>/.
"""

import os
import time

os.environ.setdefault("MUJOCO_GL", "disable")  # Pixel tasks render in a child process of their own.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from gato_jax import console, launch, recipes
from gato_jax.data import presets
from gato_jax.evaluation import evaluator, reports

_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/generalist", "Run directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Generated datasets.")
_EPISODES = flags.DEFINE_integer("episodes", 60, "Expert episodes per control task.")
_PIXEL_EPISODES = flags.DEFINE_integer(
  "pixel_episodes", 20, "Expert episodes per DM Control pixels task (~70 s each to render)."
)
_SCENES = flags.DEFINE_integer("scenes", 2000, "Captioned training scenes.")
_SIZE = flags.DEFINE_string("size", "small", "Model size (experiments/configs/gato.py).")
_STAGES = flags.DEFINE_list("stages", ["data", "train", "eval"], "Which stages to run, in order.")
STAGES = ("data", "train", "eval")


def config(size: str, data_dir: str):
  """The generalist's training config (`<size>,generalist`) over `data_dir`."""
  cfg = recipes.load_config_file("gato.py").get_config(f"{size},generalist")
  cfg.data.data_dir = data_dir
  return cfg


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_STAGES.value) - set(STAGES))
  if unknown:
    raise app.UsageError(f"unknown stages {unknown}; stages: {', '.join(STAGES)}")
  started = time.time()
  workdir = os.path.expanduser(_WORKDIR.value)
  data_dir = os.path.expanduser(_DATA_DIR.value)
  print(f"full logs in {console.log_to_file(workdir, 'generalist')}", flush=True)
  cfg = config(_SIZE.value, data_dir)
  if "data" in _STAGES.value:
    tasks = presets.preset_tasks(cfg.data.mixture)
    episodes = {
      task: _PIXEL_EPISODES.value if task.startswith("dm_control_pixels/") else _EPISODES.value
      for task in tasks
    }
    recipes.prepare_data(tasks, data_dir, episodes, _SCENES.value)
    print(f"data ready after {(time.time() - started) / 60:.1f} min", flush=True)
  if "train" in _STAGES.value:
    recipes.train(cfg, workdir)
  if "eval" in _STAGES.value:
    results = evaluator.evaluate(cfg, workdir)
    print(reports.render_markdown(results))
    print(f"report in {reports.results_dir(workdir, results.get('step'))}", flush=True)
  print(f"generalist finished in {(time.time() - started) / 60:.1f} min", flush=True)
  logging.info("done")


if __name__ == "__main__":
  launch.run(main)
