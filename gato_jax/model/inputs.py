"""The batch the model consumes: token groups padded to fixed shapes, with packing segments.

Patches travel compactly: `patches[b, k]` is the k-th IMAGE_PATCH slot of sequence b, so a
batch without images carries a [B, 0, D] array instead of a patch per token.
"""

from typing import Any, Sequence

import flax.struct
import numpy as np

from gato_jax.tokenizer import images
from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup


@flax.struct.dataclass
class Batch:
  """Model inputs, all with leading batch dimension B.

  Attributes:
    tokens: int32 [B, T] ids (0 in image-patch and padding slots).
    kinds: int32 [B, T] TokenKind; PAD marks empty slots.
    local_positions: int32 [B, T] observation-local positions, -1 where none applies.
    loss_mask: bool [B, T] True where the token is a training target (text and actions).
    segment_ids: int32 [B, T] packed-sequence id, 0 for padding; attention never crosses ids.
    patches: float32 [B, P, D] patch vectors of the IMAGE_PATCH slots, in slot order.
    patch_rows: float32 [B, P, 2] normalised [start, end) row interval of each patch.
    patch_cols: float32 [B, P, 2] normalised [start, end) column interval of each patch.
  """

  tokens: Any
  kinds: Any
  local_positions: Any
  loss_mask: Any
  segment_ids: Any
  patches: Any
  patch_rows: Any
  patch_cols: Any

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(self.tokens.shape)


def batch_from_token_groups(
  groups: Sequence[TokenGroup],
  seq_len: int,
  max_patches: int,
  patch_dim: int,
  pad_side: str = "right",
) -> Batch:
  """Pads (never crops) unbatched token groups into a numpy Batch, one sequence each.

  Args:
    groups: token groups of at most `seq_len` tokens and `max_patches` patches each; their
      patches are float32 vectors, or uint8 pixels (the derived store's) normalised here.
    seq_len: T, the padded sequence length.
    max_patches: P, the padded number of patches per sequence.
    patch_dim: D, the patch vector size (16 * 16 * 3 for RGB).
    pad_side: "right" for training; "left" for decoding, so that every row's last token sits
      at the same position and the next token is predicted from the last column.

  Raises:
    ValueError: if a group is longer than seq_len or has more patches than max_patches; cropping
      is the data pipeline's job (it must respect timestep boundaries).
  """
  if pad_side not in ("left", "right"):
    raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
  b = len(groups)
  out = Batch(
    tokens=np.zeros((b, seq_len), np.int32),
    kinds=np.full((b, seq_len), TokenKind.PAD, np.int32),
    local_positions=np.full((b, seq_len), NO_LOCAL_POSITION, np.int32),
    loss_mask=np.zeros((b, seq_len), bool),
    segment_ids=np.zeros((b, seq_len), np.int32),
    patches=np.zeros((b, max_patches, patch_dim), np.float32),
    patch_rows=np.zeros((b, max_patches, 2), np.float32),
    patch_cols=np.zeros((b, max_patches, 2), np.float32),
  )
  for i, group in enumerate(groups):
    n, p = group.num_tokens, group.patches.shape[0]
    if n > seq_len:
      raise ValueError(f"sequence {i} has {n} tokens, more than seq_len={seq_len}")
    if p > max_patches:
      raise ValueError(f"sequence {i} has {p} patches, more than max_patches={max_patches}")
    if p and group.patches.shape[1] != patch_dim:
      raise ValueError(
        f"sequence {i} has patches of size {group.patches.shape[1]}, not {patch_dim}"
      )
    span = slice(0, n) if pad_side == "right" else slice(seq_len - n, seq_len)
    out.tokens[i, span] = group.tokens
    out.kinds[i, span] = group.kinds
    out.local_positions[i, span] = group.local_positions
    out.loss_mask[i, span] = group.loss_mask
    out.segment_ids[i, span] = 1
    if p and group.patches.dtype == np.uint8:  # Stored pixels (data.store): normalised here.
      out.patches[i, :p] = images.normalize_pixels(group.patches)
    elif p:
      out.patches[i, :p] = group.patches
    if p:
      out.patch_rows[i, :p] = group.patch_rows
      out.patch_cols[i, :p] = group.patch_cols
  return out
