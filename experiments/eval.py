r"""Evaluates a Gato checkpoint: a thin absl launcher around gato_jax.evaluation.evaluate.

  python experiments/eval.py --config=experiments/configs/gato.py:tiny,quickstart \
      --workdir=/tmp/gato --config.eval.episodes=10
  python experiments/eval.py --config=experiments/configs/gato.py:79m --workdir=DIR \
      --checkpoint_step=100000 --config.eval.tasks=babyai/GoToRedBall,gymnax/CartPole-v1

  python experiments/eval.py --config=experiments/configs/gato.py:79m --workdir=DIR \
      --config.eval.tasks=text/cpython_docs,vision_language/shapes_captions,vision_language/shapes_vqa \
      --config.mesh.shape=1,-1,1

Restores the newest checkpoint in --workdir (or --checkpoint_step) straight into its shards on
the config's mesh (`mesh.shape`, `mesh.rules`: the fsdp mesh above splits a large model over
every device), plays the config's eval rollouts (gymnax tasks stepped under jit + vmap unless
`eval.jit_envs=false`), scores the text and vision-language tasks on `eval.non_control_examples`
held-out examples each, and writes DIR/eval/STEP/{results.json,results.md,normalized_scores.png}
(or to --output_dir).

Evaluation runs on one host: with `mesh.multi_host=true` it joins the job and then refuses in one
line; on a pod, run it on one worker with `--config.mesh.multi_host=false`.
"""

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # State-based environments need no renderer.

from absl import app, flags
from ml_collections import config_flags

from gato_jax import launch, sharding
from gato_jax.evaluation import evaluator, reports

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_CHECKPOINT_STEP = flags.DEFINE_integer(
  "checkpoint_step", None, "Checkpoint to evaluate (default: the newest)."
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", None, "Where the reports go (default: WORKDIR/eval/STEP), e.g. one per variant."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Joined first, so that on a pod the evaluator's one-host refusal is what the user reads.
  sharding.initialize_from_config(_CONFIG.value)
  results = evaluator.evaluate(
    _CONFIG.value, _WORKDIR.value, step=_CHECKPOINT_STEP.value, output_dir=_OUTPUT_DIR.value
  )
  print(reports.render_markdown(results))


if __name__ == "__main__":
  launch.run(main)
