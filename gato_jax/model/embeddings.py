"""Gato's input embeddings (docs/design.md, Embeddings).

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
from gato_jax.tokenizer.constants import NUM_BINS, VALUE_OFFSET, TokenKind

# Logical axis names of weights and activations; the sharding rules map them to mesh axes.
ACT = ("act_batch", "act_len", "act_embed")


def dense_init(axes):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


VALUE_INIT_LENGTH_SCALE = 16.0  # Bins over which value_init_correlation's smooth part decays.
_VALUE_INIT_FEATURES = 512


def token_table_init(stddev: float, correlation: float):
  """Normal(stddev) rows, except the value bins' rows: sqrt(1 - c) i.i.d. normal plus sqrt(c) a
  smooth function of the bin (random Fourier features of a squared-exponential kernel), so that
  every row keeps variance stddev^2 and bins i, j start with correlation about
  c exp(-(i - j)^2 / (2 l^2))."""

  def init(key, shape, dtype=jnp.float32):
    table = jax.random.normal(key, shape, dtype) * stddev  # As nn.initializers.normal draws.
    if correlation == 0.0:
      return table
    freq_key, phase_key, weight_key = jax.random.split(jax.random.fold_in(key, 1), 3)
    bins = jnp.arange(NUM_BINS, dtype=jnp.float32)[:, None]
    freqs = jax.random.normal(freq_key, (_VALUE_INIT_FEATURES,)) / VALUE_INIT_LENGTH_SCALE
    phases = jax.random.uniform(phase_key, (_VALUE_INIT_FEATURES,), maxval=2 * jnp.pi)
    features = jnp.sqrt(2.0 / _VALUE_INIT_FEATURES) * jnp.cos(bins * freqs + phases)
    weights = stddev * jax.random.normal(weight_key, (_VALUE_INIT_FEATURES, shape[1]))
    rows = slice(VALUE_OFFSET, VALUE_OFFSET + NUM_BINS)
    mixed = jnp.sqrt(1.0 - correlation) * table[rows] + jnp.sqrt(correlation) * features @ weights
    return table.at[rows].set(mixed.astype(dtype))

  return init


def lookup(table, ids, dtype):
  """Rows of a (possibly FSDP-sharded) table: [V, E] x [...] -> [..., E].

  The table is gathered whole first, as FSDP does for every weight before use; a gather from a
  table split along `embed` into a batch-split output would make XLA replicate everything.
  """
  table = nn.with_logical_constraint(table, (None, None))
  return jnp.take(table, ids, axis=0).astype(dtype)


def group_rows(x, groups: int):
  """[B, T, ...] -> [G, (B/G) T, ...]: each group of B/G consecutive rows flattened into one.

  A group per batch shard (rows split over devices in contiguous blocks) keeps a gather along the
  flattened axis on its own device. [B] -> [G, B/G].
  """
  if x.shape[0] % groups:
    raise ValueError(f"{groups} groups do not divide the batch of {x.shape[0]} rows")
  return x.reshape((groups, -1) + x.shape[2:])


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
  evaluation takes the bin at the interval's mean (docs/design.md, Embeddings).
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
        token_table_init(cfg.width**-0.5, cfg.value_init_correlation), ("vocab", "embed")
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

  def __call__(self, batch: Batch, train: bool, patch_budget: tuple[int, int] | None = None):
    """Token, patch and local-position embeddings [B, T, width].

    `patch_budget` (G, N) runs the ResNet on each group's (see `group_rows`) first N real patches
    only, instead of on every one of the B x P slots: a batch pads every row to the longest
    row's patches, and a mixture with a few image rows would otherwise embed mostly padding.
    N must be at least the real patches of any group (the trainer's `step_budget`); N = 0 skips
    the ResNet (no row has an image).
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x = nn.with_logical_constraint(lookup(self.token_table, batch.tokens, dtype), ACT)  # [B, T, E]
    b, t = batch.tokens.shape
    num_patches = batch.patches.shape[1]
    groups, budget = patch_budget or (b, num_patches)
    if num_patches and budget:  # Static: batches without images skip the ResNet entirely.
      if batch.patches.shape[-1] != cfg.patch_dim:
        raise ValueError(
          f"patches have size {batch.patches.shape[-1]}, the model expects"
          f" {cfg.patch_dim} ({cfg.patch_size}x{cfg.patch_size}x{cfg.image_channels})"
        )
      is_patch = batch.kinds == TokenKind.IMAGE_PATCH  # [B, T]
      counts = jnp.sum(is_patch, axis=1)  # [B]: row b's patches are patches[b, :counts[b]].
      real = group_rows(jnp.arange(num_patches) < counts[:, None], groups)  # [G, (B/G) P]
      # Each group's real patches packed in row order: [G, N] indices into its slots.
      chosen = jax.vmap(lambda r: jnp.nonzero(r, size=budget, fill_value=0)[0])(real)
      take = lambda a: jnp.take_along_axis(
        group_rows(a, groups), chosen.reshape(chosen.shape + (1,) * (a.ndim - 2)), axis=1
      )
      patch_emb = self.patch_resnet(take(batch.patches).reshape(groups * budget, -1))
      patch_emb = nn.with_logical_constraint(
        patch_emb.reshape(groups, budget, cfg.width), ("act_batch", None, "act_embed")
      )  # [G, N, E]
      rng = self.make_rng("patch_positions") if train else None
      rng_rows, rng_cols = jax.random.split(rng) if train else (None, None)
      bins = cfg.num_patch_position_bins
      rows = patch_position_bins(take(batch.patch_rows), bins, train, rng_rows)
      cols = patch_position_bins(take(batch.patch_cols), bins, train, rng_cols)
      patch_emb = (
        patch_emb
        + lookup(self.patch_row_table, rows, dtype)
        + lookup(self.patch_col_table, cols, dtype)
      )
      # A patch slot's place among its group's packed patches: the earlier rows' real patches,
      # then its own rank in the row. Gather [G, N, E] -> [G, (B/G) T, E] -> [B, T, E].
      grouped = group_rows(counts, groups)
      before = (jnp.cumsum(grouped, axis=1) - grouped).reshape(b)
      index = jnp.clip(before[:, None] + jnp.cumsum(is_patch, axis=1) - 1, 0, budget - 1)
      gathered = jnp.take_along_axis(patch_emb, group_rows(index, groups)[..., None], axis=1)
      gathered = nn.with_logical_constraint(gathered.reshape(b, t, cfg.width), ACT)
      x = jnp.where(is_patch[..., None], gathered, x)
    has_local = batch.local_positions >= 0
    # Observations longer than the table share its last entry rather than failing under jit.
    local = jnp.clip(batch.local_positions, 0, cfg.num_local_positions - 1)
    x = x + jnp.where(has_local[..., None], lookup(self.local_position_table, local, dtype), 0)
    return nn.with_logical_constraint(x.astype(dtype), ACT)

  def logits(self, x, low: int = 0, high: int | None = None):
    """Hidden states [..., E] -> float32 logits [..., V] over ids [low, high) (default: every
    row) with the shared table."""
    # [B, T, E] x [V, E] -> [B, T, V]
    table = self.token_table[low:high].astype(x.dtype)
    return jnp.einsum("bte,ve->btv", x, table, preferred_element_type=jnp.float32)
