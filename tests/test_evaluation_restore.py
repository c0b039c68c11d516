"""Checkpoint parameters restored onto a mesh's shardings, and evaluated there."""

import jax
import numpy as np
import pytest

from gato_jax import sharding
from gato_jax.sources import episodes as E
from gato_jax.evaluation import evaluator

from helpers.checkpoints import save_initial_state


def _config(data_dir):
  from gato_jax.configs import gato

  config = gato.get_config("tiny")
  config.data.data_dir = str(data_dir)
  config.model.max_decode_length = 64
  config.eval.update(
    tasks="gymnax/CartPole-v1",
    episodes=2,
    batch_size=2,
    prompt_tokens=0,
    max_steps=3,
    bootstrap_resamples=10,
  )
  return config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A checkpoint written by a one-device trainer; returns (workdir, its train state)."""
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices (tests/conftest.py forces 8 host devices)")
  workdir = tmp_path_factory.mktemp("run")
  config = _config(workdir)
  return workdir, save_initial_state(config, workdir, 3)


def test_params_restore_into_their_shards_on_another_mesh(saved):
  workdir, state = saved
  config = _config(workdir)
  config.mesh.shape, config.mesh.rules = (-1, 4, 1), "fsdp"
  params, step = evaluator.restore_params(config, str(workdir))
  assert step == 3
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  specs = {jax.tree_util.keystr(path): leaf.sharding.spec for path, leaf in leaves}
  assert all(len(leaf.sharding.device_set) == len(jax.devices()) for _, leaf in leaves)
  # The fsdp rules split every "embed" axis over the 4 fsdp devices: each device holds a
  # quarter of such a leaf, so no device holds the whole state.
  split = [(path, leaf) for path, leaf in leaves if "fsdp" in leaf.sharding.spec]
  assert split, specs
  for _, leaf in split:
    shard = leaf.addressable_shards[0].data
    assert shard.size * 4 == leaf.size


def test_evaluate_runs_on_sharded_params(saved):
  workdir, _ = saved
  config = _config(workdir)
  config.mesh.shape = (-1, 2, 1)
  E.save_stats(E.TaskStats("gymnax/CartPole-v1", 20.0, 5.0, 5, expert_return=500.0), str(workdir))
  results = evaluator.evaluate(config, str(workdir))
  one_device = _config(workdir)
  one_device.mesh.shape = (1, 1, 1)
  params, _ = evaluator.restore_params(
    one_device, str(workdir), mesh=sharding.create_mesh((1, 1, 1), jax.devices()[:1])
  )
  reference = evaluator.evaluate(one_device, str(workdir / "one"), params=params, step=3)
  assert results["step"] == 3
  assert results["tasks"] == reference["tasks"]


def test_a_rerun_evaluation_takes_the_tasks_it_finished(saved, tmp_path, monkeypatch):
  workdir, state = saved
  config = _config(workdir)
  E.save_stats(E.TaskStats("gymnax/CartPole-v1", 20.0, 5.0, 5, expert_return=500.0), str(workdir))
  out = str(tmp_path / "report")
  first = evaluator.evaluate(config, str(workdir), output_dir=out)
  saved_task = tmp_path / "report" / "tasks" / "gato.gymnax.CartPole_v1.json"
  assert saved_task.is_file()
  played = []
  real = evaluator.evaluate_task
  monkeypatch.setattr(
    evaluator, "evaluate_task", lambda task, *a, **k: played.append(task) or real(task, *a, **k)
  )
  again = evaluator.evaluate(config, str(workdir), output_dir=out)
  assert played == [] and again["tasks"] == first["tasks"]
  assert again["domains"] == first["domains"]
  # Naming the task list or resampling the summary differently does not replay a task.
  config.eval.tasks, config.eval.bootstrap_resamples = "gymnax/CartPole-v1", 10
  evaluator.evaluate(config, str(workdir), output_dir=out)
  assert played == []
  # Other settings, other parameters or a file cut short: the task is played again.
  config.eval.seed = 1
  evaluator.evaluate(config, str(workdir), output_dir=out)
  assert played == ["gymnax/CartPole-v1"]
  params = jax.tree.map(lambda x: x * 1.01, state.params)
  evaluator.evaluate(config, str(workdir), params=params, step=3, output_dir=out)
  assert played == ["gymnax/CartPole-v1"] * 2
  saved_task.write_text(saved_task.read_text()[:40])
  evaluator.evaluate(config, str(workdir), params=params, step=3, output_dir=out)
  assert played == ["gymnax/CartPole-v1"] * 3
  # A task whose expert was measured again is scored against the new baseline.
  E.save_stats(E.TaskStats("gymnax/CartPole-v1", 20.0, 5.0, 5, expert_return=400.0), str(workdir))
  rescored = evaluator.evaluate(config, str(workdir), params=params, step=3, output_dir=out)
  assert played == ["gymnax/CartPole-v1"] * 4
  assert rescored["stats"]["gymnax/CartPole-v1"]["expert_return"] == 400.0
