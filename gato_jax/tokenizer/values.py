"""Discrete and continuous values to value-token ids and back (docs/design.md, Tokens).

Every function is elementwise and keeps its input's shape; flattening into a token sequence is
the timestep tokenizer's job. Inputs may be numpy arrays (host path: values are checked) or jax
arrays (device path: jit/vmap-safe, values cannot be checked, out-of-range inputs are clipped).

Binning is exact on both paths. The mu-law's log1p is not: numpy's and XLA's differ by one ulp
on about 3% of inputs, so a companded value within an ulp of a bin edge (about one in a million
for normally distributed observations) can land in the neighbouring bin on the other path.
"""

from gato_jax.tokenizer import _arrays
from gato_jax.tokenizer.constants import MU_LAW_M, MU_LAW_MU, NUM_BINS, VALUE_OFFSET


def mu_law_encode(x, mu: float = MU_LAW_MU, m: float = MU_LAW_M, allow_inf: bool = False):
  """Companding F(x) = sgn(x) * log(|x| mu + 1) / log(M mu + 1); |x| <= M maps into [-1, 1].

  NaN is refused on the host path, and so is inf unless `allow_inf` (it would map to +-1 and
  hide a broken observation as the largest value).
  """
  xp = _arrays.namespace(x)
  x = _arrays.as_float32(x, "mu_law_encode input", xp, allow_inf=allow_inf)
  scale = xp.float32(1.0 / xp.log1p(xp.float32(m * mu)))
  return xp.sign(x) * xp.log1p(xp.abs(x) * xp.float32(mu)) * scale


def mu_law_decode(y, mu: float = MU_LAW_MU, m: float = MU_LAW_M):
  """Inverse of `mu_law_encode`: sgn(y) * ((M mu + 1)^|y| - 1) / mu."""
  xp = _arrays.namespace(y)
  y = _arrays.as_float32(y, "mu_law_decode input", xp)
  log_range = xp.log1p(xp.float32(m * mu))
  return xp.sign(y) * xp.expm1(xp.abs(y) * log_range) / xp.float32(mu)


def discretize(x, num_bins: int = NUM_BINS):
  """Clips to [-1, 1] and returns int32 bins; bin i holds [-1 + 2i/n, -1 + 2(i+1)/n), 1.0 -> n-1.

  The bin is floor(x * n/2) + n/2 rather than floor((x + 1) * n/2): adding 1 first rounds values
  just below an edge (e.g. -1e-30) onto it, while scaling by a power of two is exact in float32.
  """
  if num_bins < 2:
    raise ValueError(f"num_bins must be at least 2, got {num_bins}")
  xp = _arrays.namespace(x)
  x = xp.clip(_arrays.as_float32(x, "discretize input", xp), -1.0, 1.0)
  half = num_bins / 2
  if num_bins % 2 == 0:
    bins = xp.floor(x * xp.float32(half)).astype(xp.int32) + num_bins // 2
  else:  # Odd counts have no edge at zero, so the exact split above does not apply.
    bins = xp.floor((x + 1.0) * xp.float32(half)).astype(xp.int32)
  return xp.clip(bins, 0, num_bins - 1)


def undiscretize(bins, num_bins: int = NUM_BINS):
  """Bin centres, -1 + (2i + 1)/n, as float32; bins must lie in [0, num_bins)."""
  xp = _arrays.namespace(bins)
  bins = _arrays.as_int32(bins, "undiscretize bins", xp, 0, num_bins)
  return (2.0 * bins.astype(xp.float32) + 1.0) / xp.float32(num_bins) - 1.0


def tokenize_continuous(x, mu_law: bool = True, allow_inf: bool = False):
  """Continuous values -> int32 ids in [32000, 33024): optional mu-law, clip, 1024 bins, shift.

  Use `mu_law=True` for observations and `mu_law=False` for actions, which already lie in
  [-1, 1] (docs/design.md, Tokens). NaN is refused; inf is refused before the mu-law unless
  `allow_inf` (without the mu-law it clips to +-1 like any out-of-range action).
  """
  xp = _arrays.namespace(x)
  x = _arrays.as_float32(x, "continuous values", xp, allow_inf=allow_inf or not mu_law)
  if mu_law:
    x = mu_law_encode(x, allow_inf=True)  # Checked above.
  return discretize(x, NUM_BINS) + VALUE_OFFSET


def detokenize_continuous(ids, mu_law: bool = True):
  """Value ids -> float32 bin centres, then the inverse mu-law when `mu_law`."""
  xp = _arrays.namespace(ids)
  ids = _arrays.as_int32(ids, "continuous value ids", xp, VALUE_OFFSET, VALUE_OFFSET + NUM_BINS)
  values = undiscretize(xp.clip(ids - VALUE_OFFSET, 0, NUM_BINS - 1), NUM_BINS)
  return mu_law_decode(values) if mu_law else values


def tokenize_discrete(x):
  """Integers in [0, 1024) -> int32 ids in [32000, 33024). Floats are rejected, not truncated."""
  xp = _arrays.namespace(x)
  x = _arrays.as_int32(x, "discrete values", xp, 0, NUM_BINS)
  return xp.clip(x, 0, NUM_BINS - 1) + VALUE_OFFSET


def detokenize_discrete(ids):
  """Value ids -> the int32 values they encode."""
  xp = _arrays.namespace(ids)
  ids = _arrays.as_int32(ids, "discrete value ids", xp, VALUE_OFFSET, VALUE_OFFSET + NUM_BINS)
  return xp.clip(ids - VALUE_OFFSET, 0, NUM_BINS - 1)
