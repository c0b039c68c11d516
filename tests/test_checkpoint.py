"""Checkpoints: round trip with the data state, other mesh shapes, keep policy, corruption."""

import os
import pathlib

import jax
import numpy as np
import pytest

from gato_jax import sharding
from gato_jax.checkpoint import Checkpointer, CheckpointError
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import create_train_state

TINY = ModelConfig.from_size("tiny")
OPT = OptimizerConfig(warmup_steps=2, decay_steps=20)


def _state(shape, rules="fsdp_tensor", seed=0):
  mesh = sharding.create_mesh(shape, jax.devices()[:int(np.prod(shape))])
  return create_train_state(TINY, OPT, mesh, rules, jax.random.key(seed))


def _abstract(state, trainer):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                      trainer.state_shardings)


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_on_eight_devices_restore_on_one_and_four(tmp_path):
  state, _ = _state((2, 2, 2))
  ckpt = Checkpointer(str(tmp_path), keep_last=2)
  ckpt.save(10, state, data_state={"epoch": 3, "position": [1, 2]})
  ckpt.wait()
  for shape, rules in [((1, 1, 1), "fsdp"), ((1, 4, 1), "fsdp"), ((2, 1, 2), "fsdp_tensor")]:
    target, trainer = _state(shape, rules, seed=1)
    restored = Checkpointer(str(tmp_path)).restore(_abstract(target, trainer))
    assert restored.step == 10
    assert restored.data_state == {"epoch": 3, "position": [1, 2]}
    _assert_same(restored.state, state)
    kernel = restored.state.params["decoder"]["layers"]["mlp"]["up"]["kernel"]
    assert kernel.sharding == trainer.state_shardings.params["decoder"]["layers"]["mlp"]["up"]["kernel"]
    assert len(kernel.sharding.device_set) == int(np.prod(shape))


def test_keep_last_and_best(tmp_path):
  state, trainer = _state((1, 1, 1), "fsdp")
  ckpt = Checkpointer(str(tmp_path), keep_last=2, keep_best=1, best_metric="score")
  scores = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: 0.4}
  for step, score in scores.items():
    ckpt.save(step, state, metrics={"score": score})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 4, 5]  # The last two, and the best (step 2).
  ckpt.save(5, state)  # An existing step is never rewritten.
  assert ckpt.latest_step() == 5


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
  state, trainer = _state((1, 1, 1), "fsdp")
  ckpt = Checkpointer(str(tmp_path), keep_last=5, keep_best=0, async_save=False)
  ckpt.save(1, state, data_state={"position": 1})
  ckpt.save(2, state, data_state={"position": 2})
  # Damage every data file of the newest checkpoint's state.
  damaged = 0
  for path in pathlib.Path(tmp_path, "2", "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"\0" * 7)
      damaged += 1
  assert damaged
  restored = Checkpointer(str(tmp_path)).restore(_abstract(state, trainer))
  assert restored.step == 1 and restored.data_state == {"position": 1}
  assert sorted(os.listdir(tmp_path)) >= ["1", "2"]  # Nothing was deleted.
  with pytest.raises(CheckpointError, match="step 2"):
    Checkpointer(str(tmp_path)).restore(_abstract(state, trainer), step=2)


def test_empty_directory_is_a_clear_error(tmp_path):
  state, trainer = _state((1, 1, 1), "fsdp")
  with pytest.raises(CheckpointError, match="no checkpoints in"):
    Checkpointer(str(tmp_path / "empty")).restore(_abstract(state, trainer))
