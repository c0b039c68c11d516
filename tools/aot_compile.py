r"""Compile the real train / decode step for a TPU slice from this machine: one JSON line per case.

  pip install -e .[tpu]   # libtpu: compiles for TPUs that are not present
  python tools/aot_compile.py --config=experiments/configs/gato.py:1.18b,v5e16 \
      --topology=v5e:4x4 --what=train,decode
  # docs/aot.md's table: every size on every slice preset, with the preset's mesh, rules and remat.
  python tools/aot_compile.py --sizes=79m,364m,1.18b --slices=v4_8,v5e16,v5p8 --markdown

Keys: `size`, `topology`, `devices`, `mesh`, `rules`, `remat_policy`, `microbatches`,
`global_batch`, per device `argument_gib`, `output_gib`, `temp_gib`, `total_gib` (what the
compiler needs), `compiler_oom` (the compiler refused: out of memory, with `compiler_message`),
`hbm_gib` (the chip's, from the spec sheet), `hbm_usable_gib` (the limit applied: the least of
that, the usable HBM libtpu's compiler reports and the available HBM an out-of-memory message
names), `fits` (`total_gib` <= `hbm_usable_gib` and no out-of-memory compile) with `why` (one
line), `flops_per_device` (the model's formula), `compile_seconds`, `collective_gib` (ICI bytes
per chip per step) and the estimate `est_compute_seconds`, `est_hbm_seconds`,
`est_collective_seconds`, `est_step_seconds` = max(compute, HBM) + collectives
(gato_jax.training.aot.step_estimate; docs/aot.md).
"""

import json
import os

# Compile-only TPU devices come from libtpu's topology description; the local backend is the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from gato_jax.configs import gato as gato_configs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config.", lock_config=True)
_TOPOLOGY = flags.DEFINE_list(
  "topology",
  None,
  "TPU topologies (libtpu names, e.g. v4:2x2x1, v5e:4x4, v5p:2x2x1); default:"
  " the config's mesh.topology.",
)
_WHAT = flags.DEFINE_list("what", ["train"], "Steps to compile: train, decode.")
_SIZES = flags.DEFINE_list("sizes", None, "With --slices: sizes to compile (instead of --config).")
_SLICES = flags.DEFINE_list(
  "slices",
  None,
  "Slice presets of gato.py (e.g. v4_8,v5e16,v5p8); each"
  " case is gato.py:SIZE,SLICE on the preset's topology.",
)
_TARGETS = flags.DEFINE_integer(
  "targets_per_row", None, "Loss targets per row (logits budget); default half the sequence."
)
_MARKDOWN = flags.DEFINE_bool("markdown", False, "Also print the results as a Markdown table.")
_FROM_JSONL = flags.DEFINE_string(
  "from_jsonl",
  None,
  "Judge saved train result lines (this tool's output) again without compiling: print them with"
  " this version's fits and estimate, then their Markdown table.",
)


def _cases():
  if _SLICES.value:
    if _CONFIG.value is not None or _TOPOLOGY.value:
      raise app.UsageError("--slices builds its own configs: give --sizes, not --config/--topology")
    for size in _SIZES.value or ["tiny"]:
      for slice_name in _SLICES.value:
        config = gato_configs.get_config(f"{size},{slice_name}")
        yield config, config.mesh.topology
    return
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("give --config=experiments/configs/gato.py:SIZE[,PRESET] or --slices")
  topologies = _TOPOLOGY.value or [config.mesh.topology]
  if not all(topologies):
    raise app.UsageError("give --topology (the config names none in mesh.topology)")
  for topology in topologies:
    yield config, topology


def markdown_table(rows) -> str:
  """docs/aot.md's table from result rows (train cases)."""
  gib = lambda v: "-" if v is None else f"{v:.1f}"
  gib2 = lambda v: "-" if v is None else f"{v:.2f}"  # Near the limit a tenth misleads.
  sec = lambda v: "-" if v is None else f"{v:.2f}"
  lines = [
    "| size | slice | mesh (data, fsdp, tensor) | rules | remat | micro | params |"
    " args GiB | temp GiB | total / usable HBM GiB | fits | ICI GiB | est. compute s |"
    " est. HBM s | est. collectives s | est. step s |",
    "| --- " * 16 + "|",
  ]
  for r in rows:
    mesh = ",".join(str(v) for v in r["mesh"].values())
    fits = {True: "yes", False: "**no**", None: "?"}[r["fits"]]
    lines.append(
      f"| {r['size']} | {r['topology']} ({r['devices']} chips) | {mesh} | {r['rules']} |"
      f" {r['remat_policy']} | {r.get('microbatches', '-')} | {r['params'] / 1e6:,.1f}M |"
      f" {gib(r['argument_gib'])} | {gib(r['temp_gib'])} |"
      f" {gib2(r.get('total_gib'))} / {gib2(r['hbm_usable_gib'])} | {fits} |"
      f" {gib(r['collective_gib'])} | {sec(r['est_compute_seconds'])} |"
      f" {sec(r['est_hbm_seconds'])} | {sec(r['est_collective_seconds'])} |"
      f" {sec(r['est_step_seconds'])} |"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  from gato_jax.training import aot  # pylint: disable=g-import-not-at-top

  if _FROM_JSONL.value:
    with open(_FROM_JSONL.value) as f:
      rows = [json.loads(line) for line in f if line.startswith("{")]
    # Judged again by this version's verdict and estimate (older lines included).
    rows = [aot.judge(r) for r in rows if r["what"] == "train"]
    for row in rows:
      print(json.dumps(row))
    print(markdown_table(rows))
    return

  rows = []
  for config, topology in _cases():
    for what in _WHAT.value:
      kwargs = {"targets_per_row": _TARGETS.value} if what == "train" else {}
      row = aot.compile_case(config, topology, what, **kwargs)
      print(json.dumps(row), flush=True)
      rows.append(row)
  if _MARKDOWN.value:
    print(markdown_table([r for r in rows if r["what"] == "train"]))


if __name__ == "__main__":
  app.run(main)
