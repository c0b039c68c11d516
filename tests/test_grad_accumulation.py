"""The train step: `train.microbatches` gives the one large batch's update, and the programs
compiled per budget stay within the process's memory mappings."""

import dataclasses

import jax
import numpy as np
import pytest

from gato_jax import sharding
from gato_jax import tokenizer as T
from gato_jax.model import Batch, ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training import step as step_lib
from gato_jax.training.step import create_train_state, host_budget, make_train_step

TINY = ModelConfig.from_size("tiny", stochastic_depth=0.0)


def _batch(rows=8, seq_len=40, seed=0) -> Batch:
  """Value tokens, packed segments and padding; rows hold different numbers of targets."""
  rng = np.random.default_rng(seed)
  segments = np.ones((rows, seq_len), np.int32)
  for r in range(rows):
    segments[r, rng.integers(8, 30) :] = 2  # A second packed episode...
    segments[r, seq_len - rng.integers(0, 8) :] = 0  # ...then padding.
  loss_mask = (rng.random((rows, seq_len)) < np.linspace(0.1, 0.6, rows)[:, None]) & (segments > 0)
  return Batch(
    tokens=rng.integers(T.VALUE_OFFSET, T.SEPARATOR_ID, (rows, seq_len)).astype(np.int32),
    kinds=np.full((rows, seq_len), T.TokenKind.VALUE, np.int32),
    local_positions=np.tile(np.arange(seq_len, dtype=np.int32) % 6, (rows, 1)),
    loss_mask=loss_mask,
    segment_ids=segments,
    patches=np.zeros((rows, 0, TINY.patch_dim), np.float32),
    patch_rows=np.zeros((rows, 0, 2), np.float32),
    patch_cols=np.zeros((rows, 0, 2), np.float32),
  )


@pytest.mark.parametrize("logits_at_targets", [False, True])
def test_microbatches_give_the_large_batch_update(logits_at_targets):
  mesh = sharding.create_mesh((2, 2, 1), jax.devices()[:4])
  opt = OptimizerConfig(peak_learning_rate=1e-3, warmup_steps=1, decay_steps=10)
  batch = _batch()
  results = {}
  for microbatches in (1, 4):
    state, trainer = create_train_state(TINY, opt, mesh, "fsdp", jax.random.key(0))
    budget = host_budget(trainer, batch, microbatches, logits_at_targets)
    # 4 batch shards: a group each of 2 rows; a microbatch of 2 rows has a group per row.
    assert budget.groups == (4 if microbatches == 1 else 2)
    assert (budget.targets is not None) == logits_at_targets
    step = make_train_step(trainer, batch, microbatches)
    for i in range(2):
      state, metrics = step(state, batch, jax.random.key(i), budget)
    results[microbatches] = jax.device_get((state.params, metrics))
  (params_1, metrics_1), (params_4, metrics_4) = results[1], results[4]
  assert metrics_1.keys() == metrics_4.keys()
  for key in metrics_1:
    np.testing.assert_allclose(metrics_4[key], metrics_1[key], rtol=2e-5, atol=1e-6, err_msg=key)
  assert metrics_4["target_tokens"] == batch.loss_mask[:, 1:].sum() - np.sum(
    batch.loss_mask[:, 1:] & (batch.segment_ids[:, 1:] != batch.segment_ids[:, :-1])
  )
  for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_4)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_microbatches_must_divide_the_batch():
  mesh = sharding.create_mesh((1, 1, 1), jax.devices()[:1])
  state, trainer = create_train_state(TINY, OptimizerConfig(), mesh, "fsdp", jax.random.key(0))
  batch = _batch(rows=6)
  with pytest.raises(
    ValueError, match="train.microbatches=4 does not divide the global batch of 6"
  ):
    make_train_step(trainer, batch, 4)(state, batch, jax.random.key(0))


def test_least_recently_used_programs_go_when_mappings_run_short(monkeypatch):
  mesh = sharding.create_mesh((1, 1, 1), jax.devices()[:1])
  state, trainer = create_train_state(TINY, OptimizerConfig(), mesh, "fsdp", jax.random.key(0))
  batch = _batch()
  budget = host_budget(trainer, batch)
  budgets = [dataclasses.replace(budget, targets=budget.targets + 16 * i) for i in range(3)]
  step = make_train_step(trainer, batch)
  # As if each live program held 100 of a limit of 400 mappings: at most two stay live.
  monkeypatch.setattr(step_lib, "memory_mappings", lambda: (100 * len(step.programs) + 1, 400))
  losses = []
  for b in (*budgets, budgets[0]):
    copy = jax.tree.map(lambda x: x.copy(), state)  # Each step donates the state it is given.
    losses.append(float(step(copy, batch, jax.random.key(1), b)[1]["loss"]))
  assert list(step.programs) == [budgets[2], budgets[0]]
  # A budget bounds the work, not the result; an evicted budget's program comes back the same.
  np.testing.assert_allclose(losses, losses[0], rtol=1e-6)
