r"""Trains Gato: a thin absl launcher around gato_jax.train.train_and_evaluate.

  python experiments/train.py --config=experiments/configs/gato.py:tiny,smoke --workdir=/tmp/gato
  python experiments/train.py --config=experiments/configs/gato.py:79m --workdir=gs://... \
      --config.train.steps=100 --config.mesh.shape=2,2,2 --config.data.mixture=paper

Rerunning the same command resumes from the newest checkpoint in --workdir. On a multi-host
slice run the same command on every host with --config.mesh.multi_host=true. A SIGTERM (a
preemption notice) to any host saves a checkpoint at one step on every host and exits with status
42 (`gato_jax.train.PREEMPTED_EXIT_CODE`): start the same command again to resume.
"""

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # State-based environments need no renderer.

from absl import app, flags
from ml_collections import config_flags

from gato_jax import launch, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  launch.run(main)
