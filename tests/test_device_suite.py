"""tools/bench/device_suite.sh --dry_run: every step of the GPU suite launched on CPU, tiny."""

import json
import os
import pathlib
import subprocess
import sys

from gato_jax import pod

ROOT = pathlib.Path(__file__).parents[1]


def test_device_suite_dry_run(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = pod.xla_flags_with_devices(env.get("XLA_FLAGS", ""), None)  # One device.
  result = subprocess.run(
    ["bash", "tools/bench/device_suite.sh", "--dry_run", f"--out={tmp_path}"],
    cwd=ROOT,
    env={**env, "PYTHON": sys.executable},
    capture_output=True,
    text=True,
    timeout=900,  # A hang guard only: each launch compiles tiny shapes (minutes when loaded).
  )
  assert result.returncode == 0, result.stdout + result.stderr
  # The paper sizes' shapes, from jax.eval_shape alone.
  shapes = [json.loads(line) for line in (tmp_path / "shapes.jsonl").read_text().splitlines()]
  assert {s["size"]: s["params"] for s in shapes} == {
    "1.18b": 1_077_617_792,
    "364m": 336_193_152,
    "79m": 73_706_880,
  }
  (step,) = [json.loads(line) for line in (tmp_path / "train_step.jsonl").read_text().splitlines()]
  assert (step["case"], step["size"], step["batch_size"], step["seq_len"]) == (
    "gato_actions",
    "tiny",
    2,
    32,
  )
  (decode,) = [json.loads(line) for line in (tmp_path / "decode.jsonl").read_text().splitlines()]
  assert (decode["size"], decode["context"], decode["action_tokens"]) == ("tiny", 64, 2)
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["dry_run"] and summary["exit_codes"] == {
    "train_step": 0,
    "decode": 0,
    "generalist": 0,
  }
  assert "+ [generalist" in result.stdout  # The commands are printed as they launch.


def test_device_suite_refuses_unknown_arguments(tmp_path):
  result = subprocess.run(
    ["bash", "tools/bench/device_suite.sh", "--dryrun", f"--out={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 2
  assert "unknown argument --dryrun" in result.stderr
