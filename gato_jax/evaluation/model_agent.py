"""The Gato model as an evaluation agent: prompted, cached, batched token-by-token decoding.

Each row of the batch is one environment. Per environment step the agent tokenizes the new
observations, appends them to the shared key/value cache (`inference.CachedDecoder`) in one
batched call, and decodes the action tokens one at a time with logits masked to each token's
valid id range. Rows are left-padded (segment id 0, which real tokens never attend to), so rows
whose observations differ in length, or that sit idle, share one cache and one call. Stacked
observations (`act_batch`, from environments stepped on device) are tokenized in one vectorised
call and the actions detokenized in one.

Two memories (`memory`, eval.memory):
- "refill": the cache is rebuilt (reset, then one left-padded prefill of every row's context)
  when a row starts an episode, or when the next observation and action would not fit in
  `max_decode_length`; before a rebuild every row's context is trimmed to whole timesteps,
  keeping its prompt (see `context.RowContext.trim`). Trimming leaves `headroom` of the cache
  free, so a rebuild happens every few steps rather than at every step once an episode fills the
  context.
- "sliding": the paper's "Transformer-XL memory". The cache is a ring per row of its newest
  `max_decode_length` real tokens (`ModelConfig.decode_cache="sliding"`) that each step's
  tokens slide through, never rebuilt; a row starting an episode feeds its prompt and first
  observation alongside the other rows' new observations, and the prompt eventually slides out
  of view.
Either way each row's tokens carry its episode count as segment id, so that no row ever attends
to an earlier episode that a sliding cache still holds.
"""

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from gato_jax.envs import base, runner
from gato_jax.evaluation.context import RowContext, empty_group
from gato_jax.inference.decode import CONTEXT_MULTIPLE, CachedDecoder, round_up
from gato_jax.model.config import ModelConfig
from gato_jax.model.inputs import Batch, batch_from_token_groups
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.timestep import (
  TokenGroup,
  detokenize_action,
  tokenize_episode,
  tokenize_timestep,
)

# New observations are padded to a multiple of this (whole contexts to CONTEXT_MULTIPLE), so
# that a rollout compiles a handful of prefill shapes.
CHUNK_MULTIPLE = 8

# eval.memory -> the key/value cache it acts with (ModelConfig.decode_cache).
MEMORY_CACHES = {"refill": "full", "sliding": "sliding"}


def _num_patches_bucket(groups: Sequence[TokenGroup]) -> int:
  most = max(int(np.asarray(g.patches).shape[0]) for g in groups)
  return 0 if most == 0 else 1 << (most - 1).bit_length()  # Next power of two.


def _unstack_rows(group: TokenGroup, num_rows: int) -> list[TokenGroup]:
  """A `tokenize_episode` result of `num_rows` same-length timesteps -> one group per row."""
  length = group.num_tokens // num_rows
  if length * num_rows != group.num_tokens or np.any(
    np.asarray(group.timesteps) != np.repeat(np.arange(num_rows), length)
  ):
    raise ValueError("stacked observations must tokenize to the same number of tokens per row")
  num_patches = group.patches.shape[0] // num_rows
  rows = []
  for row in range(num_rows):
    tokens = slice(row * length, (row + 1) * length)
    patches = slice(row * num_patches, (row + 1) * num_patches)
    rows.append(
      TokenGroup(
        tokens=group.tokens[tokens],
        kinds=group.kinds[tokens],
        local_positions=group.local_positions[tokens],
        loss_mask=group.loss_mask[tokens],
        timesteps=np.zeros(length, np.int32),
        patches=group.patches[patches] if num_patches else np.zeros((0, 0), np.float32),
        patch_rows=group.patch_rows[patches],
        patch_cols=group.patch_cols[patches],
      )
    )
  return rows


