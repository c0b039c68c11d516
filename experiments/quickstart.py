r"""The CPU quickstart: expert data, a small Gato trained on it, prompted rollouts, a table.

  python experiments/quickstart.py [--workdir=~/.cache/gato_jax/quickstart] [--seed=0]

README's first command; its stages' times on two CPU cores are in docs/training.md.

1. Trains the gymnax PPO experts of CartPole and Acrobot unless they are cached
   (tools/train_expert.py; PPO seeds until one reaches the bar) and generates 60 of their
   episodes per task, with the random and expert returns that anchor normalised scores, under
   --data_dir.
2. Trains the `small` Gato (5.2M parameters), one set of weights for both tasks, with the
   `quickstart` preset of gato_jax/configs/gato.py (300 steps of 16 x 256 tokens).
3. Plays 32 prompted rollouts per task of that model in the real environments (a successful
   demonstration of the task as the prompt, actions decoded with the key/value cache) and prints
   returns and expert-normalised scores (also written, with a bar chart, under
   --workdir/eval/<step>/).

Every stage resumes: a rerun reuses finished data, continues training from the newest checkpoint
(a finished run is not retrained) and evaluates again.
"""

import os
import time

os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up notices.

from absl import app, flags, logging

from gato_jax import files, launch, recipes
from gato_jax.configs import gato
from gato_jax.evaluation import evaluator, reports

_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/quickstart", "Run directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Generated datasets.")
_EPISODES = flags.DEFINE_integer("episodes", 60, "Expert episodes per control task.")
_STEPS = flags.DEFINE_integer("steps", 0, "Training steps (0: the quickstart preset's).")
_EVAL_EPISODES = flags.DEFINE_integer(
  "eval_episodes", 0, "Rollouts per control task (0: the preset's)."
)
_SEED = flags.DEFINE_integer(
  "seed", 0, "Seed of the model's init, the data stream and the evaluation rollouts."
)

CONTROL_TASKS = ("gymnax/CartPole-v1", "gymnax/Acrobot-v1")


def _config(data_dir: str):
  config = gato.get_config("small,quickstart")
  config.data.data_dir = data_dir
  # The first --episodes of each task's stored episodes: a data_dir where a larger run (the
  # generalist) stored more serves the quickstart's data unchanged.
  config.data.max_episodes_per_task = _EPISODES.value
  if _STEPS.value:
    config.train.steps = config.optimizer.decay_steps = _STEPS.value
  if _EVAL_EPISODES.value:
    config.eval.episodes = _EVAL_EPISODES.value
  # One seed for the whole run, so runs with different seeds differ in every stochastic stage
  # (the expert data, generated once under data_dir, is shared).
  config.train.seed = config.data.seed = config.eval.seed = _SEED.value
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  started = time.time()
  workdir = files.resolve(_WORKDIR.value)
  data_dir = os.path.expanduser(_DATA_DIR.value)
  recipes.prepare_data(CONTROL_TASKS, data_dir, _EPISODES.value)
  config = _config(data_dir)
  recipes.train(config, workdir)
  results = evaluator.evaluate(config, workdir)
  print(reports.render_markdown(results))
  print(
    f"quickstart finished in {(time.time() - started) / 60:.1f} min; report in"
    f" {reports.results_dir(workdir, results.get('step'))}"
  )
  logging.info("done")


if __name__ == "__main__":
  launch.run(main)
