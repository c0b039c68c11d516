"""Run folders on a bucket (gs://), against a real Cloud Storage emulator (fake-gcs-server).

The `gcs_emulator` fixture (tests/conftest.py) points google-cloud-storage, gcsfs and
tensorstore at it, here and in the launchers these tests start.
"""

import pathlib
import socket
import subprocess
import sys
import uuid

import pytest

from gato_jax import files, train, workdir_lock
from gato_jax.training import metrics_log

from helpers.configs import smoke_config
from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).parents[1]


@pytest.fixture
def bucket(gcs_emulator):
  """A new, empty bucket: gs://NAME."""
  return gcs_emulator.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


def _losses(workdir: str) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(workdir) if "loss" in r]


def test_path_layer_on_a_bucket(bucket):
  path = files.join(bucket, "a", "b.json")
  assert path == f"{bucket}/a/b.json"
  assert files.resolve(f"{bucket}/a/") == f"{bucket}/a"
  files.write_json(path, {"x": 1})
  files.append_bytes(files.join(bucket, "a", "log"), b"1\n")
  files.append_bytes(files.join(bucket, "a", "log"), b"2\n")
  assert files.read_json(path) == {"x": 1}
  assert files.read_bytes(files.join(bucket, "a", "log")) == b"1\n2\n"
  assert files.listdir(files.join(bucket, "a")) == ["b.json", "log"]
  files.move(files.join(bucket, "a"), files.join(bucket, "c", "a"))
  assert not files.exists(files.join(bucket, "a"))
  assert files.listdir(files.join(bucket, "c", "a")) == ["b.json", "log"]
  with pytest.raises(ValueError, match="data.data_dir must be on a local disk, not gs://"):
    files.local_only(files.join(bucket, "data"), "data.data_dir", "copy it")


def test_train_resume_and_evaluate_on_a_bucket(data_dir, bucket, gcs_emulator, smoke_run):
  # The losses of the same config's undisturbed run on a local disk: a bucket run, stopped and
  # resumed, must give them.
  expected = _losses(str(smoke_run[0]))
  assert [step for step, _ in expected] == [1, 2, 3, 4]

  # The launcher, stopped after step 2's checkpoint as a preemption would, then resumed.
  run = f"{bucket}/run"
  out = run_python(
    "experiments/train.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    f"--workdir={run}",
    f"--config.data.data_dir={data_dir}",
    "--config.train.stop_at_step=2",
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"full logs in {run}/logs" in out.stderr
  assert [step for step, _ in _losses(run)] == [1, 2]
  assert any(name.startswith("train.") for name in files.listdir(f"{run}/logs"))
  train.train_and_evaluate(smoke_config(data_dir, **{"log.tensorboard": True}), run)
  resumed = _losses(run)
  assert [step for step, _ in resumed] == [1, 2, 3, 4]
  for (_, a), (_, b) in zip(resumed, expected):
    assert a == pytest.approx(b, rel=1e-5)
  assert files.listdir(f"{run}/checkpoints") == ["2", "4"]
  (events,) = files.listdir(f"{run}/tensorboard")
  assert events.startswith("events.out.tfevents.")
  assert not files.exists(f"{run}/.lock")  # Released.
  bucket_name = bucket.split("://")[1]
  assert not any(".lock" in name for name in gcs_emulator.objects(bucket_name))

  # Evaluation restores the bucket run's newest checkpoint and writes its reports beside it.
  from gato_jax.evaluation import evaluator, reports

  config = smoke_config(data_dir)
  config.model.max_decode_length = 320  # Room for a BabyAI observation (153 tokens).
  config.eval.update(
    tasks="babyai/GoToRedBall",
    episodes=2,
    batch_size=2,
    prompt_tokens=0,
    max_steps=3,
    bootstrap_resamples=10,
  )
  results = evaluator.evaluate(config, run)
  assert results["step"] == 4
  assert files.read_json(f"{run}/eval/4/results.json")["step"] == 4
  assert "babyai/GoToRedBall" in files.read_text(f"{run}/eval/4/{reports.TABLE_FILE}")
  assert files.read_bytes(f"{run}/eval/4/{reports.CHART_FILE}")[:8] == b"\x89PNG\r\n\x1a\n"


HOLD = (
  "import sys, time; from gato_jax import workdir_lock;"
  " workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True);"
  " time.sleep(600)"
)


def test_second_holder_of_a_bucket_run_is_refused_and_a_stale_lock_taken_over(bucket):
  run = f"{bucket}/run"
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True, cwd=ROOT
  )
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(workdir_lock.WorkdirLockedError) as raised:
      workdir_lock.WorkdirLock(run).acquire()
    message = str(raised.value)
    assert message.startswith(
      f"workdir {run} is in use by pid {holder.pid} on host {socket.gethostname()}; wait for it"
    )
    assert "taken over after 300 s" in message and "\n" not in message
    # Another process of the same pod does not take the lock at all.
    with workdir_lock.WorkdirLock(run, process_index=1):
      pass
  finally:
    holder.kill()  # Killed: its lock stays behind, no longer refreshed.
    holder.wait()
  assert "pid" in files.read_text(f"{run}/.lock")
  with pytest.raises(workdir_lock.WorkdirLockedError):
    workdir_lock.WorkdirLock(run).acquire()
  out = run_python(
    "-c",
    "import sys; from gato_jax import workdir_lock; workdir_lock.STALE_S = 0.0;"
    " lock = workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print(open('/proc/self/stat').read()"
    ".split()[0]); lock.release()",
    run,
  )
  assert out.stdout.strip().isdigit()
  assert not files.exists(f"{run}/.lock")  # Taken over, then released.


