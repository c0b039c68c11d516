"""Preemption: a real SIGTERM stops training after a checkpoint at one step on every process, the
launcher exits with PREEMPTED_EXIT_CODE, and the same command again resumes with the losses of
an uninterrupted run. Also the profiler trace of chosen steps."""

import os
import pathlib
import signal

import pytest

from gato_jax import train
from gato_jax.data import mixture
from gato_jax.training import metrics_log, preemption, profiler

from helpers import processes
from helpers.configs import smoke_config

ROOT = pathlib.Path(__file__).parents[1]
WORKER = ROOT / "tests" / "helpers" / "preempt_train.py"
# The flags of the shared two-host run (tests/conftest.py `two_host_run`), which the two-host test
# resumes to: checkpoints only at the end (and on preemption).
STEPS, FLAGS = processes.TWO_HOST_STEPS, processes.TWO_HOST_FLAGS


def _config(data_dir, **overrides):
  return smoke_config(
    data_dir, **{"train.steps": STEPS, "checkpoint.every_steps": 100, **overrides}
  )


def _losses(workdir) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(workdir))]


def _checkpoints(workdir) -> list[str]:
  return sorted(os.listdir(pathlib.Path(workdir) / "checkpoints"), key=int)


def test_sigterm_on_one_process_saves_and_resumes_exactly(data_dir, tmp_path, monkeypatch):
  full = tmp_path / "full"
  # The uninterrupted run also traces two steps: a profile changes no loss.
  train.train_and_evaluate(_config(data_dir, **{"train.profile_steps": "2,2"}), str(full))
  traces = list((full / profiler.PROFILE_DIR).glob("plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert len(_losses(full)) == STEPS
  host_batch = mixture.MixtureIterator.host_batch

  def sigterm_at_batch_2(self, step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return host_batch(self, step)

  monkeypatch.setattr(mixture.MixtureIterator, "host_batch", sigterm_at_batch_2)
  handler = signal.getsignal(signal.SIGTERM)
  run = tmp_path / "preempted"
  with pytest.raises(preemption.Preempted, match="saved checkpoint 3 in .*; rerun") as raised:
    train.train_and_evaluate(_config(data_dir), str(run))
  assert raised.value.step == 3
  assert _checkpoints(run) == ["3"]
  assert [step for step, _ in _losses(run)] == [1, 2, 3]
  # The trainer gave SIGTERM back: a later one is handled as before the run, not just noted.
  assert signal.getsignal(signal.SIGTERM) == handler

  monkeypatch.setattr(mixture.MixtureIterator, "host_batch", host_batch)
  train.train_and_evaluate(_config(data_dir), str(run))
  assert _losses(run) == _losses(full)
  assert _checkpoints(run) == ["3", str(STEPS)]


def test_sigterm_to_one_of_two_hosts_stops_both_at_one_step(data_dir, two_host_run, tmp_path):
  # The uninterrupted run: the same launcher and flags on two hosts, started by the local pod
  # rehearsal (test_pod.py checks its output).
  returncode, output, full = two_host_run
  assert returncode == 0, output[-3000:]
  run = tmp_path / "preempted"
  # Process 1 alone is told, while it builds batch 1; process 0 learns it from the coordinator.
  stopped = processes.run_processes(WORKER, 2, data_dir, str(run), "1", *FLAGS)
  for returncode, output in stopped:
    assert returncode == train.PREEMPTED_EXIT_CODE, output[-3000:]
  (saved,) = _checkpoints(run)  # One step, the same on both processes (they save together).
  assert 1 < int(saved) < STEPS
  for _, output in stopped:
    assert output.strip().splitlines()[-1] == (
      f"preempted: saved checkpoint {saved} in {run / 'checkpoints'}; rerun the same command"
      " to resume"
    )
  assert [step for step, _ in _losses(run)] == list(range(1, int(saved) + 1))

  for returncode, output in processes.run_processes(WORKER, 2, data_dir, str(run), "-1", *FLAGS):
    assert returncode == 0, output[-3000:]
  assert _losses(run) == _losses(full)


def test_single_process_launcher_exits_with_the_code(data_dir, tmp_path):
  ((returncode, output),) = processes.run_processes(WORKER, 1, data_dir, str(tmp_path), "0", *FLAGS)
  assert returncode == train.PREEMPTED_EXIT_CODE == 42, output[-3000:]
  assert output.strip().splitlines()[-1].startswith("preempted: saved checkpoint 1 in ")
  assert _checkpoints(tmp_path) == ["1"]


@pytest.mark.parametrize("text", ["3", "0,2", "2,0", "a,b", "1,2,3"])
def test_bad_profile_steps_fail_at_start(text):
  with pytest.raises(ValueError, match="train.profile_steps must be"):
    profiler.parse_steps(text)


def test_profile_steps_parse():
  assert profiler.parse_steps("") == range(0)
  assert list(profiler.parse_steps("5,3")) == [5, 6, 7]
