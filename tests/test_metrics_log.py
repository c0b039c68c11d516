"""Metrics logging: JSON lines, TensorBoard events, progress line."""

import errno
import glob
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax.training.metrics_log import MetricsLogger, read_metrics


def test_jsonl_tensorboard_and_progress(tmp_path):
  logger = MetricsLogger(str(tmp_path), total_steps=10)
  logger.write(1, {"loss": jnp.float32(2.5), "target_tokens": np.int32(7)})
  values = logger.write(2, {"loss": 2.0, "grad_norm": float("nan")})
  logger.close()
  records = read_metrics(str(tmp_path))
  assert records == [
    {"step": 1, "loss": 2.5, "target_tokens": 7},
    {"step": 2, "loss": 2.0, "grad_norm": None},
  ]
  assert math.isnan(values["grad_norm"])
  assert glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  logger.progress(2, {"loss": 2.0})
  line = logger.progress(4, {"loss": 1.5, "tokens_per_second": 1000.0})
  assert line.startswith("step 4/10 | loss 1.5 | tokens_per_second 1000 | eta ")


def test_non_scalar_metrics_are_rejected(tmp_path):
  logger = MetricsLogger(str(tmp_path), total_steps=1, tensorboard=False)
  with pytest.raises(ValueError, match="scalars"):
    logger.write(1, {"loss": np.zeros(3)})


def test_torn_line_is_skipped_by_the_reader_and_repaired_on_resume(tmp_path):
  logger = MetricsLogger(str(tmp_path), total_steps=10, tensorboard=False)
  logger.write(1, {"loss": 3.0})
  logger.write(2, {"loss": 2.0})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "lo')  # A write cut short by a crash.
  assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]
  resumed = MetricsLogger(str(tmp_path), total_steps=10, tensorboard=False, resume_step=2)
  resumed.write(3, {"loss": 1.0})
  assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
    '{"step": 1, "loss": 3.0}',
    '{"step": 2, "loss": 2.0}',
    '{"step": 3, "loss": 1.0}',
  ]


def test_resume_drops_the_steps_it_replays(tmp_path):
  logger = MetricsLogger(str(tmp_path), total_steps=10, tensorboard=False)
  for step in (1, 2, 3, 4):
    logger.write(step, {"loss": float(step)})
  logger.write(2, {"eval/score": 0.5})
  # Killed after step 4; the newest checkpoint is step 2, so steps 3 and 4 run again.
  resumed = MetricsLogger(str(tmp_path), total_steps=10, tensorboard=False, resume_step=2)
  resumed.write(3, {"loss": 30.0})
  assert read_metrics(str(tmp_path)) == [
    {"step": 1, "loss": 1.0},
    {"step": 2, "loss": 2.0},
    {"step": 2, "eval/score": 0.5},
    {"step": 3, "loss": 30.0},
  ]


def test_failed_write_leaves_no_half_record(tmp_path, monkeypatch):
  logger = MetricsLogger(str(tmp_path), total_steps=10, tensorboard=False)
  logger.write(1, {"loss": 3.0})
  real_write = os.write

  def full_disk(fd, data):
    real_write(fd, data[:5])  # Part of the record reaches the file before the disk fills.
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "write", full_disk)
  with pytest.raises(OSError, match="No space left on device: '.*metrics.jsonl'") as raised:
    logger.write(2, {"loss": 2.0})
  monkeypatch.undo()
  assert raised.value.errno == errno.ENOSPC
  logger.write(2, {"loss": 2.0})
  assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]


def test_pace_extrapolates_this_process_pace_and_throttles_lines(monkeypatch):
  from gato_jax import console

  clock = [1000.0]
  monkeypatch.setattr(console.time, "time", lambda: clock[0])
  pace = console.Pace(total=1000, every_s=60)
  # A resumed run starts at 400: only what this process does sets the pace.
  assert pace.line(400) == "400/1,000, eta ?"
  clock[0] += 100
  assert pace.eta(500) == 500.0  # 100 units in 100 s: 500 left take 500 s.
  assert console.duration(3723.9) == "1h02m03s" and console.duration(float("nan")) == "?"
  assert pace.due(500)  # The first line.
  clock[0] += 59
  assert not pace.due(550)
  clock[0] += 1
  assert pace.due(560)
  assert pace.due(1000)  # The last line always shows.
