"""The train-step benchmark's cases run on CPU: ours and the minimal reference decoder."""

import json
import os
import pathlib

from gato_jax import pod

from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).parents[1]


def test_reference_decoder_and_gato_cases_run_on_cpu():
  out = run_python(
    "tools/bench/train_step.py",
    "--config=experiments/configs/gato.py:tiny",
    "--config.train.batch_size=4",
    "--config.train.seq_len=64",
    "--config.mesh.shape=1,1,1",
    "--num_patches=0",
    "--seconds=0",
    "--cases=reference,gato_padded,gato",
    "--phases",
    env={"XLA_FLAGS": pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None)},
  ).stdout
  rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  assert [r["case"] for r in rows] == ["reference", "gato_padded", "gato"]
  for row in rows:
    assert row["tokens_per_second"] > 0 and row["batch_size"] == 4 and row["seq_len"] == 64
    assert row["batches"] == "random" and row["device"] == "cpu"
    assert 0 < row["forward_ms"] and 0 < row["gradients_ms"]
  # The reference and the padded step compute logits at the same targets: the same model FLOPs
  # per step; budgets per batch shard compute no more.
  assert rows[0]["logits_per_row"] == rows[1]["logits_per_row"]
  assert rows[2]["logits_per_row"] <= rows[1]["logits_per_row"]
