"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 devices each) train on
one 8-device mesh, each feeding its own rows, and match one 8-device process: a bare train step,
and the real `train_and_evaluate` with each process reading only its own data shard."""

import json
import os
import pathlib

import pytest

from gato_jax.training import metrics_log

from helpers.processes import run_processes

ROOT = pathlib.Path(__file__).parents[1]
WORKER = ROOT / "tests" / "helpers" / "multihost_step.py"
TRAIN_WORKER = ROOT / "tests" / "helpers" / "multihost_train.py"


def _run_processes(worker: pathlib.Path, num_processes: int, *args: str) -> None:
  for returncode, output in run_processes(worker, num_processes, *args):
    assert returncode == 0, output[-3000:]


def _launch(num_processes: int, out: pathlib.Path):
  _run_processes(WORKER, num_processes, str(out))
  return json.loads(out.read_text())


def test_two_processes_match_one(tmp_path):
  multi = _launch(2, tmp_path / "multi.json")
  single = _launch(1, tmp_path / "single.json")
  assert multi["processes"] == 2 and multi["devices"] == 8
  assert single["processes"] == 1 and single["devices"] == 8
  assert multi["losses"][0] > 5.0 and multi["losses"][-1] < multi["losses"][0]
  for a, b in zip(multi["losses"], single["losses"]):
    assert abs(a - b) <= 1e-5 * abs(b), (multi["losses"], single["losses"])


def test_train_and_evaluate_on_two_processes_matches_one(data_dir, tmp_path):
  _run_processes(TRAIN_WORKER, 2, data_dir, str(tmp_path / "multi"))
  _run_processes(TRAIN_WORKER, 1, data_dir, str(tmp_path / "single"))
  multi = metrics_log.read_metrics(str(tmp_path / "multi"))
  single = metrics_log.read_metrics(str(tmp_path / "single"))
  assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 3, 4]
  for a, b in zip(multi, single):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (multi, single)
    assert a["loss/babyai"] == pytest.approx(b["loss/babyai"], rel=1e-5)
  # One writer: process 0 logs each step once; both processes' checkpoints landed together.
  assert sorted(os.listdir(tmp_path / "multi" / "checkpoints")) == ["2", "4"]
