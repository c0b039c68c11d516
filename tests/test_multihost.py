"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 devices each) train on
one 8-device mesh, each feeding its own rows, and match one 8-device process (pytest's own): a
bare train step, and the real `train_and_evaluate` with each process reading only its own data
shard."""

import json
import os
import pathlib

import pytest

from gato_jax import train
from gato_jax.training import metrics_log

from helpers import multihost_step
from helpers.configs import smoke_config
from helpers.processes import run_processes

ROOT = pathlib.Path(__file__).parents[1]
WORKER = ROOT / "tests" / "helpers" / "multihost_train.py"


@pytest.fixture(scope="module")
def two_processes(data_dir, tmp_path_factory):
  """One launch of the two-process job for both tests: the trainer's workdir, then the bare
  step's report. The one-process answers are computed here, in pytest's 8-device process."""
  tmp = tmp_path_factory.mktemp("multihost")
  workdir, step_json = tmp / "multi", tmp / "multi.json"
  for returncode, output in run_processes(WORKER, 2, data_dir, str(workdir), str(step_json)):
    assert returncode == 0, output[-3000:]
  return workdir, json.loads(step_json.read_text())


def test_two_processes_match_one(two_processes):
  _, multi = two_processes
  single = multihost_step.train_steps(process_id=0, num_processes=1)
  assert multi["processes"] == 2 and multi["devices"] == 8
  assert single["processes"] == 1 and single["devices"] == 8
  assert multi["losses"][0] > 5.0 and multi["losses"][-1] < multi["losses"][0]
  for a, b in zip(multi["losses"], single["losses"]):
    assert abs(a - b) <= 1e-5 * abs(b), (multi["losses"], single["losses"])


def test_train_and_evaluate_on_two_processes_matches_one(two_processes, data_dir, tmp_path):
  workdir, _ = two_processes
  # The workers' config: data.num_shards fixed, so one process and two make the same stream.
  train.train_and_evaluate(smoke_config(data_dir, **{"data.num_shards": 2}), str(tmp_path))
  multi = metrics_log.read_metrics(str(workdir))
  single = metrics_log.read_metrics(str(tmp_path))
  assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 3, 4]
  for a, b in zip(multi, single):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (multi, single)
    assert a["loss/babyai"] == pytest.approx(b["loss/babyai"], rel=1e-5)
  # One writer: process 0 logs each step once; both processes' checkpoints landed together.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
