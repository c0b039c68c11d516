"""The training loss: the action-vocabulary switch changes only the action targets' normaliser."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.model import Batch, Gato, ModelConfig, init_variables
from gato_jax.training.loss import (
  ACTION_IDS,
  masked_next_token_loss,
  target_mask,
  target_positions,
)
from gato_jax.training.step import Budget, loss_and_metrics

TEXT, VALUE, SEP = T.TokenKind.TEXT, T.TokenKind.VALUE, T.TokenKind.SEPARATOR
V = 33152  # The padded vocabulary (128 multiple).


def _batch() -> Batch:
  """Two rows of 6: a text row and a control row (value observation, separator, two actions)."""
  tokens = np.array(
    [[5, 17, 900, 31999, 2, 0], [32010, 32500, T.SEPARATOR_ID, 32003, 33023, 32001]], np.int32
  )
  kinds = np.array(
    [[TEXT] * 5 + [T.TokenKind.PAD], [VALUE, VALUE, SEP, VALUE, VALUE, VALUE]], np.int32
  )
  # Row 1: the observation value is not a target; actions at columns 3 and 4 are, and column 5
  # (a new segment's observation) is not.
  loss_mask = np.array([[1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0]], bool)
  segment_ids = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 2]], np.int32)
  return Batch(
    tokens=tokens,
    kinds=kinds,
    local_positions=np.zeros((2, 6), np.int32),
    loss_mask=loss_mask,
    segment_ids=segment_ids,
    patches=np.zeros((2, 0, 768), np.float32),
    patch_rows=np.zeros((2, 0, 2), np.float32),
    patch_cols=np.zeros((2, 0, 2), np.float32),
  )


def _logits(seed=0):
  logits = np.random.default_rng(seed).normal(0, 3, (2, 6, V)).astype(np.float32)
  logits[..., T.VOCAB_SIZE :] = -1e9  # As the model masks its padding rows.
  return logits


def _logsumexp(x):
  x = np.asarray(x, np.float64)
  top = x.max()
  return top + np.log(np.exp(x - top).sum())


# (row, predictor column) of each target of `_batch`, and whether it is an action.
TARGETS = [(0, 0, False), (0, 1, False), (0, 2, False), (0, 3, False), (1, 2, True), (1, 3, True)]


def _expected_nll(logits, batch, action_vocab):
  nll = {}
  for row, col, is_action in TARGETS:
    target = batch.tokens[row, col + 1]
    scores = logits[row, col]
    if is_action and action_vocab == "actions":
      scores = scores[ACTION_IDS[0] : ACTION_IDS[1]]
      target -= ACTION_IDS[0]
    nll[row, col] = _logsumexp(scores) - scores[target]
  return nll


def test_target_mask_selects_text_and_action_targets():
  batch = _batch()
  want = np.zeros((2, 5), bool)
  for row, col, _ in TARGETS:
    want[row, col] = True
  np.testing.assert_array_equal(target_mask(batch), want)
  np.testing.assert_array_equal(
    target_mask(batch, actions=True), want & (np.arange(2)[:, None] == 1)
  )
  np.testing.assert_array_equal(
    target_mask(batch, actions=False), want & (np.arange(2)[:, None] == 0)
  )


@pytest.mark.parametrize("action_vocab", ["full", "actions"])
def test_loss_against_numpy(action_vocab):
  batch, logits = _batch(), _logits()
  _, metrics = masked_next_token_loss(logits, batch, action_vocab=action_vocab)
  nll = _expected_nll(logits, batch, action_vocab)
  text = [nll[r, c] for r, c, a in TARGETS if not a]
  action = [nll[r, c] for r, c, a in TARGETS if a]
  np.testing.assert_allclose(metrics["loss"], np.mean(text + action), rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_text"], np.mean(text), rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_action"], np.mean(action), rtol=1e-6)
  np.testing.assert_allclose(metrics["row_loss_sum"], [sum(text), sum(action)], rtol=1e-6)
  np.testing.assert_array_equal(metrics["row_targets"], [4, 2])
  assert (metrics["text_tokens"], metrics["action_tokens"]) == (4, 2)
  # Accuracy: the argmax over the target's normaliser.
  low, high = ACTION_IDS if action_vocab == "actions" else (0, V)
  action_hits = [
    low + np.argmax(logits[r, c, low:high]) == batch.tokens[r, c + 1] for r, c, a in TARGETS if a
  ]
  np.testing.assert_allclose(metrics["accuracy_action"], np.mean(action_hits))


def test_switch_changes_only_the_action_normaliser():
  batch, logits = _batch(), _logits()
  # Push the text logits up at the action predictors: only the full softmax pays for them.
  logits[1, 2:4, : T.TEXT_VOCAB_SIZE] += 5.0
  _, full = masked_next_token_loss(logits, batch, action_vocab="full")
  _, actions = masked_next_token_loss(logits, batch, action_vocab="actions")
  assert full["loss_text"] == actions["loss_text"]
  assert full["accuracy_text"] == actions["accuracy_text"]
  assert full["row_loss_sum"][0] == actions["row_loss_sum"][0]
  assert actions["loss_action"] < full["loss_action"] - 4.0
  want = np.mean([v for (r, c), v in _expected_nll(logits, batch, "actions").items() if r == 1])
  np.testing.assert_allclose(actions["loss_action"], want, rtol=1e-6)


def test_action_head_logits_give_the_sliced_loss():
  """Logits over the action ids alone at the action targets = the full logits' slice there."""
  batch, logits = _batch(), _logits()
  positions = target_positions(batch, 8, groups=1, actions=False)  # [1, 8]: rows flattened.
  action_positions = target_positions(batch, 4, groups=1, actions=True)
  flat = logits.reshape(1, 12, V)
  take = lambda p: np.take_along_axis(flat, np.asarray(p)[..., None], axis=1)
  _, want = masked_next_token_loss(logits, batch, action_vocab="actions")
  _, got = masked_next_token_loss(
    take(positions),
    batch,
    positions,
    "actions",
    take(action_positions)[..., ACTION_IDS[0] : ACTION_IDS[1]],
    action_positions,
  )
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key)


