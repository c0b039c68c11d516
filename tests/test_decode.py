"""Cached decoding: exact agreement with a full forward pass, masked ranges, cache limits; the
sliding cache against a banded causal forward pass."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.inference import CachedDecoder, decode_action, init_cache, prefill
from gato_jax.inference.decode import decode_tokens, mask_to_range
from gato_jax.model import Gato, ModelConfig, batch_from_token_groups, init_variables
from gato_jax.model.transformer import Attention, rotary

CFG = ModelConfig.from_size("tiny", max_decode_length=64)
OBS_SPEC = {"camera": T.ImageSpec(), "mission": T.TextSpec(), "proprio": T.ContinuousSpec((3,))}
ACT_SPEC = {
  "button": T.DiscreteSpec((), num_values=4),
  "torque": T.ContinuousSpec((2,), mu_law=False),
}


@pytest.fixture(scope="module")
def params():
  return nn.unbox(jax.jit(lambda r: init_variables(CFG, r))(jax.random.key(3)))["params"]


@functools.partial(jax.jit, static_argnames="model")
def _forward(params, batch, model):
  """The full (uncached) forward pass: jitted, as op by op each new shape costs seconds."""
  return model.apply({"params": params}, batch)


def _episode(num_steps, seed=0):
  rng = np.random.default_rng(seed)
  obs = {
    "camera": rng.integers(0, 256, (num_steps, 16, 32, 3), dtype=np.uint8),
    "mission": np.tile(rng.integers(0, 32000, (1, 2)), (num_steps, 1)),
    "proprio": rng.standard_normal((num_steps, 3)).astype(np.float32),
  }
  act = {
    "button": rng.integers(0, 4, num_steps).astype(np.int32),
    "torque": rng.uniform(-1, 1, (num_steps, 2)).astype(np.float32),
  }
  return T.tokenize_episode(obs, act, OBS_SPEC, ACT_SPEC)


def _slice(batch, start, stop, patch_start, patch_stop):
  cut = lambda x: x[:, start:stop]
  cut_patches = lambda x: x[:, patch_start:patch_stop]
  return batch.replace(
    tokens=cut(batch.tokens),
    kinds=cut(batch.kinds),
    local_positions=cut(batch.local_positions),
    loss_mask=cut(batch.loss_mask),
    segment_ids=cut(batch.segment_ids),
    patches=cut_patches(batch.patches),
    patch_rows=cut_patches(batch.patch_rows),
    patch_cols=cut_patches(batch.patch_cols),
  )


@pytest.mark.parametrize("encoding", ["none", "rope"])
def test_cached_logits_match_full_forward_pass(params, encoding):
  config = dataclasses.replace(CFG, position_encoding=encoding)
  groups = [_episode(3, seed) for seed in range(2)]
  length = groups[0].num_tokens  # 3 x (2 patches + 2 text + 3 proprio + | + 3 action) = 33
  batch = batch_from_token_groups(groups, length, 6, CFG.patch_dim)
  full = np.asarray(_forward(params, batch, Gato(config)))
  decoder = CachedDecoder(config, params, 2)
  split = 13  # Mid-timestep: the prefix holds the first step and part of the second.
  patches_before = int((batch.kinds[0, :split] == T.TokenKind.IMAGE_PATCH).sum())
  logits, decoder.cache = prefill(
    params, decoder.cache, _slice(batch, 0, split, 0, patches_before), model=decoder.model
  )
  chunks = [np.asarray(logits)]
  patch = patches_before
  for t in range(split, length):
    is_patch = int(batch.kinds[0, t] == T.TokenKind.IMAGE_PATCH)
    logits, decoder.cache = prefill(
      params, decoder.cache, _slice(batch, t, t + 1, patch, patch + is_patch), model=decoder.model
    )
    patch += is_patch
    chunks.append(np.asarray(logits))
  cached = np.concatenate(chunks, axis=1)
  valid = slice(0, T.VOCAB_SIZE)
  np.testing.assert_allclose(cached[..., valid], full[..., valid], atol=2e-5, rtol=1e-5)


def _context(num_rows=2, num_steps=2, pad_to=None):
  groups = []
  for seed in range(num_rows):
    episode = _episode(num_steps, seed)
    # Keep everything up to and including the last separator: the agent must now act.
    last_separator = int(np.flatnonzero(episode.tokens == T.SEPARATOR_ID)[-1])
    groups.append(
      jax.tree.map(
        lambda x: x,
        episode.replace(
          tokens=episode.tokens[: last_separator + 1],
          kinds=episode.kinds[: last_separator + 1],
          local_positions=episode.local_positions[: last_separator + 1],
          loss_mask=episode.loss_mask[: last_separator + 1],
          timesteps=episode.timesteps[: last_separator + 1],
        ),
      )
    )
  length = pad_to or groups[0].num_tokens
  # Each step's 2 patches and 2 empty slots: 2 steps padded to 33 tokens take the shapes of
  # test_cached_logits_*'s batch, whose forward pass is then compiled once.
  num_patches = 2 * num_steps + 2
  return batch_from_token_groups(groups, length, num_patches, CFG.patch_dim, pad_side="left")


def test_decode_action_is_valid_and_matches_greedy_argmax(params):
  # Left-padded to 33 tokens, the length whose forward pass test_cached_logits_* compiles.
  context = _context(pad_to=33)
  action, ids = decode_action(CFG, params, context, ACT_SPEC)
  ids = np.asarray(ids)
  assert ids.shape == (2, 3)
  assert np.all((ids[:, 0] >= 32000) & (ids[:, 0] < 32004))  # Button masked to its 4 values.
  assert np.all((ids[:, 1:] >= 32000) & (ids[:, 1:] < 33024))
  assert action["button"].shape == (2,) and action["torque"].shape == (2, 2)
  np.testing.assert_array_equal(action["button"], ids[:, 0] - 32000)
  # The first token is the masked argmax of the full forward pass's last position.
  logits = np.asarray(_forward(params, context, Gato(CFG)))[:, -1]
  np.testing.assert_array_equal(ids[:, 0], 32000 + logits[:, 32000:32004].argmax(-1))


def test_left_padding_does_not_change_decisions(params):
  _, ids = decode_action(CFG, params, _context(), ACT_SPEC)
  _, padded_ids = decode_action(CFG, params, _context(pad_to=33), ACT_SPEC)
  np.testing.assert_array_equal(ids, padded_ids)


def test_temperature_sampling_uses_the_rng(params):
  context = _context(pad_to=33)
  draws = {
    tuple(
      np.asarray(decode_action(CFG, params, context, ACT_SPEC, jax.random.key(s), 5.0)[1]).ravel()
    )
    for s in range(4)
  }
  assert len(draws) > 1
  for draw in draws:
    assert all(32000 <= i < 33024 for i in draw)


def test_cache_overflow_is_an_error(params):
  decoder = CachedDecoder(CFG, params, 2)
  decoder.act(_context(pad_to=33), ACT_SPEC)  # 33 context and 3 action tokens.
  # 26 more context tokens would fit (62 of 64), not with their action's 3.
  with pytest.raises(ValueError, match="cache holds 36 of 64 tokens and cannot take 29 more"):
    decoder.act(_context(pad_to=26), ACT_SPEC)
  with pytest.raises(ValueError, match="batch has 2 rows, the decoder 3"):
    CachedDecoder(CFG, params, 3).append(_context())


# --- The sliding cache (the paper's "Transformer-XL memory") ------------------------------------

WINDOW = 16
SLIDING = dataclasses.replace(CFG, max_decode_length=WINDOW, decode_cache="sliding")


def _banded_attention(next_fun, args, kwargs, context):
  """Interceptor: each Attention call of a full forward pass computed with an explicit banded
  mask, each real query seeing itself and its row's WINDOW - 1 real tokens before it, within its
  segment (padding, segment 0, neither counts nor is seen)."""
  if not isinstance(context.module, Attention) or context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  x, segment_ids = args
  weights = context.module.variables["params"]
  # [B, T, E] x [E, H, Dh] -> [B, T, H, Dh]
  q, k, v = (jnp.einsum("bte,ehd->bthd", x, weights[n]) for n in ("query", "key", "value"))
  real = segment_ids > 0
  positions = jnp.cumsum(real, axis=1) - 1  # [B, T]: each row counts its real tokens.
  if context.module.config.position_encoding == "rope":
    q, k = rotary(q, positions), rotary(k, positions)
  offset = positions[:, :, None] - positions[:, None, :]  # [B, T, T]
  band = (offset >= 0) & (offset < WINDOW) & real[:, None, :]
  mask = band & (segment_ids[:, :, None] == segment_ids[:, None, :])  # [B, T, T]
  mask |= jnp.eye(x.shape[1], dtype=bool)[None]  # Padding queries see themselves (unused).
  out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")
  return jnp.einsum("bthd,hde->bte", out, weights["out"])  # [B, T, H, Dh] -> [B, T, E]


@functools.partial(jax.jit, static_argnames="model")
def _banded_forward(params, batch, model):
  with nn.intercept_methods(_banded_attention):
    return model.apply({"params": params}, batch)


def _sliding_batch():
  """Two rows of 6 timesteps (66 tokens, 4 windows): row 1 starts with padding and holds two
  segments, as a row of the agent's batch that starts a new episode; row 0 has padding where a
  chunk starts, as a row whose observation is shorter than another's."""
  groups = [_episode(6, seed) for seed in range(2)]
  length = groups[0].num_tokens
  batch = batch_from_token_groups(groups, length, 12, CFG.patch_dim)
  segments = np.ones((2, length), np.int32)
  segments[1, :3] = 0
  segments[1, 40:] = 2
  segments[0, 22:25] = 0
  return batch.replace(segment_ids=segments), length


