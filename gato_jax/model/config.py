"""Model hyper-parameters and the table of named sizes (docs/design.md, Transformer).

One knob picks a size, as big_vision's `decode_variant` does: `ModelConfig.from_size("79m")`,
or `experiments/configs/gato.py:79m` from the command line. Every field can still be
overridden individually.
"""

import dataclasses
from typing import Any, Mapping

from gato_jax.tokenizer.constants import NUM_LOCAL_POSITIONS, PATCH_SIZE


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that shapes the network; frozen so modules and jit can close over it."""

  num_layers: int = 8
  width: int = 768  # Model (embedding) dimension.
  num_heads: int = 24
  head_dim: int = 32
  mlp_dim: int = 3072  # FF hidden: the up-projection's output (value and gate halves for geglu).
  # gelu: down(gelu(up(x))). geglu (the paper's, Table C.1): the mlp_dim outputs split into a
  # value and a gate half, down(value * gelu(gate)), so the down-projection reads mlp_dim / 2.
  mlp_activation: str = "gelu"
  vocab_multiple: int = 128  # Embedding rows: 33,025 ids padded up to this multiple.
  # Image patches.
  patch_size: int = PATCH_SIZE
  image_channels: int = 3
  patch_resnet_channels: int = 32  # ResNet-v2 block width; GroupNorm needs a multiple of 32.
  patch_pool: int = 4  # Average-pool the block's output by this factor before projecting.
  num_patch_position_bins: int = 128
  num_local_positions: int = NUM_LOCAL_POSITIONS
  # Regularisation: each residual branch is skipped with this probability in training.
  stochastic_depth: float = 0.1
  dropout: float = 0.0  # On each residual branch's output, in training.
  # Numerics and memory.
  dtype: str = "bfloat16"  # Activations and matmuls.
  param_dtype: str = "float32"
  scan_layers: bool = True  # One compiled layer, scanned: compile time flat in depth.
  remat_policy: str = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  attention_impl: str | None = (
    None  # None (XLA; cuDNN picked by jax on GPU when given) | xla | cudnn
  )
  max_decode_length: int = 1024  # Key/value cache length for decoding.
  # full: the cache fills up, then whoever decodes must trim and refill it. sliding: a ring of
  # the newest max_decode_length tokens that slides past them (the paper's "Transformer-XL
  # memory"), each query attending to itself and the max_decode_length - 1 tokens before it.
  decode_cache: str = "full"
  # none: the paper's (only local observation and patch positions; order comes from the causal
  # mask). rope: rotary embeddings of each token's position in its row on queries and keys, so
  # attention can prefer the current timestep's tokens by offset.
  position_encoding: str = "none"
  # Share of each value bin's initial embedding variance that varies smoothly with the bin (a
  # squared-exponential correlation over VALUE_INIT_LENGTH_SCALE bins); 0: i.i.d. rows like
  # every other id. The table stays a free lookup table; only its starting point is ordered, so
  # neighbouring mu-law bins start out alike instead of having to be learned alike.
  value_init_correlation: float = 0.0

  def __post_init__(self):
    if self.patch_resnet_channels % 32:
      raise ValueError(
        f"patch_resnet_channels must be a multiple of 32 (GroupNorm with 32 groups),"
        f" got {self.patch_resnet_channels}"
      )
    if self.patch_size % self.patch_pool:
      raise ValueError(f"patch_pool {self.patch_pool} must divide patch_size {self.patch_size}")
    if not 0.0 <= self.stochastic_depth < 1.0 or not 0.0 <= self.dropout < 1.0:
      raise ValueError("stochastic_depth and dropout must lie in [0, 1)")
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ValueError(
        f"unknown mlp_activation {self.mlp_activation!r}; choose from {MLP_ACTIVATIONS}"
      )
    if self.mlp_activation == "geglu" and self.mlp_dim % 2:
      raise ValueError(f"geglu splits mlp_dim into two halves; {self.mlp_dim} is odd")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {self.remat_policy!r}; choose from {REMAT_POLICIES}")
    if not 0.0 <= self.value_init_correlation <= 1.0:
      raise ValueError(
        f"value_init_correlation must lie in [0, 1], got {self.value_init_correlation}"
      )
    if self.position_encoding not in POSITION_ENCODINGS:
      raise ValueError(
        f"unknown position_encoding {self.position_encoding!r}; choose from {POSITION_ENCODINGS}"
      )
    if self.position_encoding == "rope" and self.head_dim % 2:
      raise ValueError(f"rope rotates pairs of head dimensions; head_dim {self.head_dim} is odd")
    if self.decode_cache not in DECODE_CACHES:
      raise ValueError(f"unknown decode_cache {self.decode_cache!r}; choose from {DECODE_CACHES}")

  @property
  def patch_dim(self) -> int:
    return self.patch_size * self.patch_size * self.image_channels

  @classmethod
  def from_size(cls, size: str, **overrides) -> "ModelConfig":
    if size not in SIZES:
      raise ValueError(f"unknown model size {size!r}; known sizes: {sorted(SIZES)}")
    return cls(**{**SIZES[size], **overrides})

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "ModelConfig":
    """From a config group (e.g. `config.model`), refusing fields the model does not have."""
    fields = dict(fields)
    size = fields.pop("size", None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown model config fields {unknown}; known: {sorted(known)}")
    return cls.from_size(size, **fields) if size else cls(**fields)


MLP_ACTIVATIONS = ("gelu", "geglu")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
DECODE_CACHES = ("full", "sliding")
POSITION_ENCODINGS = ("none", "rope")

# The paper's sizes (docs/design.md, Transformer) and smaller ones for tests and CPU runs. Tiny's
# width is set by the embedding table: 33,152 rows x 16 is already half a million parameters.
SIZES: dict[str, dict[str, Any]] = {
  "tiny": dict(num_layers=2, width=16, num_heads=2, head_dim=8, mlp_dim=64, dtype="float32"),
  # Between tiny and small, for the CPU scaling ladder (gato_jax/configs/sweep.py:cpu).
  "mini": dict(num_layers=3, width=48, num_heads=2, head_dim=24, mlp_dim=192, dtype="float32"),
  "small": dict(num_layers=4, width=128, num_heads=4, head_dim=32, mlp_dim=512, dtype="float32"),
  "79m": dict(
    num_layers=8, width=768, num_heads=24, head_dim=32, mlp_dim=3072, mlp_activation="geglu"
  ),
  "364m": dict(
    num_layers=12, width=1536, num_heads=12, head_dim=128, mlp_dim=6144, mlp_activation="geglu"
  ),
  "1.18b": dict(
    num_layers=24, width=2048, num_heads=16, head_dim=128, mlp_dim=8192, mlp_activation="geglu"
  ),
}

# Parameter counts the paper names for its sizes; the exact counts must stay within 10%.
NOMINAL_PARAMS = {"79m": 79e6, "364m": 364e6, "1.18b": 1.18e9}
