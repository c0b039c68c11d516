"""What an acting model sees: a prompt, the episode's recent whole timesteps, the new observation.

The model's key/value cache holds at most `max_decode_length` tokens (1024 in the paper). As an
episode grows, its oldest timesteps leave the context whole (never half a timestep, the unit the
model was trained on) while the prompt, a successful demonstration of the task, always stays
(docs/design.md, Evaluation). Trimming here is pure bookkeeping over token groups; the model agent
re-prefills its cache from `RowContext.group()` after a trim. With its sliding memory the agent
feeds a row's whole context only at an episode's start and keeps no history after that.
"""

import dataclasses

import numpy as np

from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, concat_token_groups


def empty_group() -> TokenGroup:
  """A group of no tokens (an idle row of a batch is all padding)."""
  return TokenGroup(
    tokens=np.zeros(0, np.int32),
    kinds=np.zeros(0, np.int32),
    local_positions=np.zeros(0, np.int32),
    loss_mask=np.zeros(0, bool),
    timesteps=np.zeros(0, np.int32),
    patches=np.zeros((0, 0), np.float32),
    patch_rows=np.zeros((0, 2), np.float32),
    patch_cols=np.zeros((0, 2), np.float32),
  )


def with_action(observation: TokenGroup, action_ids) -> TokenGroup:
  """A whole timestep: an observation group ending with `|`, then the decoded action ids.

  The ids are appended as decoded rather than re-tokenized from the detokenised action, so the
  context holds exactly the tokens the model produced (bin centres of mu-law actions need not
  round-trip to the same bin).
  """
  ids = np.asarray(action_ids, np.int32).reshape(-1)
  n = ids.shape[0]
  return TokenGroup(
    tokens=np.concatenate([np.asarray(observation.tokens), ids]),
    kinds=np.concatenate([np.asarray(observation.kinds), np.full(n, TokenKind.VALUE, np.int32)]),
    local_positions=np.concatenate(
      [np.asarray(observation.local_positions), np.full(n, NO_LOCAL_POSITION, np.int32)]
    ),
    loss_mask=np.concatenate([np.asarray(observation.loss_mask), np.ones(n, bool)]),
    timesteps=np.zeros(observation.num_tokens + n, np.int32),
    patches=np.asarray(observation.patches),
    patch_rows=np.asarray(observation.patch_rows),
    patch_cols=np.asarray(observation.patch_cols),
  )


@dataclasses.dataclass
class RowContext:
  """One row's context: prompt + kept timesteps of the current episode + pending observation.

  Attributes:
    prompt: whole timesteps of a demonstration, or None (unprompted).
    history: the episode's completed timesteps still in context, oldest first.
    pending: the current observation (ending with `|`) awaiting its action, or None.
    dropped: how many of the episode's timesteps have been trimmed away so far.
  """

  prompt: TokenGroup | None = None
  history: list[TokenGroup] = dataclasses.field(default_factory=list)
  pending: TokenGroup | None = None
  dropped: int = 0

  @property
  def num_tokens(self) -> int:
    return sum(g.num_tokens for g in self._parts())

  def _parts(self) -> list[TokenGroup]:
    parts = [self.prompt] if self.prompt is not None else []
    parts += self.history
    if self.pending is not None:
      parts.append(self.pending)
    return parts

  def group(self) -> TokenGroup:
    """The whole context as one token group (empty when there is nothing yet)."""
    parts = [p for p in self._parts() if p.num_tokens]
    return concat_token_groups(parts) if parts else empty_group()

  def complete_step(self, action_ids) -> None:
    """Moves the pending observation, with its decoded action ids, into the history."""
    if self.pending is None:
      raise ValueError("no pending observation to complete with an action")
    self.history.append(with_action(self.pending, action_ids))
    self.pending = None

  def trim(self, budget: int, limit: int) -> int:
    """Drops the oldest whole timesteps until the context holds at most `budget` tokens.

    The prompt and the pending observation are never dropped. `budget` is a target (trimming
    stops when only the prompt and the pending observation are left); `limit` is hard.

    Args:
      budget: the wanted context size after trimming (leaves room for later timesteps).
      limit: the most tokens the context may hold; above it after trimming is an error.

    Returns:
      How many timesteps were dropped.

    Raises:
      ValueError: if the prompt plus the pending observation alone exceed `limit`.
    """
    dropped = 0
    while self.history and self.num_tokens > budget:
      self.history.pop(0)
      dropped += 1
    self.dropped += dropped
    if self.num_tokens > limit:
      prompt = self.prompt.num_tokens if self.prompt is not None else 0
      pending = self.pending.num_tokens if self.pending is not None else 0
      raise ValueError(
        f"the prompt ({prompt} tokens) and one observation ({pending} tokens) need more than"
        f" the {limit} tokens the model's context has room for; lower eval.prompt_tokens or"
        " raise model.max_decode_length"
      )
    return dropped
