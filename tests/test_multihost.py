"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 devices each) train on
one 8-device mesh, each feeding its own rows, and match one 8-device process."""

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]
WORKER = ROOT / "tests" / "helpers" / "multihost_step.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(num_processes: int, out: pathlib.Path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = str(ROOT)
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(num_processes), port, str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output[-3000:]
  return json.loads(out.read_text())


def test_two_processes_match_one(tmp_path):
  multi = _launch(2, tmp_path / "multi.json")
  single = _launch(1, tmp_path / "single.json")
  assert multi["processes"] == 2 and multi["devices"] == 8
  assert single["processes"] == 1 and single["devices"] == 8
  assert multi["losses"][0] > 5.0 and multi["losses"][-1] < multi["losses"][0]
  for a, b in zip(multi["losses"], single["losses"]):
    assert abs(a - b) <= 1e-5 * abs(b), (multi["losses"], single["losses"])