@pytest.mark.parametrize("encoding", ["none", "rope"])
def test_sliding_cache_is_a_banded_causal_forward_pass(params, encoding):
  batch, length = _sliding_batch()
  model = Gato(dataclasses.replace(SLIDING, position_encoding=encoding))
  banded = np.asarray(_banded_forward(params, batch, model))
  # The plain causal pass over the first 3 timesteps (the shape test_cached_logits_* compiles):
  # every row's window fills within them.
  head = 33
  head_patches = int((batch.kinds[0, :head] == T.TokenKind.IMAGE_PATCH).sum())
  plain = np.asarray(
    _forward(
      params,
      _slice(batch, 0, head, 0, head_patches),
      Gato(dataclasses.replace(CFG, position_encoding=encoding)),
    )
  )[..., : T.VOCAB_SIZE]
  # Chunks of 1 to WINDOW tokens, four of them wrapping around the ring's end; each round of
  # sizes covers 3 timesteps, so the second round reuses the first's compiled shapes.
  sizes = [5, 1, 16, 11] * 2
  cache, start, patch, chunks = init_cache(model.config, 2), 0, 0, []
  for size in sizes:
    stop = min(start + size, length)
    num_patches = int((batch.kinds[0, start:stop] == T.TokenKind.IMAGE_PATCH).sum())
    logits, cache = prefill(
      params, cache, _slice(batch, start, stop, patch, patch + num_patches), model=model
    )
    chunks.append(np.asarray(logits))
    start, patch = stop, patch + num_patches
  assert start == length
  real = batch.segment_ids > 0  # Padding's logits are never used.
  cached = np.concatenate(chunks, axis=1)[..., : T.VOCAB_SIZE]
  np.testing.assert_allclose(cached[real], banded[..., : T.VOCAB_SIZE][real], atol=1e-5, rtol=1e-5)
  # Until a row's window is full, the band is the plain causal mask.
  filling = real & (np.cumsum(real, axis=1) <= WINDOW)
  assert not filling[:, head:].any()
  filling, full = filling[:, :head], (real & ~filling)[:, :head]
  np.testing.assert_allclose(cached[:, :head][filling], plain[filling], atol=1e-5, rtol=1e-5)
  # And past it the band matters: the plain pass sees older tokens.
  assert np.abs(cached[:, :head][full] - plain[full]).max() > 1e-3


