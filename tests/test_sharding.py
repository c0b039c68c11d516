"""Meshes, rules and the sharded train step on 8 fake CPU devices (see conftest.py)."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gato_jax import sharding
from gato_jax import tokenizer as T
from gato_jax.model import ModelConfig, batch_from_token_groups
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import (
  abstract_train_state,
  batch_shardings,
  compute_gradients,
  create_train_state,
  make_train_step,
)

TINY = ModelConfig.from_size("tiny")  # Stochastic depth on: the rng path is exercised too.
OPT = OptimizerConfig(peak_learning_rate=1e-3, warmup_steps=2, decay_steps=20)


def test_eight_fake_devices():
  assert jax.device_count() == 8


def test_mesh_shapes_and_errors():
  assert sharding.resolve_mesh_shape((-1, 2, 1), 8) == (4, 2, 1)
  assert sharding.create_mesh((2, 2, 2)).shape == {"data": 2, "fsdp": 2, "tensor": 2}
  assert sharding.create_mesh((1, -1, 1)).shape["fsdp"] == 8
  with pytest.raises(ValueError, match="needs 12 devices, but 8"):
    sharding.resolve_mesh_shape((3, 2, 2), 8)
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    sharding.resolve_mesh_shape((-1, 3, 1), 8)
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.resolve_mesh_shape((-1, -1, 2), 8)
  with pytest.raises(ValueError, match="unknown sharding rules 'zero'"):
    sharding.axis_rules("zero")
  with pytest.raises(ValueError, match="unknown mesh axis"):
    sharding.axis_rules([("embed", "model")])


def _batch():
  rng = np.random.default_rng(0)
  groups = []
  for seed in range(8):
    spec = {"camera": T.ImageSpec(), "mission": T.TextSpec(), "proprio": T.ContinuousSpec((4,))}
    obs = {
      "camera": rng.integers(0, 256, (2, 16, 32, 3), dtype=np.uint8),
      "mission": rng.integers(0, 32000, (2, 3)),
      "proprio": rng.standard_normal((2, 4)).astype(np.float32),
    }
    act = rng.integers(0, 5, (2,)).astype(np.int32)
    groups.append(T.tokenize_episode(obs, act, spec, T.DiscreteSpec((), num_values=5)))
  return batch_from_token_groups(groups, 32, 4, TINY.patch_dim)


def _run(shape, rules):
  """One step on a mesh of `shape`; returns (state after it, its metrics, its gradients)."""
  mesh = sharding.create_mesh(shape, jax.devices()[: int(np.prod(shape))])
  state, trainer = create_train_state(TINY, OPT, mesh, rules, jax.random.key(0))
  batch = _batch()
  rng = jax.random.key(7)
  grads_fn = jax.jit(
    functools.partial(compute_gradients, trainer=trainer),
    in_shardings=(
      trainer.state_shardings.params,
      batch_shardings(trainer, batch),
      sharding.replicated(mesh),
    ),
  )
  with jax.set_mesh(mesh):
    _, grads = grads_fn(state.params, batch, jax.random.fold_in(rng, 0))
  state, metrics = make_train_step(trainer, batch)(state, batch, rng)
  return state, metrics, grads


@pytest.fixture(scope="module")
def runs():
  return {"single": _run((1, 1, 1), "fsdp_tensor"), "sharded": _run((2, 2, 2), "fsdp_tensor")}


def test_sharded_step_matches_single_device(runs):
  _, single, single_grads = runs["single"]
  _, sharded, sharded_grads = runs["sharded"]
  for key in ("loss", "grad_norm", "accuracy_action", "accuracy_text"):
    np.testing.assert_allclose(sharded[key], single[key], rtol=2e-5, err_msg=key)
  assert float(single["loss"]) > 1.0
  # Float tolerance relative to the gradient's overall scale: some gradients are exactly zero in
  # exact arithmetic (a conv bias before GroupNorm) and only rounding noise in practice.
  scale = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(single_grads))
  leaves = jax.tree_util.tree_leaves_with_path(single_grads)
  for (path, a), b in zip(leaves, jax.tree.leaves(sharded_grads)):
    np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), atol=1e-5 * scale, rtol=1e-3, err_msg=jax.tree_util.keystr(path)
    )


def test_parameters_are_sharded_as_the_rules_say(runs):
  params = runs["sharded"][0].params
  up = params["decoder"]["layers"]["mlp"]["up"]["kernel"]  # [layers, embed, mlp]
  assert up.sharding.spec == P(None, "fsdp", "tensor")
  assert up.addressable_shards[0].data.shape == (2, 8, 32)  # (2, 16, 64) split 2 x 2.
  query = params["decoder"]["layers"]["attention"]["query"]  # [layers, embed, heads, kv]
  assert query.sharding.spec == P(None, "fsdp", "tensor", None)
  assert params["embedder"]["token_embedding"].sharding.spec == P(None, "fsdp")
  # Adam moments follow their parameters.
  mu = runs["sharded"][0].opt_state[1][0].mu["decoder"]["layers"]["mlp"]["up"]["kernel"]
  assert mu.sharding.spec == P(None, "fsdp", "tensor")
  mesh = sharding.create_mesh((8, 1, 1))
  dp_state, _ = abstract_train_state(TINY, OPT, mesh, "data_parallel")  # Shardings, no values.
  assert dp_state.params["decoder"]["layers"]["mlp"]["up"]["kernel"].sharding.is_fully_replicated


def test_batch_sharding():
  mesh = sharding.create_mesh((2, 2, 2))
  assert sharding.batch_sharding(mesh, "fsdp_tensor", 3).spec == P(("data", "fsdp"), None, None)
