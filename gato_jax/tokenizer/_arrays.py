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


INT32_MIN, INT32_END = -(2**31), 2**31  # The int32 range as [low, high).


def _is_float(dtype) -> bool:
  # jnp.issubdtype knows bfloat16 (an ml_dtypes type numpy does not count as floating).
  return bool(jnp.issubdtype(dtype, jnp.floating))


def as_float32(x, name: str, xp, allow_inf: bool = True):
  """Casts real numeric input (bfloat16 included) to float32; rejects strings, objects, complex
  and bool. On the host path NaN is refused, and so is inf unless `allow_inf`."""
  x = xp.asarray(x)
  if not (_is_float(x.dtype) or np.issubdtype(x.dtype, np.integer)):
    raise TypeError(f"{name} must hold real numbers (float or int), got dtype {x.dtype}")
  x = x.astype(xp.float32)  # Exact for every float dtype narrower than float32.
  if is_host(xp) and x.size:
    bad = np.isnan(x) if allow_inf else ~np.isfinite(x)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      value = "NaN" if np.isnan(x[first]) else str(x[first])
      raise ValueError(f"{name} contains {value} (first at index {first}); {value} has no token")
  return x


def as_int32(x, name: str, xp, low: int = INT32_MIN, high: int = INT32_END):
  """Casts integer or bool input to int32; floats are rejected rather than silently truncated.

  On the host path the values are checked against [low, high) in their own dtype, before the
  cast: an int64 2**32 + 2 must be refused, not wrapped to 2.
  """
  x = xp.asarray(x)
  if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
    raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
  if not INT32_MIN <= low < high <= INT32_END:
    raise ValueError(f"[{low}, {high}) is not an int32 range")
  check_range(x, low, high, name, xp)
  return x.astype(xp.int32)


def check_range(x, low: int, high: int, name: str, xp) -> None:
  """On the host path, raises if any value lies outside [low, high) (compared in x's dtype)."""
  if not is_host(xp) or x.size == 0:
    return
  # numpy compares integer arrays with Python ints exactly, whatever the array's width or sign.
  bad = (x < low) | (x >= high)
  if bad.any():
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
      f"{name} must lie in [{low}, {high}); found {x[index]} at index {index}"
      f" (min {x.min()}, max {x.max()})"
    )
