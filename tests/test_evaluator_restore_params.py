"""Evaluation restores a trained checkpoint's parameters alone, without any optimizer code."""

import json

import jax
import numpy as np

from gato_jax import checkpoint, sharding
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import abstract_train_state, initial_train_state

from helpers.configs import smoke_config
from helpers.scripts import run_python

# In a new process: restore through the evaluator, save the parameters by path, and report the
# step and which training modules and optimizer library were ever imported.
RESTORE = """
import json, sys
import jax, ml_collections, numpy as np
from gato_jax.evaluation import evaluator
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
params, step = evaluator.restore_params(config, sys.argv[2])
leaves = jax.tree_util.tree_leaves_with_path(params)
np.savez(sys.argv[3], **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})
shards = {len(x.sharding.device_set) for _, x in leaves}
loaded = sorted(m for m in sys.modules if m.startswith(("gato_jax.training", "optax")))
print(json.dumps({"step": step, "loaded": loaded, "shards": sorted(shards)}))
"""


def test_evaluation_restores_a_checkpoint_without_optimizer_code(data_dir, tmp_path, smoke_run):
  config = smoke_config(data_dir)
  workdir, _ = smoke_run  # Four steps, saved at 2 and 4.
  # The state as the trainer would resume it, optimizer state included.
  mesh = sharding.create_mesh(tuple(config.mesh.shape))
  abstract, trainer = abstract_train_state(
    ModelConfig.from_dict(config.model),
    OptimizerConfig.from_dict(config.optimizer),
    mesh,
    config.mesh.rules,
  )
  trained = checkpoint.Checkpointer(str(workdir / checkpoint.CHECKPOINTS_DIR)).restore(abstract)
  assert trained.step == 4
  initial = initial_train_state(trainer, jax.random.key(config.train.seed))
  kernel = lambda params: np.asarray(params["decoder"]["layers"]["mlp"]["up"]["kernel"])
  assert not np.array_equal(kernel(trained.state.params), kernel(initial.params))  # Trained.

  out = run_python(
    "-c", RESTORE, config.to_json(), str(workdir), str(tmp_path / "params.npz"), timeout=600
  )
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["step"] == 4
  # Only the loss's module of the training package: no train step, optimizer or optax.
  assert report["loaded"] == ["gato_jax.training", "gato_jax.training.loss"]
  assert report["shards"] == [len(jax.devices())]  # Read into the config's (2, 2, 2) mesh.
  restored = np.load(tmp_path / "params.npz")
  leaves = jax.tree_util.tree_leaves_with_path(trained.state.params)
  assert sorted(restored.files) == sorted(jax.tree_util.keystr(p) for p, _ in leaves)
  for path, leaf in leaves:
    np.testing.assert_array_equal(restored[jax.tree_util.keystr(path)], np.asarray(leaf))
