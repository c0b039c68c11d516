"""Training sequences to fixed-shape model batches, packing short sequences into one row.

Short examples (a text document, a caption pair, a brief episode) would leave most of a
1024-token row as padding; packing places several in a row with distinct segment ids, and the
model's attention never crosses segments. Sequences are never split.
"""

from typing import Sequence

import numpy as np

from gato_jax.model.inputs import Batch, batch_from_token_groups
from gato_jax.tokenizer.timestep import TokenGroup, concat_token_groups


def pack_rows(groups: Sequence[TokenGroup], seq_len: int, max_patches: int) -> list[list[int]]:
  """Assigns sequences to rows first-fit in the given order: [[indices of row 0], ...].

  Raises:
    ValueError: naming the sequence, if one alone exceeds `seq_len` tokens or `max_patches`.
  """
  rows: list[list[int]] = []
  used: list[tuple[int, int]] = []  # (tokens, patches) per row.
  for index, group in enumerate(groups):
    tokens, patches = group.num_tokens, group.patches.shape[0]
    if tokens > seq_len or patches > max_patches:
      raise ValueError(
        f"sequence {index} has {tokens} tokens and {patches} patches; a row holds"
        f" {seq_len} tokens and {max_patches} patches"
      )
    for row, (row_tokens, row_patches) in enumerate(used):
      if row_tokens + tokens <= seq_len and row_patches + patches <= max_patches:
        rows[row].append(index)
        used[row] = (row_tokens + tokens, row_patches + patches)
        break
    else:
      rows.append([index])
      used.append((tokens, patches))
  return rows


def packed_batch(
  groups: Sequence[TokenGroup],
  seq_len: int,
  max_patches: int,
  patch_dim: int,
  num_rows: int | None = None,
) -> Batch:
  """Packs `groups` into a Batch of `num_rows` rows (default: as many as packing needs).

  Raises:
    ValueError: if the sequences need more than `num_rows` rows.
  """
  rows = pack_rows(groups, seq_len, max_patches)
  if num_rows is not None and len(rows) > num_rows:
    raise ValueError(f"the sequences need {len(rows)} rows when packed, more than {num_rows}")
  rows = [[groups[i] for i in members] for members in rows]
  return rows_batch(
    rows + [[]] * ((num_rows or len(rows)) - len(rows)), seq_len, max_patches, patch_dim
  )


def rows_batch(
  rows: Sequence[Sequence[TokenGroup]], seq_len: int, max_patches: int, patch_dim: int
) -> Batch:
  """A Batch with one row per entry; the groups of a row become its segments 1, 2, ...

  Raises:
    ValueError: naming the row, if its groups exceed `seq_len` tokens or `max_patches`.
  """
  merged, segments = [], []
  for index, parts in enumerate(rows):
    tokens = sum(g.num_tokens for g in parts)
    patches = sum(g.patches.shape[0] for g in parts)
    if tokens > seq_len or patches > max_patches:
      raise ValueError(
        f"row {index} has {tokens} tokens and {patches} patches; a row holds"
        f" {seq_len} tokens and {max_patches} patches"
      )
    if not parts:
      merged.append(_empty_group())
    else:
      merged.append(concat_token_groups(parts) if len(parts) > 1 else parts[0])
    segments.append(
      np.concatenate(
        [np.zeros(0, np.int32)]
        + [np.full(g.num_tokens, k + 1, np.int32) for k, g in enumerate(parts)]
      )
    )
  batch = batch_from_token_groups(merged, seq_len, max_patches, patch_dim)
  segment_ids = np.zeros_like(batch.segment_ids)
  for row, ids in enumerate(segments):
    segment_ids[row, : ids.size] = ids
  return batch.replace(segment_ids=segment_ids)


def _empty_group() -> TokenGroup:
  empty = lambda dtype: np.zeros(0, dtype)
  return TokenGroup(
    tokens=empty(np.int32),
    kinds=empty(np.int32),
    local_positions=empty(np.int32),
    loss_mask=empty(bool),
    timesteps=empty(np.int32),
    patches=np.zeros((0, 0), np.float32),
    patch_rows=np.zeros((0, 2), np.float32),
    patch_cols=np.zeros((0, 2), np.float32),
  )
