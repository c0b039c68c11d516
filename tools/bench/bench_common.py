"""Helpers shared by the benchmarks: synthetic batches and timing.

The scripts beside it import it by name (`import bench_common`): Python puts a script's own
folder first on sys.path, so this works from any working directory, without PYTHONPATH.
"""

import time

import numpy as np

from gato_jax import tokenizer as T
from gato_jax.model import Batch, ModelConfig


def random_batch(
  cfg: ModelConfig, batch_size: int, seq_len: int, num_patches: int, seed=0
) -> Batch:
  """Control-like sequences: leading image patches, then value tokens, half of them targets."""
  rng = np.random.default_rng(seed)
  kinds = np.full((batch_size, seq_len), T.TokenKind.VALUE, np.int32)
  kinds[:, :num_patches] = T.TokenKind.IMAGE_PATCH
  tokens = np.where(
    kinds == T.TokenKind.VALUE,
    rng.integers(T.VALUE_OFFSET, T.SEPARATOR_ID, (batch_size, seq_len)),
    0,
  )
  intervals = np.linspace(0, 1, num_patches + 1, dtype=np.float32)
  rows = np.stack([intervals[:-1], intervals[1:]], -1)
  return Batch(
    tokens=tokens.astype(np.int32),
    kinds=kinds,
    local_positions=np.tile(np.arange(seq_len, dtype=np.int32) % 64, (batch_size, 1)),
    loss_mask=(rng.random((batch_size, seq_len)) < 0.5) & (kinds == T.TokenKind.VALUE),
    segment_ids=np.ones((batch_size, seq_len), np.int32),
    patches=rng.standard_normal((batch_size, num_patches, cfg.patch_dim)).astype(np.float32) * 0.25,
    patch_rows=np.tile(rows, (batch_size, 1, 1)),
    patch_cols=np.tile(rows, (batch_size, 1, 1)),
  )


def time_calls(fn, min_seconds: float, min_calls: int = 3) -> float:
  """Seconds per call of `fn` (which must block until its result is ready), after a warm-up."""
  fn()
  calls, start = 0, time.perf_counter()
  while calls < min_calls or time.perf_counter() - start < min_seconds:
    fn()
    calls += 1
  return (time.perf_counter() - start) / calls
