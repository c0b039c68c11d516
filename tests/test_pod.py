"""experiments/pod.py and the paper ladder on pods: the printed gcloud launches, and the local pod
rehearsal (N processes, prefixed output, the workers' exit status, signals passed on)."""

import os
import re
import signal
import threading
import uuid

import pytest

from gato_jax import pod, train
from helpers import processes
from helpers.scripts import run_python


def test_slices_as_cloud_tpu_names_them():
  assert pod.TpuSlice("v5e:4x4", 4).accelerator_type == "v5litepod-16"
  assert pod.TpuSlice("v4:2x2x1", 1).accelerator_type == "v4-8"
  assert pod.TpuSlice("v5p:2x2x1", 1).accelerator_type == "v5p-8"
  assert pod.TpuSlice("v6e:4x4", 4).accelerator_type == "v6e-16"
  assert [pod.TpuSlice(t, 1).runtime_version for t in ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1")] == [
    "tpu-ubuntu2204-base",
    "v2-alpha-tpuv5-lite",
    "v2-alpha-tpuv5",
  ]
  assert pod.TpuSlice("v5e:4x4", 4).devices_per_host == 4
  with pytest.raises(ValueError, match="do not split over 3 hosts"):
    pod.TpuSlice("v5e:4x4", 3)
  with pytest.raises(ValueError, match="GENERATION:AxB"):
    pod.TpuSlice("v9:4x4", 1)
  assert pod.tpu_name("gato-size-1.18b") == "gato-size-1-18b"


def test_print_lists_create_install_run_logs_delete_in_order():
  printed = run_python(
    "experiments/pod.py",
    "--config=experiments/configs/gato.py:1.18b,v5e16",
    "--workdir=gs://bucket/run",
    "--name=my-tpu",
    "--zone=us-west4-a",
    "--project=proj",
    "--config.train.steps=10",
  )
  # Printing touches no bucket: the launcher's own logs stay out of the run folder.
  assert printed.stderr == ""
  out = printed.stdout.splitlines()
  commands = [line for line in out if not line.startswith("#")]
  where = "--zone=us-west4-a --project=proj"
  assert commands[0] == (
    f"gcloud compute tpus tpu-vm create my-tpu {where} --accelerator-type=v5litepod-16"
    " --version=v2-alpha-tpuv5-lite"
  )
  assert commands[1] == "git archive --format=tar.gz --output=gato_jax.tar.gz HEAD"
  assert commands[2] == (
    f"gcloud compute tpus tpu-vm scp gato_jax.tar.gz my-tpu: {where} --worker=all"
  )
  assert commands[3].startswith(f"gcloud compute tpus tpu-vm ssh my-tpu {where} --worker=all")
  assert 'pip install -q -e ".[tpu]"' in commands[3]
  # The trainer with every flag but the launcher's own, the same on every host.
  assert commands[4] == (
    f"gcloud compute tpus tpu-vm ssh my-tpu {where} --worker=all '--command=cd gato_jax &&"
    " nohup .venv/bin/python experiments/train.py"
    " --config=experiments/configs/gato.py:1.18b,v5e16 --workdir=gs://bucket/run"
    " --config.train.steps=10 > train.log 2>&1 < /dev/null &'"
  )
  assert commands[5] == (
    f"gcloud compute tpus tpu-vm ssh my-tpu {where} --worker=0 '--command=tail -f"
    " gato_jax/train.log'"
  )
  assert commands[6] == f"gcloud compute tpus tpu-vm delete my-tpu {where} --quiet"
  assert len(commands) == 7
  assert out[0] == "# 1.18b,v5e16: slice preset v5e16, v5litepod-16 (v5e:4x4, 16 chips, 4 hosts)"


