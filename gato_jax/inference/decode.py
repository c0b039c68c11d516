"""Cached autoregressive decoding, the one decoder of actions and text.

Prefill a context, then emit tokens one at a time, each with its logits masked to its valid id
range. The paper's agent keeps past keys and values ("Transformer-XL memory",
`ModelConfig.decode_cache="sliding"`) and decodes as many action tokens as the action spec needs
(docs/design.md, Evaluation); captions and answers are text tokens decoded greedily the same way
(`generate_text`). Each function below is jitted once per input shape: a rollout of fixed batch
size compiles one prefill per observation length and one action decoder.

Contexts are left-padded (segment id 0), so every row's newest token is the last column; padding
never attends to or is attended by real tokens.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gato_jax.model.config import ModelConfig
from gato_jax.model.gato import Gato, dummy_batch
from gato_jax.model.inputs import Batch, batch_from_token_groups
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, TEXT_VOCAB_SIZE, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, detokenize_action

# Padded lengths are rounded up to a multiple of this, so that rollouts and generation compile a
# handful of prefill shapes instead of one per distinct context length.
CONTEXT_MULTIPLE = 64


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def init_cache(model_config: ModelConfig, batch_size: int):
  """An empty key/value cache for `batch_size` rows of `max_decode_length` tokens."""
  model = Gato(model_config)
  shapes = jax.eval_shape(
    lambda: model.init(
      {"params": jax.random.key(0)}, dummy_batch(batch_size, 1, 0, model_config), decode=True
    )
  )["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))


@functools.partial(jax.jit, static_argnames=("model", "last_only"))
def prefill(params, cache, batch: Batch, *, model: Gato, last_only: bool = False):
  """Appends `batch`'s tokens to the cache; returns (float32 logits [B, T, V], new cache).

  With `last_only` the logits are [B, 1, V], for the newest token only: acting needs nothing
  else, and projecting a long context onto the 33k-entry vocabulary would dominate its cost.
  """
  b, t = batch.tokens.shape
  positions = jnp.full((b, 1), t - 1, jnp.int32) if last_only else None
  logits, variables = model.apply(
    {"params": params, "cache": cache}, batch, decode=True, positions=positions, mutable=["cache"]
  )
  return logits, variables["cache"]


def mask_to_range(logits, low, high):
  """Logits outside [low, high) set to -inf-like, so only valid ids can be produced."""
  ids = jnp.arange(logits.shape[-1])
  return jnp.where((ids >= low) & (ids < high), logits, -1e9)


def sample(logits, rng, temperature: float):
  """Greedy when temperature == 0, else a draw from softmax(logits / temperature)."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


def _single_token_batch(ids, kind: int, local_positions, segment_ids, patch_dim: int) -> Batch:
  """A length-1 Batch holding just-decoded tokens of one kind, at `local_positions` [B]."""
  b = ids.shape[0]
  return Batch(
    tokens=ids[:, None],
    kinds=jnp.full((b, 1), kind, jnp.int32),
    local_positions=local_positions[:, None].astype(jnp.int32),
    loss_mask=jnp.zeros((b, 1), bool),
    segment_ids=segment_ids[:, None].astype(jnp.int32),
    patches=jnp.zeros((b, 0, patch_dim), jnp.float32),
    patch_rows=jnp.zeros((b, 0, 2), jnp.float32),
    patch_cols=jnp.zeros((b, 0, 2), jnp.float32),
  )


@functools.partial(jax.jit, static_argnames=("model", "temperature", "kind"))
def decode_tokens(
  params,
  cache,
  last_logits,
  id_ranges,
  rng,
  local_positions=None,
  segment_ids=None,
  *,
  model: Gato,
  temperature: float,
  kind: int = TokenKind.VALUE,
):
  """Decodes one token per row of `id_ranges` ([N, 2] valid [low, high) ranges).

  Each sampled token is fed back, so on return the cache holds every decoded token and the next
  observation can be appended directly.

  Args:
    local_positions: int32 [B, N] observation-local positions of the decoded tokens (text
      continuing an observation); None for action tokens, which have none.
    segment_ids: int32 [B] the segment the decoded tokens join (the context's, e.g. an
      episode's); None: segment 1, a context's when it is one sequence per row.
    kind: the `TokenKind` of the decoded tokens.

  Returns:
    (ids int32 [B, N], cache)
  """
  if local_positions is None:
    local_positions = jnp.full((last_logits.shape[0], id_ranges.shape[0]), NO_LOCAL_POSITION)
  if segment_ids is None:
    segment_ids = jnp.ones(last_logits.shape[0], jnp.int32)

  def step(carry, xs):
    cache, logits = carry
    (low, high), positions, token_rng = xs
    ids = sample(mask_to_range(logits, low, high), token_rng, temperature)  # [B]
    batch = _single_token_batch(ids, kind, positions, segment_ids, model.config.patch_dim)
    new_logits, cache = prefill(params, cache, batch, model=model)
    return (cache, new_logits[:, -1]), ids

  rngs = jax.random.split(rng, id_ranges.shape[0])
  xs = ((id_ranges[:, 0], id_ranges[:, 1]), jnp.asarray(local_positions).T, rngs)
  (cache, _), ids = jax.lax.scan(step, (cache, last_logits), xs)
  return ids.T, cache


