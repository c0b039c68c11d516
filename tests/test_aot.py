"""Ahead-of-time compilation for a TPU slice that is not here (tools/aot_compile.py).

Needs libtpu (`pip install -e .[tpu]`); without it these tests skip, saying so.
"""

import importlib.util
import json
import pathlib

import pytest

from helpers.scripts import run_python

needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed (pip install -e .[tpu]): cannot compile for a TPU topology",
)

ROOT = pathlib.Path(__file__).parents[1]
TINY_ARGS = [
  "--config=experiments/configs/gato.py:tiny",
  "--config.train.batch_size=8",
  "--config.train.seq_len=128",
  "--config.train.max_patches=4",
  "--config.eval.batch_size=4",
  "--topology=v5e:2x2",
  "--what=train,decode",
]


@needs_libtpu
def test_aot_tool_reports_tiny_on_a_v5e_slice():
  from gato_jax.model import ModelConfig
  from gato_jax.training import flops

  out = run_python("tools/aot_compile.py", *TINY_ARGS)
  train, decode = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  for row in (train, decode):
    assert row["size"] == "tiny" and row["topology"] == "v5e:2x2"
    assert row["device_kind"] == "TPU v5 lite" and row["devices"] == 4 and row["hbm_gib"] == 16.0
    assert row["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and row["rules"] == "fsdp"
    assert row["remat_policy"] == "none" and row["fits"] is True and row["params"] == 576_976
    assert 0 <= row["temp_gib"] < 1 and row["compile_seconds"] > 0
    assert 0 < row["est_mfu"] <= 1 and row["est_step_seconds"] > 0
  assert (train["what"], train["global_batch"], train["logits_per_row"]) == ("train", 8, 64)
  assert train["temp_gib"] > 0
  # Replicated fp32 parameters and two Adam moments, plus a quarter of the batch, per chip; the
  # TPU pads small arrays to its tiles, hence the margin above the exact count.
  state_bytes = 3 * 4 * 576_976
  assert state_bytes < train["argument_gib"] * 2**30 < 1.25 * state_bytes
  expected_flops = (
    flops.train_flops_per_token(ModelConfig.from_size("tiny"), 576_976, 128, 64) * 8 * 128 / 4
  )
  assert train["flops_per_device"] == float(f"{expected_flops:.4g}")
  assert (decode["what"], decode["global_batch"], decode["cache_length"]) == ("decode", 4, 1024)


@needs_libtpu
def test_out_of_memory_is_a_result():
  """Logits at all 1024 positions of 512 rows do not fit a v5e chip: fits is False, not a crash."""
  from experiments.configs import gato
  from gato_jax.training import aot

  config = gato.get_config("tiny")
  config.train.logits_at_targets_only = False
  config.train.max_patches = 0
  row = aot.compile_case(config, "v5e:2x2", "train")
  assert row["fits"] is False and row["hbm_gib"] == 16.0
  assert row["temp_gib"] > 16 and "memory" in row["compiler_message"].lower()
  assert row["est_step_seconds"] > 0


@needs_libtpu
def test_unknown_topology_names_the_problem():
  from gato_jax.training import aot

  with pytest.raises(ValueError, match="could not describe TPU topology 'v9z:1x1'"):
    aot.topology_devices("v9z:1x1")


def test_slice_presets_launch_as_they_are():
  from experiments.configs import gato

  config = gato.get_config("1.18b,v5e16")
  assert (config.mesh.topology, tuple(config.mesh.shape), config.mesh.rules) == (
    "v5e:4x4",
    (1, -1, 1),
    "fsdp",
  )
  assert config.mesh.multi_host and config.train.batch_size == 512 and config.train.seq_len == 1024
  assert (config.model.remat_policy, config.train.microbatches, config.model.mlp_activation) == (
    "full",
    2,
    "geglu",
  )
  assert not gato.get_config("79m,v4_8").mesh.multi_host
  with pytest.raises(ValueError, match="preset 'v5p8' has plans for sizes"):
    gato.get_config("tiny,v5p8")