def test_missing_bucket_is_one_line(data_dir):
  out = run_python(
    "experiments/train.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    "--workdir=gs://no-such-bucket-here/run",
    f"--config.data.data_dir={data_dir}",
    check=False,
  )
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: cannot write gs://no-such-bucket-here/run/.lock"), out.stderr[
    -2000:
  ]
  assert "Traceback" not in out.stderr


def test_sweep_report_reads_and_writes_a_bucket_workdir(bucket):
  from gato_jax.sweep import report

  from helpers.sweep_results import synthetic_results

  files.write_json(f"{bucket}/sweep/results.json", synthetic_results())
  paths = report.regenerate(f"{bucket}/sweep")
  assert paths["table"] == f"{bucket}/sweep/{report.TABLE_FILE}"
  assert "| size-small | 4.00M | 10K | " in files.read_text(paths["table"])
  for key in ("scores", "loss"):
    assert paths[key].startswith(f"{bucket}/sweep/")
    assert files.read_bytes(paths[key])[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_runs_resume_and_collect_on_a_bucket(bucket):
  from gato_jax.sweep import plan, runner

  from helpers.sweep_results import FakeEvaluator, FakeTrainer, micro_sweep

  runs, workdir = plan.plan(micro_sweep()), f"{bucket}/sweep"
  evaluator = FakeEvaluator()
  with pytest.raises(KeyboardInterrupt):  # Killed while training past the first point.
    runner.execute(runs[0], workdir, FakeTrainer(crash_at=4), evaluator, costs=(1000, 6000.0))
  trainer = FakeTrainer()
  result = runner.execute(runs[0], workdir, trainer, evaluator, costs=(1000, 6000.0))
  assert trainer.calls == [("size-tiny", 2, 4)]  # Resumed from the bucket's checkpoint 2.
  assert evaluator.calls == [("size-tiny", 2), ("size-tiny", 4)]
  assert result["finished"] and [p["step"] for p in result["points"]] == [2, 4]
  assert runner.is_done(workdir, runs[0]) and not runner.is_done(workdir, runs[1])
  collected = runner.collect(workdir, runs, "micro", 2, costs_fn=lambda config: (1000, 6000.0))
  assert [r["name"] for r in collected["runs"]] == ["size-tiny"]
  assert collected["missing"] == ["size-mini"]
  assert files.read_json(f"{workdir}/{runner.RESULTS_FILE}") == collected


def test_lost_bucket_fails_the_next_write_with_one_line(gcs_emulator, bucket):
  import jax.numpy as jnp

  from gato_jax import checkpoint

  run = f"{bucket}/run"
  logger = metrics_log.MetricsLogger(run, total_steps=2, tensorboard=False)
  logger.write(1, {"loss": 1.0})
  checkpoints = checkpoint.Checkpointer(f"{run}/checkpoints", keep_best=0, async_save=False)
  checkpoints.save(1, {"w": jnp.ones(3)})
  assert checkpoints.all_steps() == [1]
  gcs_emulator.delete_bucket(bucket.split("://")[1])
  with pytest.raises(OSError) as raised:
    logger.write(2, {"loss": 0.5})
  assert str(raised.value).startswith(f"could not append to {run}/metrics.jsonl: ")
  assert "\n" not in str(raised.value)
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    checkpoints.save(2, {"w": jnp.zeros(3)})
  assert str(raised.value).startswith(f"could not write checkpoint {run}/checkpoints/2: ")
  assert "\n" not in str(raised.value)


def test_data_on_a_bucket_is_refused_with_the_fix(data_dir, bucket):
  config = smoke_config(data_dir, **{"data.derived_dir": f"{bucket}/derived"})
  with pytest.raises(ValueError) as raised:
    train.build_data(config, patch_dim=48)
  assert str(raised.value) == (
    f"data.derived_dir (the ArrayRecord stores) must be on a local disk, not {bucket}/derived;"
    " build the stores locally with tools/build_store.py, then copy them to a local disk of"
    " every host and set data.derived_dir there"
  )
  with pytest.raises(ValueError, match="^data.data_dir must be on a local disk, not gs://"):
    train.build_data(smoke_config(f"{bucket}/data"), patch_dim=48)
