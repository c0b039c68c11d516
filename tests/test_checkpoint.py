"""Checkpoints: round trip with the data state, other mesh shapes, keep policy, corruption."""

import dataclasses
import errno
import functools
import os
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gato_jax import sharding
from gato_jax.checkpoint import (
  Checkpointer,
  CheckpointError,
  CheckpointMismatchError,
  CheckpointWriteError,
)
from gato_jax.model import ModelConfig, abstract_params
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import abstract_train_state, create_train_state

TINY = ModelConfig.from_size("tiny")
OPT = OptimizerConfig(warmup_steps=2, decay_steps=20)


def _mesh(shape):
  return sharding.create_mesh(shape, jax.devices()[: int(np.prod(shape))])


# Built once per mesh for the whole module: tests save and compare states, never change them.
@functools.cache
def _state(shape, rules="fsdp_tensor"):
  return create_train_state(TINY, OPT, _mesh(shape), rules, jax.random.key(0))


def _abstract(state, trainer):
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, trainer.state_shardings
  )


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_on_eight_devices_restore_on_one_and_four(tmp_path):
  state, _ = _state((2, 2, 2))
  ckpt = Checkpointer(str(tmp_path), keep_last=2)
  ckpt.save(10, state, data_state={"epoch": 3, "position": [1, 2]})
  ckpt.wait()
  for shape, rules in [((1, 1, 1), "fsdp"), ((1, 4, 1), "fsdp"), ((2, 1, 2), "fsdp_tensor")]:
    # The target holds shapes and shardings, no values: what is restored comes from the files.
    target, trainer = abstract_train_state(TINY, OPT, _mesh(shape), rules)
    restored = Checkpointer(str(tmp_path)).restore(target)
    assert restored.step == 10
    assert restored.data_state == {"epoch": 3, "position": [1, 2]}
    _assert_same(restored.state, state)
    kernel = restored.state.params["decoder"]["layers"]["mlp"]["up"]["kernel"]
    assert (
      kernel.sharding == trainer.state_shardings.params["decoder"]["layers"]["mlp"]["up"]["kernel"]
    )
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


def _damage(step_dir):
  damaged = 0
  for path in pathlib.Path(step_dir, "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"\0" * 7)
      damaged += 1
  assert damaged


def test_corrupt_newest_checkpoint_is_quarantined_and_saved_again(tmp_path):
  state, trainer = _state((1, 1, 1), "fsdp")
  ckpt = Checkpointer(str(tmp_path), keep_last=2, keep_best=0, async_save=False)
  ckpt.save(1, state, data_state={"position": 1})
  ckpt.save(2, state, data_state={"position": 2})
  _damage(tmp_path / "2")
  healing = Checkpointer(str(tmp_path), keep_last=2, keep_best=0, async_save=False)
  restored = healing.restore(_abstract(state, trainer), quarantine=True)
  assert restored.step == 1
  (moved,) = os.listdir(tmp_path / "quarantine")  # Moved aside, not deleted.
  assert moved.startswith("2-") and os.listdir(tmp_path / "quarantine" / moved)
  assert healing.all_steps() == [1]
  # The recomputed step is written again, and retention keeps it and its good predecessor.
  healing.save(2, state, data_state={"position": 22})
  healing.save(3, state, data_state={"position": 3})
  assert healing.all_steps() == [2, 3]
  again = Checkpointer(str(tmp_path)).restore(_abstract(state, trainer), step=2)
  assert again.data_state == {"position": 22}
  _assert_same(again.state, state)


def test_checkpoint_of_another_model_size_names_the_shapes(tmp_path):
  state, _ = _state((1, 1, 1), "fsdp")
  Checkpointer(str(tmp_path), async_save=False).save(1, state)
  other, _ = abstract_train_state(
    dataclasses.replace(TINY, num_layers=3), OPT, _mesh((1, 1, 1)), "fsdp"
  )
  with pytest.raises(
    CheckpointMismatchError,
    match=r"checkpoint 1 in .* holds another model: params\.decoder\.layers\."
    r"\w+\.\w+ has shape \(2, .*\) there but \(3, .*\) here",
  ):
    Checkpointer(str(tmp_path)).restore(other, quarantine=True)
  assert os.listdir(tmp_path) == ["1"]  # A good checkpoint of another model is never moved.


@pytest.mark.parametrize("async_save", [False, True])
def test_write_failure_is_one_error_and_leaves_no_temporary_folder(
  tmp_path, monkeypatch, async_save
):
  state, trainer = _state((1, 1, 1), "fsdp")
  ckpt = Checkpointer(str(tmp_path), keep_best=0, async_save=async_save)
  ckpt.save(1, state, data_state={"position": 1})
  ckpt.wait()

  async def full_disk(self, item, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
  with pytest.raises(CheckpointWriteError) as raised:
    ckpt.save(2, state, data_state={"position": 2})
    ckpt.wait()
  assert str(raised.value) == (
    f"could not write checkpoint {tmp_path}/2: no space left on device;"
    " the earlier checkpoints are intact"
  )
  monkeypatch.undo()
  ckpt.close()
  assert os.listdir(tmp_path) == ["1"]  # No N.orbax-checkpoint-tmp-* left behind.
  assert Checkpointer(str(tmp_path)).restore(_abstract(state, trainer)).data_state == {
    "position": 1
  }


def test_params_alone_restore_onto_another_mesh_and_refuse_another_model(tmp_path):
  state, _ = _state((2, 2, 2))
  Checkpointer(str(tmp_path), async_save=False).save(5, state, data_state={"position": 1})
  mesh = _mesh((1, 4, 1))
  abstract, shardings = abstract_params(TINY, mesh, "fsdp")
  assert jax.tree.structure(abstract) == jax.tree.structure(state.params)
  params, step = Checkpointer(str(tmp_path)).restore_params(abstract)
  assert step == 5
  _assert_same(params, state.params)
  flat = zip(jax.tree.leaves(params), jax.tree.leaves(shardings))
  assert all(leaf.sharding == wanted for leaf, wanted in flat)
  other, _ = abstract_params(dataclasses.replace(TINY, num_layers=3), mesh, "fsdp")
  with pytest.raises(
    CheckpointMismatchError,
    match=r"holds another model: params\.decoder\.layers\.\w+\.\w+ has shape \(2, .*\) there but"
    r" \(3, .*\) here",
  ):
    Checkpointer(str(tmp_path)).restore_params(other)
