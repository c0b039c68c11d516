"""The training objective: masked next-token cross-entropy and which tokens are its targets.

Its own module so that evaluation (perplexity, teacher-forced action fidelity) scores tokens as
training does without importing the train step.

`action_vocab` picks each action target's normaliser:
- "full" (the paper's objective): every target's softmax runs over the whole vocabulary.
- "actions": action targets (value tokens) and their predictions are normalised over
  `ACTION_IDS`, the value bins and the separator, the only ids an action position ever samples
  (decoding masks the rest); text targets keep the full softmax. The model then need not learn
  to push 32,000 text logits down at every action position, and the logits there can be
  computed from the 1,025 action rows of the token table alone (`Gato(action_positions=...)`).
"""

import jax
import jax.numpy as jnp

from gato_jax.model.embeddings import group_rows
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.constants import VALUE_OFFSET, VOCAB_SIZE, TokenKind

# [low, high): the ids an action target is normalised over with action_vocab="actions".
ACTION_IDS = (VALUE_OFFSET, VOCAB_SIZE)
ACTION_VOCABS = ("full", "actions")


def check_action_vocab(action_vocab: str) -> str:
  if action_vocab not in ACTION_VOCABS:
    raise ValueError(
      f"train.action_loss_vocab must be one of {', '.join(ACTION_VOCABS)}, got {action_vocab!r}"
    )
  return action_vocab


def target_mask(batch: Batch, actions: bool | None = None):
  """bool [B, T-1]: position t's prediction of token t + 1 counts in the loss.

  Targets are text and action tokens (the tokenizer's loss mask); a target in a different packed
  segment than its predictor is not a next token, so it is dropped. `actions` True keeps the
  action (value) targets only, False the others, None all.
  """
  mask = batch.loss_mask[:, 1:] & (batch.segment_ids[:, 1:] == batch.segment_ids[:, :-1])
  mask = mask & (batch.segment_ids[:, 1:] > 0)
  if actions is None:
    return mask
  is_action = batch.kinds[:, 1:] == TokenKind.VALUE
  return mask & (is_action if actions else ~is_action)


def target_positions(
  batch: Batch, num_targets: int, groups: int | None = None, actions: bool | None = None
):
  """int32 [G, K]: each group's predictor positions of its targets (see `Gato`), the first K,
  padded with 0. `groups` None: one group per row; `actions` selects targets as `target_mask`."""
  mask = jnp.pad(target_mask(batch, actions), ((0, 0), (0, 1)))  # [B, T]: t predicts t + 1.
  grouped = group_rows(mask, groups or mask.shape[0])
  return jax.vmap(lambda row: jnp.nonzero(row, size=num_targets, fill_value=0)[0])(grouped).astype(
    jnp.int32
  )


def next_token_terms(logits, targets, target_kinds, action_vocab: str = "full", offset: int = 0):
  """(prediction, NLL) of each target under the `action_vocab` objective.

  Args:
    logits: [..., V] over ids [offset, offset + V): the whole vocabulary (offset 0) or the
      action ids alone (offset ACTION_IDS[0], V = the action id count).
    targets: int [...] target ids.
    target_kinds: int [...] their TokenKinds; value targets are the actions.
    action_vocab: "full" or "actions" (module docstring).
    offset: the id of the logits' first column.

  Returns:
    (int32 [...] the argmax id over the target's normaliser, float32 [...] its NLL).
  """
  check_action_vocab(action_vocab)
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, (targets - offset)[..., None], axis=-1)[..., 0]
  prediction, normaliser = jnp.argmax(logits, axis=-1) + offset, jax.nn.logsumexp(logits, axis=-1)
  if action_vocab == "actions" and offset < ACTION_IDS[0]:
    # Full logits: an action target's normaliser is the slice of its ids.
    low, high = ACTION_IDS[0] - offset, ACTION_IDS[1] - offset
    actions = logits[..., low:high]
    is_action = target_kinds == TokenKind.VALUE
    prediction = jnp.where(is_action, jnp.argmax(actions, axis=-1) + low + offset, prediction)
    normaliser = jnp.where(is_action, jax.nn.logsumexp(actions, axis=-1), normaliser)
  return prediction.astype(jnp.int32), normaliser - picked