def test_split_budget_in_the_model_gives_the_same_loss_and_gradients():
  config = ModelConfig.from_size("tiny", num_layers=1, stochastic_depth=0.0)
  batch = _batch().replace(patches=np.zeros((2, 0, config.patch_dim), np.float32))
  # Jitted: op by op, the initialiser compiles each of its primitives on its own.
  params = nn.unbox(jax.jit(lambda r: init_variables(config, r))(jax.random.key(0)))["params"]
  model, rng = Gato(config), jax.random.key(1)
  loss = lambda p, budget: loss_and_metrics(p, batch, rng, model, False, budget, "actions")
  grad = jax.value_and_grad(loss, has_aux=True)

  @jax.jit
  def run(p):
    # Logits everywhere; a text head and an action head; an action head alone (text dropped).
    return (
      grad(p, None),
      grad(p, Budget(1, targets=16, action_targets=16)),
      loss(p, Budget(1, targets=0, action_targets=16)),
    )

  ((loss_a, metrics_a), grads_a), ((loss_b, metrics_b), grads_b), (loss_c, metrics_c) = run(params)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  for key in ("loss_text", "loss_action", "accuracy_action", "row_loss_sum", "target_tokens"):
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(loss_c, metrics_a["loss_action"], rtol=1e-6)
  assert metrics_c["text_tokens"] == 0


def test_bad_switch_values_fail_clearly():
  with pytest.raises(ValueError, match="action_loss_vocab must be one of full, actions"):
    masked_next_token_loss(_logits(), _batch(), action_vocab="bins")
  with pytest.raises(ValueError, match="need action_vocab='actions'"):
    masked_next_token_loss(_logits(), _batch(), None, "full", _logits(), None)
