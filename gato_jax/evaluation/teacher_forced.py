"""Teacher-forced action metrics: how a model predicts the expert's own actions, token by token.

Closed-loop returns say whether a policy works; these say why it does not. Each stored episode is
cut into consecutive windows of whole timesteps that fill the context (training's windows,
without prompts), the model reads each window once, and every action token is compared with
the model's greedy choice for it:

  * accuracy and NLL per action token;
  * repeat rates: how often the target equals the same action token one timestep earlier (the
    data's own persistence) and how often the model's prediction does. A model that learned to
    copy its previous action predicts repeats far more often than the data holds them and has
    no accuracy where the expert changes its action (`accuracy_on_changes`).

The first timestep of a window has no earlier action in view, so it counts towards accuracy and
NLL but not towards the repeat figures. Control tasks store no held-out split: these are
measured on episodes the model was trained on, a measure of what it fitted, not of how it
generalises.
"""

import dataclasses
import functools
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from gato_jax.data import sequences
from gato_jax.evaluation.context import empty_group
from gato_jax.model.config import ModelConfig
from gato_jax.model.gato import Gato
from gato_jax.model.inputs import batch_from_token_groups
from gato_jax.training.loss import next_token_terms
from gato_jax.tokenizer.constants import TokenKind
from gato_jax.tokenizer.timestep import TokenGroup

NO_PREVIOUS = -1  # previous_target of an action with no earlier timestep in its window.


@dataclasses.dataclass(frozen=True)
class ActionTargets:
  """One entry per action token: what the data holds and what the model predicted.

  Attributes:
    target: the action token.
    prediction: the model's argmax for it, given everything before it.
    nll: -log p(target) in nats.
    previous_target: the same action dimension's token one timestep earlier, NO_PREVIOUS where
      that timestep is not in the window.
  """

  target: np.ndarray
  prediction: np.ndarray
  nll: np.ndarray
  previous_target: np.ndarray

  @classmethod
  def concatenate(cls, parts: Sequence["ActionTargets"]) -> "ActionTargets":
    if not parts:
      raise ValueError("no action targets to join")
    return cls(
      *(np.concatenate(arrays) for arrays in zip(*(dataclasses.astuple(p) for p in parts)))
    )


def episode_windows(
  episode: TokenGroup, max_tokens: int, name: str = "episode"
) -> list[TokenGroup]:
  """The episode as consecutive windows of whole timesteps, each as full as `max_tokens` allows.

  Raises:
    sequences.WindowError: if one timestep is longer than `max_tokens`.
  """
  offsets = sequences.timestep_offsets(episode)
  sequences.check_windows_fit(offsets, max_tokens, name)
  windows, start = [], 0
  while start < len(offsets) - 1:
    stop = sequences.fitting_stop(offsets, start, max_tokens)
    windows.append(sequences.slice_timesteps(episode, start, stop))
    start = stop
  return windows


def previous_action_positions(group: TokenGroup) -> tuple[np.ndarray, np.ndarray]:
  """(positions of the group's action tokens, position of the same action dimension's token one
  timestep earlier or NO_PREVIOUS)."""
  positions = np.flatnonzero(group.action_mask)
  timesteps = np.asarray(group.timesteps)[positions]
  # Rank of each action token within its timestep: its dimension.
  firsts = np.searchsorted(timesteps, timesteps, side="left")
  dimension = np.arange(len(positions)) - firsts
  where = {(int(t), int(d)): int(p) for t, d, p in zip(timesteps, dimension, positions)}
  previous = np.array(
    [where.get((int(t) - 1, int(d)), NO_PREVIOUS) for t, d in zip(timesteps, dimension)], np.int64
  )
  return positions, previous


@functools.partial(jax.jit, static_argnames=("model", "action_vocab"))
def _next_token_predictions(params, batch, *, model: Gato, action_vocab: str):
  """(argmax, NLL of the actual token) of each position's next token: [B, T-1] each, under the
  training objective's normaliser (`loss.next_token_terms`)."""
  logits = model.apply({"params": params}, batch)[:, :-1]
  return next_token_terms(logits, batch.tokens[:, 1:], batch.kinds[:, 1:], action_vocab)


def action_targets(
  model_config: ModelConfig,
  params: Any,
  windows: Sequence[TokenGroup],
  seq_len: int,
  batch_size: int = 4,
  action_vocab: str = "full",
) -> ActionTargets:
  """Every action token of `windows` (each at most `seq_len` tokens) scored teacher-forced.

  Batches are padded to `batch_size` rows and to the windows' largest patch count, so a task
  compiles one shape. `action_vocab`: the action normaliser the model was trained with
  (train.action_loss_vocab): argmax and NLL over the whole vocabulary or the action ids.
  """
  if not windows:
    raise ValueError("no windows to score")
  model = Gato(model_config)
  max_patches = max(int(np.sum(np.asarray(w.kinds) == TokenKind.IMAGE_PATCH)) for w in windows)
  parts = []
  for start in range(0, len(windows), batch_size):
    rows = list(windows[start : start + batch_size])
    rows += [empty_group()] * (batch_size - len(rows))
    batch = batch_from_token_groups(rows, seq_len, max_patches, model_config.patch_dim)
    argmax, nll = jax.device_get(
      _next_token_predictions(params, batch, model=model, action_vocab=action_vocab)
    )
    for row, window in enumerate(rows[: len(windows) - start]):
      positions, previous = previous_action_positions(window)
      if not positions.size:
        continue
      if positions[0] == 0:
        raise ValueError("a window starts with an action token: nothing predicts it")
      tokens = np.asarray(window.tokens)
      parts.append(
        ActionTargets(
          target=tokens[positions],
          prediction=argmax[row, positions - 1],
          nll=nll[row, positions - 1],
          previous_target=np.where(previous >= 0, tokens[np.maximum(previous, 0)], NO_PREVIOUS),
        )
      )
  return ActionTargets.concatenate(parts)


def summarize(targets: ActionTargets) -> dict:
  """The figures of the module docstring; rates over no entries are None."""
  rate = lambda mask: float(np.mean(mask)) if np.size(mask) else None
  correct = targets.prediction == targets.target
  has_previous = targets.previous_target != NO_PREVIOUS
  previous = targets.previous_target[has_previous]
  changes = has_previous & (targets.target != targets.previous_target)
  return {
    "action_tokens": int(targets.target.size),
    "accuracy": rate(correct),
    "nll": float(np.mean(targets.nll)),
    "target_repeat": rate(targets.target[has_previous] == previous),
    "prediction_repeat": rate(targets.prediction[has_previous] == previous),
    "changes": int(np.sum(changes)),
    "accuracy_on_changes": rate(correct[changes]),
  }


def task_fidelity(
  model_config: ModelConfig,
  params: Any,
  episodes: Iterable[TokenGroup],
  seq_len: int,
  batch_size: int = 4,
  name: str = "episode",
  action_vocab: str = "full",
) -> dict:
  """`summarize` over the action tokens of `episodes`, windowed to `seq_len`."""
  windows = [w for episode in episodes for w in episode_windows(episode, seq_len, name)]
  targets = action_targets(model_config, params, windows, seq_len, batch_size, action_vocab)
  summary = summarize(targets)
  return {"windows": len(windows), **summary}
