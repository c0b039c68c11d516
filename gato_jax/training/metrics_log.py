"""Training metrics to `workdir/metrics.jsonl`, TensorBoard event files and a console line.

Only process 0 of a multi-host job writes; the others accept calls and do nothing, so callers
need no `if jax.process_index() == 0` of their own.
"""

import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np


def _scalar(value: Any) -> float | int:
  value = np.asarray(jax.device_get(value))
  if value.size != 1:
    raise ValueError(f"metrics must be scalars, got shape {value.shape}")
  value = value.item()
  return value if isinstance(value, int) else float(value)


class MetricsLogger:
  """Appends one JSON object per logged step and mirrors the scalars to TensorBoard.

  Args:
    workdir: the run directory; `metrics.jsonl` and `tensorboard/` go there.
    total_steps: the run's length, for the progress line's ETA.
    tensorboard: write TensorBoard event files (imports TensorFlow via clu).
  """

  def __init__(self, workdir: str, total_steps: int, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.total_steps = total_steps
    self._writer = None
    self._start_time = time.time()
    self._start_step: int | None = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard:
      from gato_jax import tf_compat
      from clu import metric_writers

      tf_compat.import_tensorflow()
      self._writer = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Logs `metrics` (scalars, device or host) for `step`; returns them as host floats."""
    values = {key: _scalar(value) for key, value in metrics.items()}
    if not self.enabled:
      return values
    bad = [key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
      logging.warning("step %d: non-finite metrics %s", step, bad)
    record = {"step": int(step), **values}
    # NaN/inf are written as null: the file stays valid JSON for every reader.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps(clean) + "\n")
    if self._writer is not None:
      self._writer.write_scalars(int(step), values)
    return values

  def progress(self, step: int, values: Mapping[str, float]) -> str:
    """A console line with loss, throughput and the ETA extrapolated from this run's pace."""
    if self._start_step is None:
      self._start_step, self._start_time = step, time.time()
    done = step - self._start_step
    elapsed = time.time() - self._start_time
    eta = elapsed / done * (self.total_steps - step) if done > 0 else float("nan")
    parts = [f"step {step}/{self.total_steps}"]
    for key in ("loss", "accuracy_action", "tokens_per_second", "learning_rate"):
      if key in values:
        parts.append(f"{key} {values[key]:.4g}")
    parts.append(f"eta {_duration(eta)}")
    line = " | ".join(parts)
    if self.enabled:
      logging.info(line)
    return line

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, in the order they were written."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
