"""Image patches: normalisation of known pixels, raster order, intervals and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T


def test_known_pixels_normalisation():
  image = np.zeros((16, 16, 3), np.uint8)
  image[0, 0] = [0, 255, 128]
  patches = T.image_to_patches(image)
  assert patches.shape == (1, 768) and patches.dtype == np.float32
  np.testing.assert_allclose(patches[0, :3], [-0.25, 0.25, (128 / 127.5 - 1) / 4], rtol=1e-6)
  np.testing.assert_allclose(patches[0, 3:], -0.25)
  assert patches.min() >= -0.25 and patches.max() <= 0.25
  # Other patch sizes divide by their own square root.
  np.testing.assert_allclose(
    T.image_to_patches(np.full((8, 8, 1), 255, np.uint8), patch_size=8), 1 / math.sqrt(8), rtol=1e-6
  )


def test_raster_order_and_inner_layout():
  # Encode (patch row, patch col, pixel row, pixel col, channel) into each pixel's value.
  h, w, c, p = 32, 48, 2, 16
  image = np.zeros((h, w, c), np.uint8)
  for r in range(h):
    for col in range(w):
      for ch in range(c):
        image[r, col, ch] = (
          ((r // p) * 3 + col // p) * 20 + ch * 5 + (r % p == 1) + 2 * (col % p == 1)
        )
  patches = T.image_to_patches(image)
  assert patches.shape == (6, p * p * c)
  pixels = np.rint((patches * 4 + 1) * 127.5).astype(int).reshape(6, p, p, c)
  for index in range(6):
    assert pixels[index, 0, 0, 0] == index * 20  # Raster order: left to right, then down.
    assert pixels[index, 0, 0, 1] == index * 20 + 5  # Channels innermost.
    assert pixels[index, 1, 0, 0] == index * 20 + 1  # Then columns, then rows.
    assert pixels[index, 0, 1, 0] == index * 20 + 2


def test_patch_intervals():
  rows, cols = T.patch_intervals(32, 64)
  assert rows.shape == cols.shape == (8, 2)
  np.testing.assert_allclose(rows[:4], [[0, 0.5]] * 4)
  np.testing.assert_allclose(rows[4:], [[0.5, 1.0]] * 4)
  np.testing.assert_allclose(cols[:4], [[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])
  assert T.num_patches(32, 64) == 8


def test_batched_and_jitted_patches_match():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  host = T.image_to_patches(frames)
  assert host.shape == (3, 4, 768)
  np.testing.assert_array_equal(host[1], T.image_to_patches(frames[1]))
  np.testing.assert_array_equal(jax.jit(T.image_to_patches)(jnp.asarray(frames)), host)
  np.testing.assert_array_equal(jax.vmap(T.image_to_patches)(jnp.asarray(frames)), host)


def test_bad_images():
  with pytest.raises(ValueError, match="multiples of 16"):
    T.image_to_patches(np.zeros((84, 84, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[\.\.\., height, width, channels\]"):
    T.image_to_patches(np.zeros((16, 16), np.uint8))
  with pytest.raises(TypeError, match="uint8"):
    T.image_to_patches(np.zeros((16, 16, 3), np.float32))
  with pytest.raises(ValueError, match="positive multiples"):
    T.image_to_patches(np.zeros((0, 16, 3), np.uint8))
