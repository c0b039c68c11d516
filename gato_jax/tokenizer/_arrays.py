"""One code path for host (numpy) and device (jax) arrays.

The host data pipeline tokenizes millions of timesteps with numpy, without paying a device
dispatch per call; the model and rollouts call the same functions under `jax.jit`/`jax.vmap`.
Each public function picks its array namespace from its inputs: any jax array (tracers included)
selects `jax.numpy`, otherwise numpy. Value checks (NaN, ranges) can only run where values are
known, so they run on the numpy path; dtype and shape checks run on both.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def namespace(*arrays: Any):
  """Returns `jax.numpy` if any argument is a jax array or tracer, else `numpy`."""
  for array in arrays:
    if isinstance(array, jax.Array):
      return jnp
  return np


def is_host(xp) -> bool:
  return xp is np


def as_float32(x, name: str, xp):
  """Casts real numeric input to float32; rejects strings, objects, complex and bool."""
  x = xp.asarray(x)
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise TypeError(f"{name} must hold real numbers (float or int), got dtype {x.dtype}")
  if is_host(xp) and np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
    first = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
    raise ValueError(f"{name} contains NaN (first at index {first}); NaN has no token")
  return x.astype(xp.float32)


def as_int32(x, name: str, xp):
  """Casts integer or bool input to int32; floats are rejected rather than silently truncated."""
  x = xp.asarray(x)
  if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
    raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
  return x.astype(xp.int32)


def check_range(x, low: int, high: int, name: str, xp) -> None:
  """On the host path, raises if any value lies outside [low, high)."""
  if not is_host(xp) or x.size == 0:
    return
  bad = (x < low) | (x >= high)
  if bad.any():
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} must lie in [{low}, {high}); found {x[index]} at index {index}"
        f" (min {x.min()}, max {x.max()})"
    )
