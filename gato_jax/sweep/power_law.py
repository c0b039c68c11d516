"""Power laws of loss against compute: L(C) = a * C^-b, or a * C^-b + c with an irreducible c.

Both are fitted in log space (least squares on log L), as scaling-law papers do, so that every
decade of compute weighs the same however small the losses get. Compute is divided by its
geometric mean before fitting: with C near 1e15 the raw problem is badly conditioned.
"""

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(C) = a * C^-exponent + offset."""

  a: float
  exponent: float
  offset: float = 0.0
  rmse_log: float = 0.0  # Root-mean-square residual of log L at the fitted points.

  def __call__(self, compute) -> np.ndarray:
    return self.a * np.asarray(compute, np.float64) ** -self.exponent + self.offset

  def describe(self) -> str:
    text = f"L = {self.a:.3g} * C^-{self.exponent:.3g}"
    return text + (f" + {self.offset:.3g}" if self.offset else "")


def _check(compute: Sequence[float], loss: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  compute, loss = np.asarray(compute, np.float64), np.asarray(loss, np.float64)
  if compute.shape != loss.shape or compute.ndim != 1:
    raise ValueError(
      f"compute and loss must be equal-length vectors, got {compute.shape} and {loss.shape}"
    )
  if not (np.all(np.isfinite(compute)) and np.all(np.isfinite(loss))):
    raise ValueError("compute and loss must be finite")
  if np.any(compute <= 0) or np.any(loss <= 0):
    raise ValueError("a power law in log space needs positive compute and loss")
  if len(np.unique(compute)) < 2:
    raise ValueError("a power-law fit needs points at two or more compute values")
  return compute, loss


def fit(compute: Sequence[float], loss: Sequence[float], offset: bool = False) -> PowerLaw:
  """Fits L = a * C^-b (+ c) to the points in log space.

  Args:
    compute: training FLOPs of each point (> 0).
    loss: the loss there (> 0).
    offset: also fit an irreducible loss c >= 0 (needs 4+ points; starts from the plain fit).

  Returns:
    The PowerLaw.
  """
  compute, loss = _check(compute, loss)
  scale = float(np.exp(np.mean(np.log(compute))))
  x, y = np.log(compute / scale), np.log(loss)
  slope, intercept = np.polyfit(x, y, 1)
  b, log_a = -float(slope), float(intercept)
  c = 0.0
  if offset:
    if len(compute) < 4:
      raise ValueError(f"fitting an offset needs at least 4 points, got {len(compute)}")
    from scipy import optimize  # Only the offset fit needs it.

    def residuals(theta):
      log_a_, b_, log_c = theta
      return np.logaddexp(log_a_ - b_ * x, log_c) - y

    # Start the offset well below the smallest loss so the descent begins near the plain fit.
    start = np.array([log_a, b, np.log(0.1 * loss.min())])
    result = optimize.least_squares(
      residuals, start, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=20_000
    )
    log_a, b, c = float(result.x[0]), float(result.x[1]), float(np.exp(result.x[2]))
  # Undo the compute scaling: a * (C / s)^-b = (a * s^b) * C^-b.
  a = float(np.exp(log_a + b * np.log(scale)))
  law = PowerLaw(a, b, c)
  rmse = float(np.sqrt(np.mean((np.log(law(compute)) - y) ** 2)))
  return dataclasses.replace(law, rmse_log=rmse)


def frontier(compute: Sequence[float], loss: Sequence[float]) -> np.ndarray:
  """Indices of the compute-efficient frontier: points no cheaper point beats, by compute.

  Scaling laws are fitted to this lower envelope of all runs' loss curves: a point above it is a
  model that was the wrong size for its compute.
  """
  compute, loss = np.asarray(compute, np.float64), np.asarray(loss, np.float64)
  order = np.lexsort((loss, compute))
  keep, best = [], np.inf
  for i in order:
    if loss[i] < best:
      keep.append(i)
      best = loss[i]
  return np.asarray(keep, np.int64)
