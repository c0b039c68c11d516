"""Metrics logging: JSON lines, TensorBoard events, progress line."""

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
  assert records == [{"step": 1, "loss": 2.5, "target_tokens": 7},
                     {"step": 2, "loss": 2.0, "grad_norm": None}]
  assert math.isnan(values["grad_norm"])
  assert glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  logger.progress(2, {"loss": 2.0})
  line = logger.progress(4, {"loss": 1.5, "tokens_per_second": 1000.0})
  assert line.startswith("step 4/10 | loss 1.5 | tokens_per_second 1000 | eta ")


def test_non_scalar_metrics_are_rejected(tmp_path):
  logger = MetricsLogger(str(tmp_path), total_steps=1, tensorboard=False)
  with pytest.raises(ValueError, match="scalars"):
    logger.write(1, {"loss": np.zeros(3)})
