"""Gato's input embeddings (GATO_SPEC.md, Embeddings).

- Ids: one learned table, shared with the output projection (`Gato.logits`).
- Image patches: one pre-activation ResNet-v2 block (GroupNorm with 32 groups, GELU), projected
  to the model width, plus learned row and column encodings of the patch's position.
- Local observation positions: a learned table indexed by a token's position inside its
  timestep's observation; the separator and action tokens get none.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gato_jax.model.config import ModelConfig
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.constants import TokenKind

# Logical axis names of weights and activations; the sharding rules map them to mesh axes.
ACT = ("act_batch", "act_len", "act_embed")


def dense_init(axes):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def lookup(table, ids, dtype):
  """Rows of a (possibly FSDP-sharded) table: [V, E] x [...] -> [..., E].

  The table is gathered whole first, as FSDP does for every weight before use; a gather from a
  table split along `embed` into a batch-split output would make XLA replicate everything.
  """
  table = nn.with_logical_constraint(table, (None, None))
  return jnp.take(table, ids, axis=0).astype(dtype)


class PatchResNet(nn.Module):
  """Patch vectors [N, P*P*C] -> embeddings [N, width] through one ResNet-v2 block."""

  config: ModelConfig

  @nn.compact
  def __call__(self, patches):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    n = patches.shape[0]
    # [N, P*P*C] -> [N, P, P, C]: the tokenizer flattens (row, column, channel).
    x = patches.reshape(n, cfg.patch_size, cfg.patch_size, cfg.image_channels).astype(dtype)
    conv = lambda name: nn.Conv(
      cfg.patch_resnet_channels,
      (3, 3),
      dtype=dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=dense_init((None, None, None, None)),
      name=name,
    )
    norm = lambda name: nn.GroupNorm(
      num_groups=32, dtype=dtype, param_dtype=cfg.param_dtype, name=name
    )
    x = conv("stem")(x)
    h = conv("conv1")(nn.gelu(norm("norm1")(x)))
    h = conv("conv2")(nn.gelu(norm("norm2")(h)))
    x = nn.gelu(norm("norm_out")(x + h))
    # [N, P, P, c] -> [N, P/pool, P/pool, c]: keeps coarse spatial layout at a small projection.
    x = nn.avg_pool(x, (cfg.patch_pool, cfg.patch_pool), strides=(cfg.patch_pool, cfg.patch_pool))
    x = x.reshape(n, -1)
    return nn.Dense(
      cfg.width,
      dtype=dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=dense_init((None, "embed")),
      name="project",
    )(x)


def patch_position_bins(intervals, num_bins: int, train: bool, rng=None):
  """Normalised [start, end) intervals [..., 2] -> int32 bins [...].

  The interval is quantised to [low, high) bins; training samples a bin uniformly inside it,
  evaluation takes the bin at the interval's mean (GATO_SPEC.md, Embeddings).
  """
  low = jnp.round(intervals[..., 0] * num_bins).astype(jnp.int32)
  high = jnp.maximum(jnp.round(intervals[..., 1] * num_bins).astype(jnp.int32), low + 1)
  if train:
    u = jax.random.uniform(rng, low.shape)
    bins = low + jnp.floor(u * (high - low)).astype(jnp.int32)
  else:
    bins = (low + high) // 2
  return jnp.clip(bins, 0, num_bins - 1)


class Embedder(nn.Module):
  """Embeds a Batch into [B, T, width] and projects hidden states back to vocabulary logits."""

  config: ModelConfig
  vocab_size: int

  def setup(self):
    cfg = self.config
    self.token_table = self.param(
      "token_embedding",
      nn.with_logical_partitioning(
        nn.initializers.normal(stddev=cfg.width**-0.5), ("vocab", "embed")
      ),
      (self.vocab_size, cfg.width),
      cfg.param_dtype,
    )
    table_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
    self.local_position_table = self.param(
      "local_positions", table_init, (cfg.num_local_positions, cfg.width), cfg.param_dtype
    )
    self.patch_row_table = self.param(
      "patch_rows", table_init, (cfg.num_patch_position_bins, cfg.width), cfg.param_dtype
    )
    self.patch_col_table = self.param(
      "patch_cols", table_init, (cfg.num_patch_position_bins, cfg.width), cfg.param_dtype
    )
    self.patch_resnet = PatchResNet(cfg)

  def __call__(self, batch: Batch, train: bool):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x = nn.with_logical_constraint(lookup(self.token_table, batch.tokens, dtype), ACT)  # [B, T, E]
    b, t = batch.tokens.shape
    num_patches = batch.patches.shape[1]
    if num_patches:  # Static: batches without images skip the ResNet entirely.
      if batch.patches.shape[-1] != cfg.patch_dim:
        raise ValueError(
          f"patches have size {batch.patches.shape[-1]}, the model expects"
          f" {cfg.patch_dim} ({cfg.patch_size}x{cfg.patch_size}x{cfg.image_channels})"
        )
      patch_emb = self.patch_resnet(batch.patches.reshape(b * num_patches, -1))
      patch_emb = nn.with_logical_constraint(
        patch_emb.reshape(b, num_patches, cfg.width), ("act_batch", None, "act_embed")
      )  # [B, P, E]
      rng = self.make_rng("patch_positions") if train else None
      rng_rows, rng_cols = jax.random.split(rng) if train else (None, None)
      rows = patch_position_bins(batch.patch_rows, cfg.num_patch_position_bins, train, rng_rows)
      cols = patch_position_bins(batch.patch_cols, cfg.num_patch_position_bins, train, rng_cols)
      patch_emb = (
        patch_emb
        + lookup(self.patch_row_table, rows, dtype)
        + lookup(self.patch_col_table, cols, dtype)
      )
      is_patch = batch.kinds == TokenKind.IMAGE_PATCH  # [B, T]
      # The k-th patch slot of a row takes patches[k]: gather [B, P, E] -> [B, T, E].
      index = jnp.clip(jnp.cumsum(is_patch, axis=1) - 1, 0, num_patches - 1)
      gathered = nn.with_logical_constraint(
        jnp.take_along_axis(patch_emb, index[..., None], axis=1), ACT
      )
      x = jnp.where(is_patch[..., None], gathered, x)
    has_local = batch.local_positions >= 0
    # Observations longer than the table share its last entry rather than failing under jit.
    local = jnp.clip(batch.local_positions, 0, cfg.num_local_positions - 1)
    x = x + jnp.where(has_local[..., None], lookup(self.local_position_table, local, dtype), 0)
    return nn.with_logical_constraint(x.astype(dtype), ACT)

  def logits(self, x):
    """Hidden states [..., E] -> float32 logits [..., vocab_size] with the shared table."""
    # [B, T, E] x [V, E] -> [B, T, V]
    table = self.token_table.astype(x.dtype)
    return jnp.einsum("bte,ve->btv", x, table, preferred_element_type=jnp.float32)