class ModelAgent(runner.Agent):
  """Gato acting in a batch of environments of one task.

  Args:
    model_config: the model's config; `max_decode_length` bounds each row's context (with the
      sliding memory: what each token sees). Its `decode_cache` is set from `memory`.
    params: the model parameters (unboxed, host or device arrays).
    prompt_fn: `(episode seed) -> TokenGroup | None`, the prompt of each episode (e.g. a
      `prompts.PromptSampler`); None for unprompted evaluation.
    temperature: 0 decodes greedily, otherwise samples at this temperature (the paper samples
      from the model's distribution: 1.0).
    seed: seeds the sampling.
    headroom: the fraction of `max_decode_length` a trim leaves free for later timesteps
      (refill memory only).
    text_tokenizer: for text observations; the packaged one by default.
    memory: "refill" or "sliding" (the paper's), see the module docstring.
  """

  name = "gato"

  def __init__(
    self,
    model_config: ModelConfig,
    params: Any,
    prompt_fn: Callable[[int], TokenGroup | None] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    headroom: float = 0.25,
    text_tokenizer=None,
    memory: str = "refill",
  ):
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 <= headroom < 1.0:
      raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    if memory not in MEMORY_CACHES:
      raise ValueError(f"unknown eval.memory {memory!r}; choose from {sorted(MEMORY_CACHES)}")
    self.memory = memory
    self.model_config = dataclasses.replace(model_config, decode_cache=MEMORY_CACHES[memory])
    # On the device once, not copied in at every call; sharded arrays stay as they are.
    self.params = jax.tree.map(
      lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), params
    )
    self._prompt_fn = prompt_fn
    self.temperature = float(temperature)
    self._rng = jax.random.key(seed)
    self.headroom = headroom
    self._text_tokenizer = text_tokenizer
    self._decoder: CachedDecoder | None = None
    self.rows: list[RowContext] = []
    # Counters for reports and tests.
    self.num_calls = 0  # act() calls, i.e. batched environment steps.
    self.num_rebuilds = 0  # Refills of the cache (none with the sliding memory).
    self.num_trimmed = 0  # Timesteps dropped from contexts to fit the cache (refill memory).

  def setup(self, envs: Sequence[base.Environment]) -> None:
    if not envs:
      raise ValueError("ModelAgent.setup needs at least one environment")
    names = {env.name for env in envs}
    if len(names) != 1:
      raise ValueError(f"a batch of rollouts must be of one task, got {sorted(names)}")
    self.observation_spec = envs[0].observation_spec
    self.action_spec = envs[0].action_spec
    self.num_action_tokens = token_specs.num_action_tokens(self.action_spec)
    if self._decoder is None or self._decoder.batch_size != len(envs):
      self._decoder = CachedDecoder(self.model_config, self.params, len(envs))
    else:
      self._decoder.reset()  # Episode counts start again: no earlier rollout's keys may stay.
    self.rows = [RowContext() for _ in envs]
    self.active = [False] * len(envs)
    self._stale = True
    self._cache_length = 0  # Tokens (padding included) the cache holds.
    # Rows whose whole context (the prompt and all) goes in next, not just a new observation.
    self._whole = [False] * len(envs)
    self._episodes = np.zeros(len(envs), np.int32)  # Each row's episode count: its segment id.

  @property
  def max_context(self) -> int:
    """The most context tokens a row may hold before its action is decoded."""
    return self.model_config.max_decode_length - self.num_action_tokens

  def begin_episode(self, row: int, seed: int) -> None:
    prompt = self._prompt_fn(seed) if self._prompt_fn is not None else None
    self.rows[row] = RowContext(prompt=prompt)
    self.active[row] = True
    self._whole[row] = True
    # The row's cached tokens belong to its previous episode: a refill replaces them, and with
    # the sliding memory the new segment id hides them.
    self._episodes[row] += 1
    self._stale = True

  def end_episode(self, row: int) -> None:
    # An idle row's cache content is left as it is: it only ever sees padding until its next
    # episode, so ending an episode costs no prefill.
    self.rows[row] = RowContext()
    self.active[row] = False

  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    if len(observations) != len(self.rows):
      raise ValueError(f"got {len(observations)} observations for {len(self.rows)} rows")
    self._check_active([observation is not None for observation in observations])
    pending = [
      None
      if observation is None
      else tokenize_timestep(
        observation, None, self.observation_spec, self.action_spec, self._text_tokenizer
      )
      for observation in observations
    ]
    ids = self._act_on(pending)
    return [
      detokenize_action(ids[row], self.action_spec) if self.active[row] else None
      for row in range(len(self.rows))
    ]

  def act_batch(self, observations: Any, active: np.ndarray) -> list[Any]:
    """Tokenizes the stacked observations in one vectorised call, detokenizes in one."""
    active = np.asarray(active, bool)
    if active.shape != (len(self.rows),):
      raise ValueError(f"got an active mask of shape {active.shape} for {len(self.rows)} rows")
    self._check_active(active)
    # Rows as the timesteps of one "episode": the tokenizer's vectorised path does them at once.
    stacked = tokenize_episode(
      observations, None, self.observation_spec, self.action_spec, self._text_tokenizer
    )
    rows = _unstack_rows(stacked, len(self.rows))
    ids = self._act_on([group if live else None for group, live in zip(rows, active)])
    actions = detokenize_action(ids, self.action_spec)
    return [
      jax.tree.map(lambda leaf, row=row: np.asarray(leaf[row]), actions) if active[row] else None
      for row in range(len(self.rows))
    ]

  def _check_active(self, given) -> None:
    for row, observed in enumerate(given):
      if bool(observed) != self.active[row]:
        raise ValueError(
          f"row {row} is {'active' if self.active[row] else 'idle'} but got"
          f" {'an ' if observed else 'no '}observation"
        )

  def _act_on(self, pending: Sequence[TokenGroup | None]) -> np.ndarray:
    """Feeds each active row's tokenized observation, decodes and records its action ids."""
    for row, group in enumerate(pending):
      if group is not None:
        self.rows[row].pending = group
    # Which tokens go in is decided here, from the token counts alone, so that any decoding
    # backend (`_action_ids`) sees the same contexts.
    rebuild = False
    if self.memory == "sliding":
      for row in self.rows:
        row.trim(self.max_context, self.max_context)  # No history: only checks that it fits.
    elif (
      self._stale
      or self._cache_length + self._chunk_length() + self.num_action_tokens
      > self.model_config.max_decode_length
    ):
      budget = (
        int(self.model_config.max_decode_length * (1.0 - self.headroom)) - self.num_action_tokens
      )
      for row in self.rows:
        self.num_trimmed += row.trim(min(budget, self.max_context), self.max_context)
      self._whole = [True] * len(self.rows)
      self._cache_length = 0
      self.num_rebuilds += 1
      self._stale = False
      rebuild = True
    length = self._chunk_length()
    ids = np.asarray(self._action_ids(rebuild, length))  # [B, num_action_tokens]
    self._cache_length += length + self.num_action_tokens
    self.num_calls += 1
    self._whole = [False] * len(self.rows)
    for row, context in enumerate(self.rows):
      if self.active[row] and self.memory == "sliding":
        # The cache holds the step and slides past it, so the row keeps nothing (a history
        # would grow without bound over a long episode); only new observations go in.
        self.rows[row] = RowContext()
      elif self.active[row]:
        context.complete_step(ids[row])
    return ids

  def _new_tokens(self, row: int) -> TokenGroup:
    """What row `row` feeds next: its whole context after a refill or at an episode's start
    (sliding memory), else its new observation; nothing when it is idle."""
    context = self.rows[row]
    if self._whole[row]:
      return context.group()
    return context.pending if context.pending is not None else empty_group()

  def _chunk_length(self) -> int:
    """The padded length of what goes in next (`_new_tokens` of every row)."""
    longest = max(self._new_tokens(row).num_tokens for row in range(len(self.rows)))
    if any(self._whole):
      return min(round_up(max(longest, 1), CONTEXT_MULTIPLE), self.max_context)
    return round_up(max(longest, 1), CHUNK_MULTIPLE)

  def _batch(self, groups: Sequence[TokenGroup], seq_len: int) -> Batch:
    batch = batch_from_token_groups(
      groups, seq_len, _num_patches_bucket(groups), self.model_config.patch_dim, pad_side="left"
    )
    # Segment ids: each row's episode count (see the module docstring), padding 0 (which the
    # sliding memory never writes into a row's ring, so a row's prompt pads no other row's
    # window away).
    episodes = self._episodes[:, None]
    return batch.replace(segment_ids=np.where(batch.segment_ids > 0, episodes, 0).astype(np.int32))

  def _action_ids(self, rebuild: bool, length: int):
    """Feeds the new tokens to the model and decodes each row's action ids [B, N].

    The decoding backend: tests override it with a full forward pass over `self.rows`' contexts
    to check that the cache changes nothing.

    Args:
      rebuild: empty the cache first (every row then feeds its whole context).
      length: the padded length of what goes in (contexts or observations).
    """
    decoder = self._decoder
    if rebuild:
      decoder.reset()
    groups = [self._new_tokens(row) for row in range(len(self.rows))]
    if decoder.num_pending and not any(self._whole):
      # The previous action's last token goes in ahead of the observations: the whole call,
      # not the observations alone, is padded to a multiple. The cache slots it fills are
      # never more than `length` + the action tokens, so refills come when they always did.
      longest = max(group.num_tokens for group in groups)
      ahead = decoder.num_pending
      length = min(length, round_up(max(longest, 1) + ahead, CHUNK_MULTIPLE) - ahead)
    # Greedy decoding draws nothing: no key to derive (an op dispatch per step saved).
    rng = self._rng if self.temperature == 0.0 else jax.random.fold_in(self._rng, self.num_calls)
    ids, _ = decoder.act(self._batch(groups, length), self.action_spec, rng, self.temperature)
    return ids
