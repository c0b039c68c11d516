"""Images to patch vectors and their normalised position intervals (docs/design.md, Tokens).

Gato cuts an image into non-overlapping square patches in raster order (left to right, then top
to bottom), scales pixels from [0, 255] to [-1, 1] and divides by sqrt(patch_size); each patch is
later embedded by a ResNet block. Its position is the pixel interval it covers along each axis,
normalised by the image size; the model quantises and embeds it.
"""

import math

import numpy as np

from gato_jax.tokenizer import _arrays
from gato_jax.tokenizer.constants import PATCH_SIZE


def check_image_shape(shape, patch_size: int = PATCH_SIZE, name: str = "image") -> None:
  """Raises a ValueError unless `shape` ends in [H, W, C] with H and W multiples of patch_size."""
  if patch_size < 1:
    raise ValueError(f"patch_size must be positive, got {patch_size}")
  if len(shape) < 3:
    raise ValueError(f"{name} must have shape [..., height, width, channels], got {tuple(shape)}")
  height, width = shape[-3], shape[-2]
  if height % patch_size or width % patch_size or height == 0 or width == 0:
    raise ValueError(
      f"{name} of height {height} and width {width} cannot be cut into {patch_size}x{patch_size}"
      f" patches: both sides must be positive multiples of {patch_size}. Resize or pad it"
      " first (environment adapters do this for Atari and DM Control pixels)."
    )


def num_patches(height: int, width: int, patch_size: int = PATCH_SIZE) -> int:
  check_image_shape((height, width, 1), patch_size)
  return (height // patch_size) * (width // patch_size)


def image_to_patches(image, patch_size: int = PATCH_SIZE):
  """Cuts uint8 images into normalised patch vectors.

  Args:
    image: uint8 array [..., H, W, C]; H and W multiples of `patch_size`.
    patch_size: side of the square patches, in pixels.

  Returns:
    float32 [..., (H/P) * (W/P), P * P * C] in raster order; inside a patch, pixels are
    flattened row-major (row, column, channel). Values are (pixel / 127.5 - 1) / sqrt(P).
  """
  xp = _arrays.namespace(image)
  image = xp.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(
      f"image must be uint8 pixels in [0, 255], got dtype {image.dtype}; convert floats with"
      " (x * 255).round().astype(uint8) if they are in [0, 1]"
    )
  check_image_shape(image.shape, patch_size)
  *batch, height, width, channels = image.shape
  rows, cols = height // patch_size, width // patch_size
  # [..., rows, P, cols, P, C] -> [..., rows, cols, P, P, C]
  patches = image.reshape(*batch, rows, patch_size, cols, patch_size, channels)
  patches = xp.moveaxis(patches, -4, -3)
  patches = patches.reshape(*batch, rows * cols, patch_size * patch_size * channels)
  return normalize_pixels(patches, patch_size)


def normalize_pixels(pixels, patch_size: int = PATCH_SIZE):
  """uint8 pixels (e.g. stored patches [..., P * P * C]) -> Gato's normalised float32 values."""
  xp = _arrays.namespace(pixels)
  # Centring first is exact for integer pixels, leaving a single rounding (the scale), so the
  # numpy and XLA paths agree bit for bit.
  scale = np.float32(1.0 / (127.5 * math.sqrt(patch_size)))
  return (pixels.astype(xp.float32) - xp.float32(127.5)) * scale


def patches_to_pixels(patches: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray | None:
  """Normalised patch vectors -> the uint8 pixels they came from, or None if they did not.

  `normalize_pixels(patches_to_pixels(p)) == p` bit for bit whenever the result is not None,
  which is what lets stored data keep images as uint8 (4x smaller) without changing a batch.
  """
  scale = np.float32(1.0 / (127.5 * math.sqrt(patch_size)))
  pixels = np.clip(np.rint(np.asarray(patches, np.float32) / scale + 127.5), 0, 255).astype(
    np.uint8
  )
  if not np.array_equal(normalize_pixels(pixels, patch_size), patches):
    return None
  return pixels


def patch_intervals(height: int, width: int, patch_size: int = PATCH_SIZE):
  """Normalised pixel intervals of each patch, in raster order.

  Returns:
    (rows, cols): float32 numpy arrays [num_patches, 2] holding [start, end) of the patch's
    rows (resp. columns) divided by the image height (resp. width). Static in the image shape,
    so they are computed on the host even when the pixels live on device.
  """
  check_image_shape((height, width, 1), patch_size)
  row_starts = np.arange(0, height, patch_size, dtype=np.float64)
  col_starts = np.arange(0, width, patch_size, dtype=np.float64)
  grid_rows, grid_cols = np.meshgrid(row_starts, col_starts, indexing="ij")
  grid_rows, grid_cols = grid_rows.reshape(-1), grid_cols.reshape(-1)
  rows = np.stack([grid_rows, grid_rows + patch_size], axis=-1) / height
  cols = np.stack([grid_cols, grid_cols + patch_size], axis=-1) / width
  return rows.astype(np.float32), cols.astype(np.float32)