def test_print_refuses_a_local_workdir_and_a_config_without_a_slice(tmp_path):
  result = run_python(
    "experiments/pod.py",
    "--config=experiments/configs/gato.py:79m,v4_8",
    f"--workdir={tmp_path}",
    check=False,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: --workdir={tmp_path} is not")
  result = run_python(
    "experiments/pod.py",
    "--config=experiments/configs/gato.py:79m",
    "--workdir=gs://b/r",
    check=False,
  )
  assert result.stderr.strip().splitlines()[-1] == (
    "error: config '79m' is sized for no slice: add a slice preset"
    " (e.g. --config=experiments/configs/gato.py:1.18b,v5e16)"
  )


def test_paper_ladder_prints_a_pod_launch_per_size(gcs_emulator):
  # The print dispatch reads the sweep folder for runs already finished: a bucket of the
  # emulator, since tests have no network.
  bucket = gcs_emulator.create_bucket(f"ladder-{uuid.uuid4().hex[:12]}")
  printed = run_python(
    "experiments/sweep.py",
    "--config=experiments/configs/sweep.py:paper",
    f"--workdir={bucket}/sweep",
    "--dispatch=print",
    "--zone=us-east5-a",
  )
  assert "Traceback" not in printed.stderr and "full logs" not in printed.stderr
  out = printed.stdout.splitlines()
  base = (
    f"experiments/sweep.py --config=experiments/configs/sweep.py:paper --workdir={bucket}/sweep"
  )
  for size in ("79m", "364m", "1.18b"):
    name = pod.tpu_name(f"gato-size-{size}")
    assert f"# run size-{size}: slice preset v5p8, v5p-8 (v5p:2x2x1, 4 chips, 1 host)" in out
    assert (
      f"gcloud compute tpus tpu-vm create {name} --zone=us-east5-a --accelerator-type=v5p-8"
      " --version=v2-alpha-tpuv5"
    ) in out
    runs = [line for line in out if f"--run=size-{size} " in line]
    assert len(runs) == 1 and f"ssh {name} --zone=us-east5-a --worker=all" in runs[0]
    assert f"nohup .venv/bin/python {base} --run=size-{size} > train.log" in runs[0]
    assert f"gcloud compute tpus tpu-vm delete {name} --zone=us-east5-a --quiet" in out
  assert out[0].startswith("# Prepare: every host reads base.data.data_dir")
  assert out[-1] == f"python {base} --dispatch=report"


def test_paper_ladder_runs_carry_their_slice_preset():
  from gato_jax.configs import gato, sweep as sweep_configs
  from gato_jax.sweep import plan

  sweep = sweep_configs.get_config("paper")
  runs = {run.config.model.size: run.config for run in plan.plan(sweep)}
  presets = gato.SLICES
  for size, config in runs.items():
    remat, microbatches = presets["v5p8"][2][size]
    assert config.mesh.topology == "v5p:2x2x1" and tuple(config.mesh.shape) == (1, -1, 1)
    assert (config.model.remat_policy, config.train.microbatches) == (remat, microbatches)
  assert runs["1.18b"].train.microbatches == 2
  sweep.slices = "79m=v5p8"
  with pytest.raises(ValueError, match="names no slice preset for size '364m'"):
    plan.plan(sweep)


# The local rehearsal: two processes of 4 fake devices each train tiny,smoke's (2, 2, 2) mesh.


def test_local_rehearsal_trains_on_two_processes(two_host_run):
  returncode, out, workdir = two_host_run  # Shared with test_preemption.py (tests/conftest.py).
  assert returncode == 0, out[-3000:]
  lines = out.splitlines()
  # Each worker runs the trainer with the shared flags plus its own place in the job.
  for i in range(2):
    started = [line for line in lines if line.startswith(f"[pod] worker {i}: pid ")]
    assert len(started) == 1
    assert "experiments/train.py --config=experiments/configs/gato.py:tiny,smoke" in started[0]
    assert (
      "--config.mesh.multi_host=true --config.mesh.coordinator_address=127.0.0.1:" in started[0]
    )
    assert f"--config.mesh.num_processes=2 --config.mesh.process_id={i}" in started[0]
    assert f"[pod] worker {i} exited with status 0" in lines
    assert any(line.startswith(f"[worker {i}] ") for line in lines)
  steps = processes.TWO_HOST_STEPS
  assert any(re.match(rf"\[worker 0\] .*step {steps}/{steps} \| loss", line) for line in lines), (
    out[-3000:]
  )
  # The run's flags save only at the end; periodic saves of two processes: test_multihost.py.
  assert os.listdir(workdir / "checkpoints") == [str(steps)]


def test_sigterm_to_the_rehearsal_reaches_the_workers(data_dir, tmp_path):
  proc = processes.start_pod_rehearsal(data_dir, tmp_path / "run", "--config.train.steps=100000")
  lines, training = [], threading.Event()

  def read():
    for line in proc.stdout:
      lines.append(line.rstrip())
      if re.match(r"\[worker 0\] .*step \d+/100000", line):
        training.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert training.wait(timeout=600), "\n".join(lines[-50:])
  proc.send_signal(signal.SIGTERM)
  # The workers save one checkpoint and exit as preempted; the launcher passes their status on.
  assert proc.wait(timeout=300) == train.PREEMPTED_EXIT_CODE, "\n".join(lines[-50:])
  reader.join(timeout=30)
  pids = [int(m[1]) for line in lines if (m := re.match(r"\[pod\] worker \d: pid (\d+)", line))]
  assert len(pids) == 2
  assert "[pod] SIGTERM: sent SIGTERM to the running workers" in lines
  for i, pid in enumerate(pids):
    status = [line for line in lines if line.startswith(f"[pod] worker {i} exited with status ")]
    assert status == [f"[pod] worker {i} exited with status {train.PREEMPTED_EXIT_CODE}"], status
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)  # Both workers are gone by the time the launcher exits.