def test_sliding_decoder_never_fills_but_takes_at_most_a_window_per_call(params):
  decoder = CachedDecoder(SLIDING, params, 2)
  for _ in range(3):  # 3 x (12 + 3) tokens: past the 16-token window.
    ids, _ = decoder.act(_context(num_steps=1, pad_to=12), ACT_SPEC)
  assert decoder.length == 45 and np.asarray(ids).shape == (2, 3)
  # A call takes its context (19 tokens) and its action (3).
  with pytest.raises(ValueError, match="cannot take 22 tokens in one call"):
    decoder.act(_context(num_steps=2), ACT_SPEC)
  with pytest.raises(ValueError, match="at most max_decode_length=16 tokens per call, got 19"):
    prefill(params, init_cache(SLIDING, 2), _context(num_steps=2), model=Gato(SLIDING))


def test_fused_acting_matches_append_then_decode(params):
  """`CachedDecoder.act` (one call, logits over the action ids alone, the last action token fed
  with the next context) decides exactly as `append` then `decode_tokens` (whole vocabulary,
  every token fed at once), step after step; sampling draws from the same distribution."""
  groups = [_episode(3, seed) for seed in range(2)]
  steps = []  # Each timestep's observation (8 tokens up to its separator) as a [2, 11] batch.
  for t in range(3):
    rows = []
    for group in groups:
      stop = np.flatnonzero(group.tokens == T.SEPARATOR_ID)[t] + 1
      start = 0 if t == 0 else np.flatnonzero(group.tokens == T.SEPARATOR_ID)[t - 1] + 4
      cut = lambda x, start=start, stop=stop: x[start:stop]
      rows.append(
        group.replace(
          tokens=cut(group.tokens),
          kinds=cut(group.kinds),
          local_positions=cut(group.local_positions),
          loss_mask=cut(group.loss_mask),
          timesteps=cut(group.timesteps),
          patches=group.patches[2 * t : 2 * t + 2],
          patch_rows=group.patch_rows[2 * t : 2 * t + 2],
          patch_cols=group.patch_cols[2 * t : 2 * t + 2],
        )
      )
    # One padded length for every step (each then compiles once), padding inside the cache.
    steps.append(batch_from_token_groups(rows, 11, 2, CFG.patch_dim, pad_side="left"))
  low, high = 32000, 33024  # The window of ACT_SPEC's ids (button's 4 and torque's bins).
  id_ranges = jnp.asarray(T.action_token_id_ranges(ACT_SPEC))
  before, after = CachedDecoder(CFG, params, 2), CachedDecoder(CFG, params, 2)
  for t, batch in enumerate(steps):
    logits = before.append(batch)
    ids, before.cache = decode_tokens(
      before.params,
      before.cache,
      logits,
      id_ranges,
      jax.random.key(0),
      segment_ids=batch.segment_ids[:, -1],
      model=before.model,
      temperature=0.0,
      feed_last=True,
    )
    fused_ids, fused_logits = after.act(batch, ACT_SPEC)
    np.testing.assert_array_equal(np.asarray(fused_ids), np.asarray(ids))
    np.testing.assert_allclose(
      np.asarray(fused_logits), np.asarray(logits)[:, low:high], atol=2e-5, rtol=1e-5
    )
    assert after.num_pending == 1 and after.length == (t + 1) * (11 + 3)
  # The pending token goes in ahead of a plain `append` too.
  np.testing.assert_allclose(
    np.asarray(after.append(steps[0]))[:, : T.VOCAB_SIZE],
    np.asarray(before.append(steps[0]))[:, : T.VOCAB_SIZE],
    atol=2e-5,
    rtol=1e-5,
  )
  assert after.num_pending == 0
  # Sampling: the same distribution over the button's 4 valid ids as the whole vocabulary's in
  # the full forward pass (the draws themselves differ, the noise being drawn over the window
  # rather than the whole table). The context and temperature of
  # test_temperature_sampling_uses_the_rng, whose compiled call this reuses.
  context, temperature = _context(pad_to=33), 5.0
  probs = lambda logits, offset: jax.nn.softmax(
    mask_to_range(jnp.asarray(logits) / temperature, 32000, 32004, offset)
  )
  full = probs(_forward(params, context, Gato(CFG))[:, -1], 0)[:, 32000:32004]
  decoder = CachedDecoder(CFG, params, 2)
  ids, window = decoder.act(context, ACT_SPEC, jax.random.key(1), temperature)
  np.testing.assert_allclose(probs(window, low)[:, :4], full, atol=1e-6)
  assert np.all((np.asarray(ids)[:, 0] >= 32000) & (np.asarray(ids)[:, 0] < 32004))
