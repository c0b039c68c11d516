"""Cached autoregressive decoding, the one decoder of actions and text.

Prefill a context, then emit tokens one at a time, each with its logits masked to its valid id
range. The paper's agent keeps past keys and values ("Transformer-XL memory",
`ModelConfig.decode_cache="sliding"`) and decodes as many action tokens as the action spec needs
(docs/design.md, Evaluation): `CachedDecoder.act` at every step, `decode_action` in one shot;
captions and answers are text tokens decoded greedily the same way (`generate_text`). Each
function below is jitted once per input shape: a rollout of fixed batch size compiles one
`append_and_decode` (an agent's whole step) per padded context length.

Contexts are left-padded (segment id 0), so every row's newest token is the last column; padding
never attends to or is attended by real tokens.
"""

import dataclasses
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


def unrolled_config(model_config: ModelConfig) -> ModelConfig:
  """The config decoding runs: layers unrolled, each with a cache of its own.

  Scanned layers keep one stacked cache [L, ...]; each call would copy every layer's slice out
  of it and stack the updated slices back, several times the cost of the step itself for a small
  model. Unrolled, each layer's cache (donated) is updated in place.
  """
  return dataclasses.replace(model_config, scan_layers=False, remat_policy="none")


def unrolled_params(params):
  """Parameters of scanned layers ("layers", stacked [L, ...]) as the unrolled model's
  ("layer_0", "layer_1", ...); others as they are."""
  decoder = params["decoder"]
  if "layers" not in decoder:
    return params
  layers = decoder["layers"]
  num_layers = jax.tree.leaves(layers)[0].shape[0]
  unstacked = {f"layer_{i}": jax.tree.map(lambda p, i=i: p[i], layers) for i in range(num_layers)}
  return {**params, "decoder": {**{k: v for k, v in decoder.items() if k != "layers"}, **unstacked}}


@functools.lru_cache(maxsize=None)
def _cache_shapes(model_config: ModelConfig, batch_size: int):
  # Tracing the model's init takes a second or more on CPU: once per config, not per refill.
  model = Gato(unrolled_config(model_config))
  shapes = jax.eval_shape(
    lambda: model.init(
      {"params": jax.random.key(0)}, dummy_batch(batch_size, 1, 0, model_config), decode=True
    )
  )["cache"]
  return nn.unbox(shapes)


def init_cache(model_config: ModelConfig, batch_size: int):
  """An empty key/value cache for `batch_size` rows of `max_decode_length` tokens."""
  return jax.tree.map(
    lambda s: jnp.zeros(s.shape, s.dtype), _cache_shapes(model_config, batch_size)
  )


@functools.partial(jax.jit, static_argnames=("model", "last_only", "id_window"))
def prefill(
  params,
  cache,
  batch: Batch,
  *,
  model: Gato,
  last_only: bool = False,
  id_window: tuple[int, int] | None = None,
):
  """Appends `batch`'s tokens to the cache; returns (float32 logits [B, T, V], new cache).

  With `last_only` the logits are [B, 1, V], for the newest token only: acting needs nothing
  else, and projecting a long context onto the 33k-entry vocabulary would dominate its cost.
  With `id_window` (low, high) they cover ids [low, high) only (V = high - low).

  Args:
    params: the model's parameters, its layers scanned (stacked) or unrolled
      (`unrolled_params`, what a decoder calling this at every step keeps).
    cache: the cache to extend (`init_cache`); None: an empty one, built inside the call (a
      refill then costs no separate allocation).
  """
  b, t = batch.tokens.shape
  if cache is None:
    cache = init_cache(model.config, b)
  positions = jnp.full((b, 1), t - 1, jnp.int32) if last_only else None
  logits, variables = Gato(unrolled_config(model.config)).apply(
    {"params": unrolled_params(params), "cache": cache},
    batch,
    decode=True,
    positions=positions,
    id_window=id_window,
    mutable=["cache"],
  )
  return logits, variables["cache"]


def mask_to_range(logits, low, high, offset: int = 0):
  """Logits of ids outside [low, high) set to -inf-like, so only valid ids can be produced.

  Logit j is id `offset` + j (logits over an id window, see `prefill`).
  """
  ids = offset + jnp.arange(logits.shape[-1])
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


