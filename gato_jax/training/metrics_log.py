"""Training metrics to `workdir/metrics.jsonl`, TensorBoard event files and a console line.

Only process 0 of a multi-host job writes; the others accept calls and do nothing, so callers
need no `if jax.process_index() == 0` of their own.

Each record is appended whole or not at all: a failed write (a full disk) is cut back off the
file and raised naming it. A resumed run drops the records after its checkpoint's step, which it
is about to replay, so every step is in the file once; a line torn by a crash is dropped then
too, and skipped with a warning by `read_metrics`.
"""

import json
import math
import os
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from gato_jax import console

# Metrics key prefix of a domain's training loss: "loss/<domain>", over its rows' targets only.
DOMAIN_LOSS_PREFIX = "loss/"


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
    resume_step: the step training (re)starts from; records after it are removed from an
      existing file, as the run logs those steps again.
  """

  def __init__(
    self, workdir: str, total_steps: int, tensorboard: bool = True, resume_step: int = 0
  ):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.total_steps = total_steps
    self._writer = None
    self._pace = console.Pace(total_steps)
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    _truncate_after(self.path, resume_step)
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
    bad = [
      key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)
    ]
    if bad:
      logging.warning("step %d: non-finite metrics %s", step, bad)
    record = {"step": int(step), **values}
    # NaN/inf are written as null: the file stays valid JSON for every reader.
    clean = {
      k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
    _append_whole(self.path, (json.dumps(clean) + "\n").encode())
    if self._writer is not None:
      self._writer.write_scalars(int(step), values)
    return values

  def progress(self, step: int, values: Mapping[str, float]) -> str:
    """A console line with loss, throughput and the ETA extrapolated from this run's pace."""
    eta = self._pace.eta(step)
    parts = [f"step {step}/{self.total_steps}"]
    for key in ("loss", "accuracy_action", "tokens_per_second", "learning_rate"):
      if key in values:
        parts.append(f"{key} {values[key]:.4g}")
    parts.append(f"eta {console.duration(eta)}")
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


def _append_whole(path: str, data: bytes) -> None:
  """Appends `data` to `path`, or on an error leaves the file as it was and raises naming it."""
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    try:
      written = 0
      while written < len(data):
        written += os.write(fd, data[written:])
    except OSError as e:
      try:
        os.ftruncate(fd, size)  # Half a record would join the next one into an unreadable line.
      except OSError:
        pass  # The reader skips the torn line; the write's own error is what to report.
      raise OSError(e.errno, f"could not append a metrics record: {e.strerror}", path) from None
  finally:
    os.close(fd)


def _parse(path: str) -> tuple[list[dict[str, Any]], list[int]]:
  """(records, numbers of the lines that are not JSON) of the metrics file at `path`."""
  records, torn = [], []
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError:  # A write cut short by a crash or a full disk.
        torn.append(number)
  return records, torn


def _truncate_after(path: str, step: int) -> None:
  """Rewrites `path` without its torn lines and its records after `step`, if it has any."""
  if not os.path.exists(path):
    return
  records, torn = _parse(path)
  kept = [r for r in records if r.get("step", 0) <= step]
  if not torn and len(kept) == len(records):
    return
  if torn:
    logging.warning("%s: dropping torn lines %s", path, torn)
  logging.info(
    "%s: dropping %d records after step %d, which this run logs again",
    path,
    len(records) - len(kept),
    step,
  )
  with open(f"{path}.tmp", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(f"{path}.tmp", path)  # A crash now leaves the old file or the new one, whole.


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, in the order they were written.

  Lines that are not JSON (torn by a crash or a full disk) are skipped with a warning.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  records, torn = _parse(path)
  if torn:
    logging.warning("%s: skipping torn lines %s", path, torn)
  return records
