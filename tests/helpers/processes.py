"""Multi-host rehearsal on one machine: N local processes of one job, a coordinator on
127.0.0.1 (tests import this as `helpers.processes`)."""

import os
import pathlib
import subprocess
import sys

from gato_jax import pod

ROOT = pathlib.Path(__file__).parents[2]


def run_processes(
  worker: pathlib.Path, num_processes: int, *args: str, timeout: float = 600
) -> list[tuple[int, str]]:
  """Runs `python WORKER PROCESS_ID NUM_PROCESSES PORT ARGS...` for every process id at once;
  returns each process's (exit status, stdout and stderr)."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  # Each worker sets its own device count; the run's other XLA flags (conftest.py) stay.
  env["XLA_FLAGS"] = pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None)
  env["PYTHONPATH"] = str(ROOT)
  port = str(pod.free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, str(worker), str(i), str(num_processes), port, *args],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  return [(p.returncode, output) for p, output in zip(procs, outputs)]


# The two-host run that tests/conftest.py's `two_host_run` makes once for test_pod.py (the local
# rehearsal's output) and test_preemption.py (the uninterrupted losses a preempted run must
# resume to): six steps of tiny,smoke, a checkpoint only at the end, so any checkpoint before
# that is a preemption's.
TWO_HOST_STEPS = 6
TWO_HOST_FLAGS = (f"--config.train.steps={TWO_HOST_STEPS}", "--config.checkpoint.every_steps=100")


def start_pod_rehearsal(data_dir: str, workdir: pathlib.Path, *overrides: str) -> subprocess.Popen:
  """Starts `experiments/pod.py --dispatch=local --hosts=2` on tiny,smoke (two processes of 4
  fake devices train its (2, 2, 2) mesh) with config `overrides`; stdout and stderr piped."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env["XLA_FLAGS"] = pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None)
  env["PYTHONPATH"] = str(ROOT)
  argv = [
    sys.executable,
    "experiments/pod.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    "--dispatch=local",
    "--hosts=2",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    *overrides,
  ]
  return subprocess.Popen(
    argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
