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