def prepend_tokens(batch: Batch, ids, segment_ids) -> Batch:
  """`batch` [B, T] after decoded action tokens `ids` [B, K] of `segment_ids` [B]: [B, K + T].

  A left-padded row then reads [actions, padding, context]; padding is invisible to real tokens
  (and uncounted by their positions), so this is the row's actions followed by its context.
  """
  b, k = ids.shape
  return batch.replace(
    tokens=jnp.concatenate([ids.astype(jnp.int32), batch.tokens], axis=1),
    kinds=jnp.concatenate([jnp.full((b, k), TokenKind.VALUE, jnp.int32), batch.kinds], axis=1),
    local_positions=jnp.concatenate(
      [jnp.full((b, k), NO_LOCAL_POSITION, jnp.int32), batch.local_positions], axis=1
    ),
    loss_mask=jnp.concatenate([jnp.zeros((b, k), bool), batch.loss_mask], axis=1),
    segment_ids=jnp.concatenate(
      [jnp.broadcast_to(jnp.asarray(segment_ids, jnp.int32)[:, None], (b, k)), batch.segment_ids],
      axis=1,
    ),
  )


@functools.partial(
  jax.jit, static_argnames=("model", "temperature", "kind", "id_window", "feed_last")
)
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
  id_window: tuple[int, int] | None = None,
  feed_last: bool = True,
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
    id_window: static (low, high) holding every range of `id_ranges`: `last_logits` and the
      logits computed here cover ids [low, high) only (see `prefill`); None: the whole table.
    feed_last: False leaves the last token out of the cache, for the caller to put in front of
      the next context (`prepend_tokens`): a one-token action then costs no pass of its own.

  Returns:
    (ids int32 [B, N], cache)
  """
  if local_positions is None:
    local_positions = jnp.full((last_logits.shape[0], id_ranges.shape[0]), NO_LOCAL_POSITION)
  if segment_ids is None:
    segment_ids = jnp.ones(last_logits.shape[0], jnp.int32)

  offset = id_window[0] if id_window is not None else 0
  pick = lambda logits, low, high, token_rng: (
    offset + sample(mask_to_range(logits, low, high, offset), token_rng, temperature)
  )  # [B]

  def step(carry, xs):
    cache, logits = carry
    (low, high), positions, token_rng = xs
    ids = pick(logits, low, high, token_rng)
    batch = _single_token_batch(ids, kind, positions, segment_ids, model.config.patch_dim)
    new_logits, cache = prefill(params, cache, batch, model=model, id_window=id_window)
    return (cache, new_logits[:, -1]), ids

  n = id_ranges.shape[0]
  rngs = jax.random.split(rng, n)
  xs = ((id_ranges[:, 0], id_ranges[:, 1]), jnp.asarray(local_positions).T, rngs)
  fed = n if feed_last else n - 1
  (cache, logits), ids = jax.lax.scan(
    step, (cache, last_logits), jax.tree.map(lambda a: a[:fed], xs)
  )
  if not feed_last:
    last = pick(logits, id_ranges[-1, 0], id_ranges[-1, 1], rngs[-1])
    ids = jnp.concatenate([ids, last[None]], axis=0)
  return ids.T, cache


def action_id_window(action_spec: Any) -> tuple[int, int]:
  """The smallest (low, high) holding every action token's valid ids: the logits acting needs."""
  ranges = token_specs.action_token_id_ranges(action_spec)
  return int(ranges[:, 0].min()), int(ranges[:, 1].max())


