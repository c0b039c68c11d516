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
import socket
import time
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from gato_jax import console, files

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
    tensorboard: write TensorBoard event files (`EventWriter`, without TensorFlow).
    resume_step: the step training (re)starts from; records after it are removed from an
      existing file, as the run logs those steps again.
  """

  def __init__(
    self, workdir: str, total_steps: int, tensorboard: bool = True, resume_step: int = 0
  ):
    self.enabled = jax.process_index() == 0
    self.path = files.join(workdir, "metrics.jsonl")
    self.total_steps = total_steps
    self._writer = None
    self._pace = console.Pace(total_steps)
    if not self.enabled:
      return
    files.makedirs(workdir)
    _truncate_after(self.path, resume_step)
    if tensorboard:
      self._writer = EventWriter(files.join(workdir, "tensorboard"))

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
    files.append_bytes(self.path, (json.dumps(clean) + "\n").encode())
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


def _parse(path: str) -> tuple[list[dict[str, Any]], list[int]]:
  """(records, numbers of the lines that are not JSON) of the metrics file at `path`."""
  records, torn = [], []
  for number, line in enumerate(files.read_bytes(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError:  # A write cut short by a crash or a full disk.
      torn.append(number)
  return records, torn


def _truncate_after(path: str, step: int) -> None:
  """Rewrites `path` without its torn lines and its records after `step`, if it has any."""
  if not files.exists(path):
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
  # Atomic: a crash now leaves the old file or the new one, whole.
  files.write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, in the order they were written.

  Lines that are not JSON (torn by a crash or a full disk) are skipped with a warning.
  """
  path = files.join(workdir, "metrics.jsonl")
  records, torn = _parse(path)
  if torn:
    logging.warning("%s: skipping torn lines %s", path, torn)
  return records


class EventWriter:
  """Scalars into a TensorBoard event file under `directory`, through the path layer.

  TensorFlow's summary writer reaches a bucket only through TensorFlow's own GCS client, so the
  records (TFRecord-framed `Event` protos, which TensorBoard reads) are written here; each
  `write_scalars` appends its records whole, so TensorBoard sees a run's progress as it goes.
  """

  def __init__(self, directory: str):
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top

    self._event_pb2 = event_pb2
    files.makedirs(directory)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
    self.path = files.join(directory, name)
    self._append([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

  def _append(self, events: list) -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # pylint: disable=g-import-not-at-top

    records = []
    for event in events:
      data = event.SerializeToString()
      header = len(data).to_bytes(8, "little")
      records += [header, masked_crc32c(header).to_bytes(4, "little")]
      records += [data, masked_crc32c(data).to_bytes(4, "little")]
    files.append_bytes(self.path, b"".join(records))

  def write_scalars(self, step: int, values: Mapping[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top

    summary = summary_pb2.Summary(
      value=[
        summary_pb2.Summary.Value(tag=key, simple_value=float(value))
        for key, value in values.items()
      ]
    )
    self._append([self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)])

  def flush(self) -> None:
    pass  # Each write is appended whole at once.

  def close(self) -> None:
    pass  # Nothing is held open between writes.
