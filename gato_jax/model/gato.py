"""Gato: embeddings, the causal decoder, and logits over the shared token table.

Applied as a pure function: `Gato(cfg).init(rngs, batch)` returns the variables and
`Gato(cfg).apply(variables, batch, train=..., rngs=...)` the logits; decoding adds the mutable
"cache" collection (see gato_jax.inference).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gato_jax import sharding
from gato_jax.model.config import ModelConfig
from gato_jax.model.embeddings import Embedder, group_rows
from gato_jax.model.inputs import Batch
from gato_jax.model.transformer import Decoder
from gato_jax.tokenizer.constants import TokenKind, VALUE_OFFSET, VOCAB_SIZE, padded_vocab_size


class Gato(nn.Module):
  config: ModelConfig

  @property
  def vocab_size(self) -> int:
    return padded_vocab_size(self.config.vocab_multiple)

  @nn.compact
  def __call__(
    self,
    batch: Batch,
    train: bool = False,
    decode: bool = False,
    positions=None,
    patch_budget: tuple[int, int] | None = None,
    action_positions=None,
    id_window: tuple[int, int] | None = None,
  ):
    """Returns float32 logits [B, T, padded vocab]; rows past the real vocabulary are -inf-like.

    Args:
      batch: the inputs; position t's logits predict the token at t + 1.
      train: enables stochastic depth, dropout and sampled patch positions (needs the
        "dropout" and "patch_positions" rngs).
      decode: reads and extends the key/value cache (mutable "cache" collection).
      positions: optional int32 [G, K], G dividing B: project only these positions, giving
        logits [G, K, V]. Group g is rows g B/G .. (g + 1) B/G - 1 flattened, so position
        i t + j is row g B/G + i, column j (G = B: K positions of each row). Training needs
        logits only where the next token is a target, a few percent of the positions in
        control data, and the vocabulary projection is the costliest layer of the small
        models; a group per batch shard keeps the gather on its device.
      patch_budget: optional static (G, N): the ResNet embeds only each group's first N real
        patches (grouped as `positions`) instead of all B x P slots (see Embedder).
      action_positions: optional int32 [G, Ka] (needs `positions`): more positions, grouped
        alike, projected onto the action ids [VALUE_OFFSET, VOCAB_SIZE) only; the call then
        returns (logits [G, K, V], action logits [G, Ka, VOCAB_SIZE - VALUE_OFFSET]). Where
        training normalises action targets over the action ids alone, their logits cost
        1,025 table rows instead of 33,025.
      id_window: optional static (low, high): the logits cover ids [low, high) only, [..., high -
        low], logit j being id low + j. Decoding an action needs only its ids' logits: a
        CartPole action's 2 table rows instead of 33,152 for every row of the batch at every
        step (`inference.decode`).
    """
    cfg = self.config
    embedder = Embedder(cfg, self.vocab_size, name="embedder")
    x = embedder(batch, train, patch_budget)
    x = Decoder(cfg, train, decode, name="decoder")(x, batch.segment_ids)
    if action_positions is not None and positions is None:
      raise ValueError("action_positions need positions (the other targets' predictors)")
    if positions is not None:
      x = nn.with_logical_constraint(
        group_rows(x, positions.shape[0]), ("act_batch", None, "act_embed")
      )  # [B, T, E] -> [G, (B/G) T, E]
      if action_positions is not None:  # One gather and norm for both heads: [G, K + Ka].
        positions = jnp.concatenate([positions, action_positions], axis=1)
      x = jnp.take_along_axis(x, positions[..., None], axis=1)  # -> [G, K, E]
    x = nn.LayerNorm(
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=cfg.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      name="final_norm",
    )(x)
    if action_positions is not None:
      split = positions.shape[1] - action_positions.shape[1]
      action_logits = embedder.logits(x[:, split:], VALUE_OFFSET, VOCAB_SIZE)
      x = x[:, :split]
    low, high = id_window or (0, self.vocab_size)
    if not 0 <= low < high <= self.vocab_size:
      raise ValueError(f"id_window {id_window} is not a non-empty range of [0, {self.vocab_size})")
    logits = embedder.logits(x, low, high)
    # Padding rows of the table are never targets; mask them so no probability leaks there.
    valid = low + jnp.arange(high - low) < VOCAB_SIZE
    logits = jnp.where(valid, logits, -1e9)
    return logits if action_positions is None else (logits, action_logits)


def dummy_batch(
  batch_size: int = 1, seq_len: int = 8, num_patches: int = 0, config: ModelConfig | None = None
) -> Batch:
  """A shape-only batch for `init` and `eval_shape`."""
  patch_dim = config.patch_dim if config is not None else 16 * 16 * 3
  zeros = lambda *shape, dtype=np.int32: np.zeros(shape, dtype)
  return Batch(
    tokens=zeros(batch_size, seq_len),
    kinds=np.full((batch_size, seq_len), TokenKind.VALUE, np.int32),
    local_positions=zeros(batch_size, seq_len),
    loss_mask=zeros(batch_size, seq_len, dtype=bool),
    segment_ids=np.ones((batch_size, seq_len), np.int32),
    patches=zeros(batch_size, num_patches, patch_dim, dtype=np.float32),
    patch_rows=zeros(batch_size, num_patches, 2, dtype=np.float32),
    patch_cols=zeros(batch_size, num_patches, 2, dtype=np.float32),
  )


def init_variables(config: ModelConfig, rng, batch: Batch | None = None):
  """Boxed (logically annotated) parameters; the batch needs a patch for the ResNet to exist."""
  batch = batch if batch is not None else dummy_batch(num_patches=1, config=config)
  return Gato(config).init({"params": rng}, batch, train=False)


def param_shapes(config: ModelConfig) -> Any:
  """The boxed (logically annotated) parameters as shapes alone: nothing is built."""
  return jax.eval_shape(lambda r: init_variables(config, r)["params"], jax.random.key(0))


def abstract_params(config: ModelConfig, mesh: jax.sharding.Mesh, rules) -> tuple[Any, Any]:
  """(The parameters as ShapeDtypeStructs carrying their shardings on `mesh` under `rules`,
  those shardings): what a restore reads parameters into, shard by shard; nothing is built."""
  return sharding.sharded_abstract(param_shapes(config), mesh, rules)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))