@functools.partial(jax.jit, static_argnames=("model", "num_tokens"))
def _greedy_text(params, context: Batch, first_local_positions, *, model: Gato, num_tokens: int):
  """Prefills a fresh cache with `context`, then greedily decodes `num_tokens` text tokens."""
  logits, cache = prefill(
    params, init_cache(model.config, context.tokens.shape[0]), context, model=model, last_only=True
  )
  id_ranges = jnp.tile(jnp.array([[0, TEXT_VOCAB_SIZE]], jnp.int32), (num_tokens, 1))
  positions = first_local_positions[:, None] + jnp.arange(num_tokens, dtype=jnp.int32)
  ids, _ = decode_tokens(
    params,
    cache,
    logits[:, -1],
    id_ranges,
    jax.random.key(0),
    positions,
    model=model,
    temperature=0.0,
    kind=TokenKind.TEXT,
  )
  return ids


def generate_text(
  model_config: ModelConfig, params: Any, contexts: Sequence[TokenGroup], num_tokens: int
) -> np.ndarray:
  """Greedy text continuations int32 [len(contexts), num_tokens] of each context.

  Each context is an observation without its separator (image patches, maybe text); generated
  tokens continue its observation-local positions, as the caption's tokens do in training.
  """
  if num_tokens < 1:
    raise ValueError(f"num_tokens must be positive, got {num_tokens}")
  longest = max(g.num_tokens for g in contexts)
  seq_len = round_up(longest, CONTEXT_MULTIPLE)
  if seq_len + num_tokens > model_config.max_decode_length:
    raise ValueError(
      f"a context of {longest} tokens (padded to {seq_len}) and {num_tokens}"
      f" generated tokens exceed max_decode_length={model_config.max_decode_length}"
    )
  num_patches = max(int(np.asarray(g.patches).shape[0]) for g in contexts)
  context = batch_from_token_groups(
    contexts, seq_len, num_patches, model_config.patch_dim, pad_side="left"
  )
  first = np.array([int(np.max(g.local_positions, initial=-1)) + 1 for g in contexts], np.int32)
  return np.asarray(
    _greedy_text(params, context, first, model=Gato(model_config), num_tokens=int(num_tokens))
  )


class CachedDecoder:
  """Keeps a batch of agents' caches and their length on the host, to act step by step.

  Args:
    model_config: the model's config (its `max_decode_length` sizes the cache; with
      `decode_cache="sliding"` the cache never fills, each call takes up to that many tokens).
    params: the model parameters (unboxed).
    batch_size: rows decoded together (e.g. parallel rollouts).
  """

  def __init__(self, model_config: ModelConfig, params, batch_size: int):
    self.model = Gato(model_config)
    self.params = params
    self.batch_size = batch_size
    self.reset()

  def reset(self) -> None:
    self.cache = init_cache(self.model.config, self.batch_size)
    self.length = 0
    # Each row's newest segment id: decoded tokens join it (left padding puts it last).
    self.segment_ids = jnp.ones(self.batch_size, jnp.int32)

  def _reserve(self, num_tokens: int) -> None:
    limit = self.model.config.max_decode_length
    if self.model.config.decode_cache == "sliding" and num_tokens > limit:
      raise ValueError(
        f"a sliding cache of {limit} tokens cannot take {num_tokens} tokens in one call"
      )
    if self.model.config.decode_cache == "full" and self.length + num_tokens > limit:
      raise ValueError(
        f"the cache holds {self.length} of {limit} tokens and cannot take {num_tokens} more;"
        " trim the context (drop old timesteps) and reset"
      )
    self.length += num_tokens

  def append(self, batch: Batch):
    """Adds context tokens (a prompt, an observation ending with `|`); returns last logits [B, V]."""
    if batch.tokens.shape[0] != self.batch_size:
      raise ValueError(f"batch has {batch.tokens.shape[0]} rows, the decoder {self.batch_size}")
    self._reserve(batch.tokens.shape[1])
    logits, self.cache = prefill(self.params, self.cache, batch, model=self.model, last_only=True)
    self.segment_ids = jnp.asarray(batch.segment_ids[:, -1], jnp.int32)
    return logits[:, -1]

  def decode(self, last_logits, action_spec: Any, rng=None, temperature: float = 0.0):
    """Decodes one action per row after `append`ed context ending with the separator.

    Returns:
      (action tree with leading batch dimension, int32 action ids [B, num_action_tokens])
    """
    id_ranges = jnp.asarray(token_specs.action_token_id_ranges(action_spec))
    self._reserve(id_ranges.shape[0])
    rng = jax.random.key(0) if rng is None else rng
    ids, self.cache = decode_tokens(
      self.params,
      self.cache,
      last_logits,
      id_ranges,
      rng,
      segment_ids=self.segment_ids,
      model=self.model,
      temperature=float(temperature),
    )
    return detokenize_action(np.asarray(ids), action_spec), ids


def decode_action(
  model_config: ModelConfig,
  params,
  context: Batch,
  action_spec: Any,
  rng=None,
  temperature: float = 0.0,
):
  """One-shot: prefill a left-padded `context` ending with `|` and decode the action after it.

  Returns:
    (detokenised action tree with leading batch dimension, int32 ids [B, num_action_tokens])
  """
  decoder = CachedDecoder(model_config, params, context.tokens.shape[0])
  return decoder.decode(decoder.append(context), action_spec, rng, temperature)
