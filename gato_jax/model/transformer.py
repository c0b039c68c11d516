"""The pre-norm causal decoder: attention with a key/value cache, MLP, stochastic depth.

Attention runs through `jax.nn.dot_product_attention`, so on GPU cuDNN's fused kernel serves it
when `attention_impl="cudnn"`. In decoding mode each layer keeps a cache of keys, values and
segment ids in the "cache" collection; a call with n tokens writes them at the cache index and
attends to everything cached so far, which serves prefill (n = context) and single steps alike.
With `decode_cache="sliding"` the cache is a ring per row of its newest `max_decode_length` real
tokens that decoding never outgrows (`Attention._sliding_cache_attention`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gato_jax.model.config import ModelConfig
from gato_jax.model.embeddings import ACT, dense_init


ROTARY_BASE = 10_000.0


def rotary(x, positions):
  """Rotary position embedding (Su et al., 2021) of x [B, T, H, Dh] at int positions [B, T]: a
  query and key then score by their offset only, so shifted windows and refilled caches mean
  the same."""
  half = x.shape[-1] // 2
  inverse_freq = ROTARY_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None, None].astype(jnp.float32) * inverse_freq  # [B, T, 1, Dh/2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


class Attention(nn.Module):
  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x, segment_ids):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def projection(name):
      # [B, T, E] x [E, H, Dh] -> [B, T, H, Dh]
      kernel = self.param(
        name,
        nn.with_logical_partitioning(
          nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2)
          ),
          ("embed", "heads", "kv"),
        ),
        (cfg.width, cfg.num_heads, cfg.head_dim),
        cfg.param_dtype,
      )
      return jnp.einsum("bte,ehd->bthd", x.astype(dtype), kernel.astype(dtype))

    q, k, v = projection("query"), projection("key"), projection("value")
    act_heads = ("act_batch", "act_len", "act_heads", None)
    q, k, v = (nn.with_logical_constraint(a, act_heads) for a in (q, k, v))

    batch, length = x.shape[:2]
    # A token's position is its row's count of real tokens before it: decoding left-pads rows
    # to a common chunk length, so a slot index would count padding between chunks.
    real = segment_ids > 0
    positions = jnp.cumsum(real, axis=1, dtype=jnp.int32) - 1  # [B, T]
    row_seen = None
    if self.decode and (cfg.position_encoding == "rope" or cfg.decode_cache == "sliding"):
      # One per-row count of real tokens written so far: rotary positions and the sliding ring
      # both continue from it.
      seen = self.variable("cache", "row_seen", lambda: jnp.zeros((batch,), jnp.int32))
      row_seen = seen.value
      positions = positions + row_seen[:, None]
      if not self.is_initializing():
        seen.value = row_seen + jnp.sum(real, axis=1, dtype=jnp.int32)
    if cfg.position_encoding == "rope":
      q, k = rotary(q, positions), rotary(k, positions)

    if self.decode and cfg.decode_cache == "sliding":
      out = self._sliding_cache_attention(
        q, k.astype(dtype), v.astype(dtype), segment_ids, real, positions, row_seen
      )
    elif self.decode:
      # Heads before positions [B, H, S, Dh]: attention's batched matmuls read the cache as it
      # lies, where [B, S, H, Dh] made XLA transpose all of it at every decoding step.
      cache_shape = (batch, cfg.num_heads, cfg.max_decode_length, cfg.head_dim)
      cached_key = self.variable("cache", "key", jnp.zeros, cache_shape, dtype)
      cached_value = self.variable("cache", "value", jnp.zeros, cache_shape, dtype)
      cached_segments = self.variable(
        "cache", "segment_ids", jnp.zeros, (batch, cfg.max_decode_length), jnp.int32
      )
      cache_index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      index = cache_index.value
      heads_first = lambda a: jnp.swapaxes(a.astype(dtype), 1, 2)  # [B, T, H, Dh] -> [B, H, T, Dh]
      k = jax.lax.dynamic_update_slice(cached_key.value, heads_first(k), (0, 0, index, 0))
      v = jax.lax.dynamic_update_slice(cached_value.value, heads_first(v), (0, 0, index, 0))
      key_segments = jax.lax.dynamic_update_slice(cached_segments.value, segment_ids, (0, index))
      if not self.is_initializing():
        cached_key.value, cached_value.value = k, v
        cached_segments.value = key_segments
        cache_index.value = index + length
      # Query i sits at absolute position index + i; keys beyond it are not yet (validly) cached.
      query_pos = index + jnp.arange(length)
      causal = jnp.arange(cfg.max_decode_length)[None, :] <= query_pos[:, None]  # [T, S]
      same_segment = segment_ids[:, :, None] == key_segments[:, None, :]  # [B, T, S]
      mask = (causal[None] & same_segment)[:, None]  # [B, 1, T, S]
      k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, H, S, Dh] -> [B, S, H, Dh]
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=cfg.attention_impl)
    elif cfg.attention_impl == "cudnn":
      # cuDNN's fused kernel takes lengths, not arbitrary masks: one right-padded segment per row.
      lengths = jnp.sum(segment_ids > 0, axis=-1).astype(jnp.int32)
      out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        is_causal=True,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation="cudnn",
      )
    else:
      # Packed sequences never attend across segments; padding (segment 0) attends to padding.
      mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [B, 1, T, T]
      out = jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=True, implementation=cfg.attention_impl
      )
    out = nn.with_logical_constraint(out, act_heads)
    # [B, T, H, Dh] x [H, Dh, E] -> [B, T, E]
    kernel = self.param(
      "out",
      nn.with_logical_partitioning(
        nn.initializers.variance_scaling(
          1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2
        ),
        ("heads", "kv", "embed"),
      ),
      (cfg.num_heads, cfg.head_dim, cfg.width),
      cfg.param_dtype,
    )
    return jnp.einsum("bthd,hde->bte", out, kernel.astype(dtype))

  def _sliding_cache_attention(self, q, k, v, segment_ids, real, query_positions, row_seen):
    """Attention through a ring of each row's newest W = max_decode_length real tokens.

    Keys carry no position (position_encoding "none") or their rotary one (a query scores them
    by offset), so a key means the same wherever it sits in the ring. Padding (segment id 0;
    rows are left-padded to a common chunk length) is neither written nor attended to, so each
    row's ring holds its own last W real tokens: row b's n_b real tokens of a chunk (n_b <= W)
    go to slots (seen_b + i) mod W, where seen_b = `row_seen[b]` counts the real tokens the row
    has ever written (its `query_positions` continue from it), and its query at position p
    attends to the keys at positions (p - W, p] of its own segment. This is a full forward pass
    over each row's real tokens with that banded causal mask, computed one chunk at a time.
    """
    cfg = self.config
    window = cfg.max_decode_length
    batch, length = q.shape[:2]
    if length > window:
      raise ValueError(
        f"a sliding decode cache takes at most max_decode_length={window} tokens per call,"
        f" got {length}"
      )
    cache_shape = (batch, window, cfg.num_heads, cfg.head_dim)
    cached_key = self.variable("cache", "key", jnp.zeros, cache_shape, k.dtype)
    cached_value = self.variable("cache", "value", jnp.zeros, cache_shape, v.dtype)
    cached_segments = self.variable("cache", "segment_ids", jnp.zeros, (batch, window), jnp.int32)
    seen = row_seen[:, None]  # [B, 1]
    # Slot s holds the row's newest position q < seen_b with q = s (mod W); a negative one was
    # never written.
    slot_positions = seen - 1 - jnp.mod(seen - 1 - jnp.arange(window), window)  # [B, W]
    # Attend before writing: the chunk's slots still hold keys that its earlier queries see.
    keys = jnp.concatenate([cached_key.value, k], axis=1)  # [B, W + T, H, Dh]
    values = jnp.concatenate([cached_value.value, v], axis=1)
    key_segments = jnp.concatenate([cached_segments.value, segment_ids], axis=1)  # [B, W + T]
    key_positions = jnp.concatenate([slot_positions, query_positions], axis=1)  # [B, W + T]
    key_real = jnp.concatenate([slot_positions >= 0, real], axis=1)  # [B, W + T]
    offset = query_positions[:, :, None] - key_positions[:, None, :]  # [B, T, W + T]
    same_segment = segment_ids[:, :, None] == key_segments[:, None, :]
    mask = (offset >= 0) & (offset < window) & key_real[:, None, :] & same_segment
    # A padding query sees only itself (its output is never used; a query must see something).
    itself = jnp.arange(length)[:, None] + window == jnp.arange(window + length)[None, :]
    mask = jnp.where(real[:, :, None], mask, itself[None])  # [B, T, W + T]
    out = jax.nn.dot_product_attention(
      q, keys, values, mask=mask[:, None], implementation=cfg.attention_impl
    )
    if not self.is_initializing():
      # Padding goes to slot W, outside the ring, and is dropped; real slots are distinct.
      slots = jnp.where(real, jnp.mod(query_positions, window), window)  # [B, T]
      rows = jnp.arange(batch)[:, None]
      cached_key.value = cached_key.value.at[rows, slots].set(k, mode="drop")
      cached_value.value = cached_value.value.at[rows, slots].set(v, mode="drop")
      cached_segments.value = cached_segments.value.at[rows, slots].set(segment_ids, mode="drop")
    return out


class Mlp(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    act_mlp = ("act_batch", "act_len", "act_mlp")
    up = lambda features, name: nn.Dense(
      features,
      dtype=dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=dense_init(("embed", "mlp")),
      name=name,
    )(x)
    if cfg.mlp_activation == "geglu":
      # The up-projection's mlp_dim outputs, as two kernels (value, gate) of mlp_dim / 2 each so
      # that each splits over `mlp` on its own: [B, T, E] -> [B, T, F/2] twice.
      h = up(cfg.mlp_dim // 2, "up") * nn.gelu(up(cfg.mlp_dim // 2, "gate"))
    else:
      h = nn.gelu(up(cfg.mlp_dim, "up"))  # [B, T, E] -> [B, T, F]
    h = nn.with_logical_constraint(h, act_mlp)
    return nn.Dense(
      cfg.width,
      dtype=dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=dense_init(("mlp", "embed")),
      name="down",
    )(h)


class Block(nn.Module):
  """x + drop(attention(norm(x))), then x + drop(mlp(norm(x)))."""

  config: ModelConfig
  train: bool = False
  decode: bool = False

  def _residual(self, x, branch):
    cfg = self.config
    if self.train and cfg.dropout:
      branch = nn.Dropout(cfg.dropout, deterministic=False)(branch)
    if self.train and cfg.stochastic_depth:
      # Stochastic depth: the whole branch is skipped per example, survivors scaled up so the
      # expected residual matches evaluation, where every branch runs.
      keep = 1.0 - cfg.stochastic_depth
      mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1))
      branch = jnp.where(mask, branch / keep, 0)
    return nn.with_logical_constraint(x + branch.astype(x.dtype), ACT)

  @nn.compact
  def __call__(self, x, segment_ids):
    cfg = self.config
    norm = lambda name: nn.LayerNorm(
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=cfg.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      name=name,
    )
    x = self._residual(
      x, Attention(cfg, self.decode, name="attention")(norm("norm_attention")(x), segment_ids)
    )
    x = self._residual(x, Mlp(cfg, name="mlp")(norm("norm_mlp")(x)))
    return x, None  # (carry, output) as nn.scan expects.


_REMAT_POLICIES = {
  "full": None,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Decoder(nn.Module):
  """`num_layers` blocks, scanned (one compiled layer) or unrolled, optionally rematerialised."""

  config: ModelConfig
  train: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x, segment_ids):
    cfg = self.config
    block = Block
    if cfg.remat_policy != "none":
      block = nn.remat(
        block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
      )
    if cfg.scan_layers:
      stack = nn.scan(
        block,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, self.train, self.decode, name="layers")
      x, _ = stack(x, segment_ids)
    else:
      for i in range(cfg.num_layers):
        x, _ = block(cfg, self.train, self.decode, name=f"layer_{i}")(x, segment_ids)
    return x
