r"""The CPU quickstart: generate expert data, train a small Gato, evaluate it, print a table.

  python experiments/quickstart.py [--workdir=~/.cache/gato_jax/quickstart]

Work in progress (not yet README's main command): with the defaults below the trained agent is
only slightly better than random (about 10% of expert on the two BabyAI levels after 400
steps, 7 minutes on two cores), not the wide margin the quickstart must show.

1. Generates BabyAI GoToRedBall and GoToLocal episodes with minigrid's bot (and the random
   and expert returns that anchor normalised scores) into --data_dir.
2. Trains the `small` model with the `quickstart` preset (experiments/configs/gato.py).
3. Plays prompted rollouts in the real environments and prints per-task returns and
   expert-normalised scores (the report is also written under --workdir/eval/).

Every stage resumes: a rerun reuses finished data, continues training from the newest
checkpoint, and re-evaluates.
"""

import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "disable")

from absl import app, flags, logging

from gato_jax import train
from gato_jax.data import generation
from gato_jax.evaluation import evaluator, reports

_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/quickstart", "Run directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Generated datasets.")
_EPISODES = flags.DEFINE_integer("episodes", 60, "Expert episodes per task.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 50, "Rollouts per task.")

TASKS = ("gymnax/CartPole-v1",)
MIXTURE = "gato.gymnax.CartPole_v1=1"
RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "experts",
                       "gymnax.py")


def _ensure_cartpole_expert() -> None:
  """Trains the CartPole PPO expert unless it is cached (gymnax_experts' default directory)."""
  import importlib.util

  from gato_jax.experts import gymnax_experts

  spec = importlib.util.spec_from_file_location("gymnax_expert_recipes", RECIPES)
  recipes = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipes)
  summary = gymnax_experts.train_and_evaluate(recipes.get_config("CartPole-v1"))
  print(f"CartPole expert: {summary}", flush=True)


def _config():
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs"))
  import gato  # experiments/configs/gato.py

  config = gato.get_config("small,quickstart")
  config.data.data_dir = _DATA_DIR.value
  config.data.mixture = MIXTURE
  config.train.steps = _STEPS.value
  config.optimizer.decay_steps = _STEPS.value
  config.eval.tasks = ",".join(TASKS)
  config.eval.episodes = _EVAL_EPISODES.value
  return config


def main(argv):
  del argv
  started = time.time()
  workdir = os.path.expanduser(_WORKDIR.value)
  _ensure_cartpole_expert()
  rows = [generation.generate_task(task, os.path.expanduser(_DATA_DIR.value), _EPISODES.value)
          for task in TASKS]
  print(generation.format_table(rows), flush=True)
  config = _config()
  train.train_and_evaluate(config, workdir)
  results = evaluator.evaluate(config, workdir)
  print(reports.render_markdown(results))
  print(f"quickstart finished in {(time.time() - started) / 60:.1f} min; report in"
        f" {reports.results_dir(workdir, results.get('step'))}")
  logging.info("done")


if __name__ == "__main__":
  app.run(main)