def _head_terms(logits, batch: Batch, positions, actions, action_vocab, offset):
  """Per-target (nll, correct, weight, kind, row) of one set of logits, as flat [N] arrays."""
  rows, length = batch.tokens.shape
  mask = target_mask(batch, actions)
  targets = batch.tokens[:, 1:]  # [B, T-1]
  target_kinds = batch.kinds[:, 1:]
  if positions is None:
    logits = logits[:, :-1]
    row_of = jnp.broadcast_to(jnp.arange(rows)[:, None], mask.shape)
  else:
    groups = positions.shape[0]
    # Predictor t of row b sits at b T + t of its group, as the hidden states are flattened.
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 1)))
    take = lambda a: jnp.take_along_axis(group_rows(pad(a), groups), positions, axis=1)
    # Positions past a group's real targets are fill: weighted out below.
    real = jnp.arange(positions.shape[1]) < jnp.sum(group_rows(mask, groups), 1, keepdims=True)
    mask = take(mask) & real
    targets, target_kinds = take(targets), take(target_kinds)
    row_of = jnp.arange(groups)[:, None] * (rows // groups) + positions // length  # [G, K]
  # Fill positions may hold any id; keep them inside the logits' columns.
  targets = jnp.where(mask, targets, offset)
  prediction, nll = next_token_terms(logits, targets, target_kinds, action_vocab, offset)
  weights = mask.astype(jnp.float32)
  correct = (prediction == targets).astype(jnp.float32)
  return tuple(a.reshape(-1) for a in (nll * weights, correct, weights, target_kinds, row_of))


def masked_next_token_loss(
  logits,
  batch: Batch,
  positions=None,
  action_vocab: str = "full",
  action_logits=None,
  action_positions=None,
):
  """Cross-entropy of next-token predictions on target tokens only.

  Args:
    logits: [B, T, V] for every position, or [G, K, V] for `positions` only.
    batch: the inputs (tokens, kinds, loss mask, segments).
    positions: int32 [G, K] predictor positions the logits belong to (see `target_positions`):
      of every target, or of the non-action targets when `action_positions` is given.
    action_vocab: "full" or "actions", the action targets' normaliser (module docstring).
    action_logits: [G, Ka, len(ACTION_IDS range)] logits over the action ids alone, at
      `action_positions` (the action targets'); needs action_vocab="actions".

  Returns:
    (mean loss over targets, metrics dict with per-kind losses, accuracies and target counts).
  """
  check_action_vocab(action_vocab)
  rows = batch.tokens.shape[0]
  if action_logits is None:
    heads = [_head_terms(logits, batch, positions, None, action_vocab, 0)]
  else:
    if action_vocab != "actions" or positions is None or action_positions is None:
      raise ValueError(
        "action_logits need action_vocab='actions' and both positions and action_positions"
      )
    heads = [
      _head_terms(logits, batch, positions, False, action_vocab, 0),
      _head_terms(action_logits, batch, action_positions, True, action_vocab, ACTION_IDS[0]),
    ]
  weighted_nll, correct, weights, target_kinds, row_of = (
    jnp.concatenate(parts) for parts in zip(*heads)
  )
  count = jnp.sum(weights)
  loss = jnp.sum(weighted_nll) / jnp.maximum(count, 1.0)
  # Per-row sums let the host split the loss by each row's task or domain.
  per_row = lambda v: jnp.zeros(rows).at[row_of].add(v)
  metrics = {
    "loss": loss,
    "target_tokens": count,
    "row_loss_sum": per_row(weighted_nll),
    "row_targets": per_row(weights),
  }
  for name, kind in (("text", TokenKind.TEXT), ("action", TokenKind.VALUE)):
    kind_weights = weights * (target_kinds == kind)
    kind_count = jnp.sum(kind_weights)
    metrics[f"accuracy_{name}"] = jnp.sum(correct * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"loss_{name}"] = jnp.sum(weighted_nll * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"{name}_tokens"] = kind_count
  return loss, metrics