@functools.partial(
  jax.jit, static_argnames=("model", "temperature", "id_window"), donate_argnames=("cache",)
)
def append_and_decode(
  params,
  cache,
  batch: Batch,
  pending,
  id_ranges,
  rng,
  *,
  model: Gato,
  temperature: float,
  id_window: tuple[int, int],
):
  """`prefill` then `decode_tokens` in one call, with logits over `id_window` alone.

  An agent's environment step is one dispatch and one device-to-host copy of its ids, the cache
  (donated) is extended in place rather than copied whole at every step, and the last action
  token is not fed back here but goes in with the next context (`pending`), in one pass.

  Args:
    cache: the cache, donated: it must not be used after the call; None: an empty one.
    batch: left-padded context tokens ending with the separator.
    pending: (the previous call's ids int32 [B, N], their segment ids int32 [B]): its last
      action token goes in before `batch`; None: none.

  Returns:
    (ids int32 [B, N], the first token's logits [B, high - low] over `id_window`, new cache
    holding all but the last action token)
  """
  if pending is not None:
    batch = prepend_tokens(batch, pending[0][:, -1:], pending[1])
  logits, cache = prefill(params, cache, batch, model=model, last_only=True, id_window=id_window)
  ids, cache = decode_tokens(
    params,
    cache,
    logits[:, -1],
    id_ranges,
    rng,
    segment_ids=batch.segment_ids[:, -1],
    model=model,
    temperature=temperature,
    id_window=id_window,
    feed_last=False,
  )
  return ids, logits[:, -1], cache


@functools.partial(jax.jit, static_argnames=("model", "num_tokens"))
def _greedy_text(params, context: Batch, first_local_positions, *, model: Gato, num_tokens: int):
  """Prefills a fresh cache with `context`, then greedily decodes `num_tokens` text tokens."""
  window = (0, TEXT_VOCAB_SIZE)
  logits, cache = prefill(params, None, context, model=model, last_only=True, id_window=window)
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
    id_window=window,
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
    self.params = unrolled_params(params)  # Once, not inside every call.
    self.batch_size = batch_size
    self.reset()

  def reset(self) -> None:
    self.cache = None  # Empty: the next call builds it (see `prefill`).
    # `act`'s last action token per row and its segment, which the cache does not hold yet.
    self.pending = None
    self.length = 0

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
    """Adds context tokens without acting (e.g. a prompt); returns the newest logits [B, V]."""
    if batch.tokens.shape[0] != self.batch_size:
      raise ValueError(f"batch has {batch.tokens.shape[0]} rows, the decoder {self.batch_size}")
    self._reserve(batch.tokens.shape[1])
    if self.pending is not None:
      batch = prepend_tokens(batch, self.pending[0][:, -1:], self.pending[1])
      self.pending = None
    logits, self.cache = prefill(self.params, self.cache, batch, model=self.model, last_only=True)
    return logits[:, -1]

  @property
  def num_pending(self) -> int:
    """Tokens the next `act` or `append` puts in ahead of its batch (see `act`)."""
    return 0 if self.pending is None else 1

  def act(self, batch: Batch, action_spec: Any, rng=None, temperature: float = 0.0):
    """Appends `batch` (context ending with the separator) and decodes one action per row after
    it, in one jitted call (`append_and_decode`): what an agent does at every environment step.
    The action's last token goes into the cache with the next call's batch (`num_pending`
    columns ahead of it).

    Returns:
      (int32 action ids [B, num_action_tokens] on the device, the first action token's logits
      [B, high - low] over ids `action_id_window(action_spec)`)
    """
    if batch.tokens.shape[0] != self.batch_size:
      raise ValueError(f"batch has {batch.tokens.shape[0]} rows, the decoder {self.batch_size}")
    id_ranges = token_specs.action_token_id_ranges(action_spec)
    self._reserve(batch.tokens.shape[1] + id_ranges.shape[0])
    ids, logits, self.cache = append_and_decode(
      self.params,
      self.cache,
      batch,
      self.pending,
      id_ranges,
      jax.random.key(0) if rng is None else rng,
      model=self.model,
      temperature=float(temperature),
      id_window=action_id_window(action_spec),
    )
    # Each row's newest segment (left padding puts it last): the action tokens joined it.
    self.pending = (ids, np.asarray(batch.segment_ids[:, -1], np.int32))
    return ids, logits


def decode_action(
  model_config: ModelConfig,
  params,
  context: Batch,
  action_spec: Any,
  rng=None,
  temperature: float = 0.0,
):
  """One-shot: prefill a left-padded `context` ending with `|` and decode the action after it
  (`CachedDecoder.act` on a fresh cache).

  Returns:
    (detokenised action tree with leading batch dimension, int32 ids [B, num_action_tokens])
  """
  ids, _ = CachedDecoder(model_config, params, context.tokens.shape[0]).act(
    context, action_spec, rng, temperature
  )
  ids = np.asarray(ids)
  return detokenize_action(ids, action_spec), ids
