r"""Input-pipeline throughput, start-up and memory: one JSON line per run (one case a process).

Times the training stream of `train.build_data` for a mixture over the data in --data_dir: the
per-step work of training (task sampling, reading windows from the derived stores, prompts,
packing into a model Batch), in one thread, so its rate is the rate of one core.
`first_batch_seconds` runs from process start to the first batch; `peak_rss_mib` is the whole
process's. Build the stores first (tools/build_store.py; otherwise the first run builds them and
says so). `--in_memory` times the former design instead: every episode tokenized into Python
lists before the first batch.

  python tools/build_store.py --data_dir=/tmp/vl --mixture=vision_language/shapes_captions
  python tools/bench/pipeline.py --data_dir=/tmp/vl --mixture=vision_language/shapes_captions

Keys: `sequences_per_second_per_core`, `tokens_per_second_per_core` (non-padding tokens),
`first_batch_seconds`, `peak_rss_mib`, `max_patches` (the derived patch budget), `items`.
"""

import json
import os
import resource
import time

os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags
import numpy as np

_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Where the generated data lives.")
_MIXTURE = flags.DEFINE_string("mixture", "control", "A seqio Mixture or Task, or name=weight,...")
_POLICY = flags.DEFINE_enum(
  "policy",
  "expert",
  ["expert", "random"],
  "Whose episodes the built-in control tasks read (data.policy).",
)
_CONTEXT = flags.DEFINE_integer("context", 1024, "Tokens per sequence.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Minimum measuring time.")
_IN_MEMORY = flags.DEFINE_bool("in_memory", False, "Time the former in-memory pools instead.")
_LABEL = flags.DEFINE_string("label", "", "A name for this case in the output.")


def process_seconds() -> float:
  """Seconds since this process started (Linux)."""
  with open("/proc/self/stat") as f:
    start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
  with open("/proc/uptime") as f:
    uptime = float(f.read().split()[0])
  return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def main(argv):
  del argv
  from gato_jax import train
  from gato_jax.configs import gato
  from gato_jax.data import mixture, tasks
  from gato_jax.data import pipeline as data_pipeline

  config = gato.get_config("tiny")
  config.data.data_dir = _DATA_DIR.value
  config.data.mixture = _MIXTURE.value
  config.data.policy = _POLICY.value
  config.train.batch_size = _BATCH_SIZE.value
  config.train.seq_len = _CONTEXT.value
  derived = data_pipeline.store_root(_DATA_DIR.value, config.data.derived_dir)
  data = train.build_data(config, patch_dim=768)
  built_here = any(
    os.path.getmtime(os.path.join(data_pipeline.store_dir(derived, n), "meta.json"))
    > time.time() - process_seconds()
    for n in data.probabilities
  )
  if _IN_MEMORY.value:
    pools = {name: tasks.load_token_groups(name) for name in data.probabilities}
    data = mixture.MixtureIterator(
      pools,
      data.probabilities,
      data.batch_size,
      data.context,
      data.max_patches,
      data.patch_dim,
      seed=data.seed,
      prompt=data.prompt,
      kinds=data.kinds,
    )
  data.host_batch(0)
  first_batch = process_seconds()
  steps, tokens, start = 0, 0, time.perf_counter()
  while time.perf_counter() - start < _SECONDS.value:
    batch = data.host_batch(1 + steps)
    tokens += int(np.count_nonzero(batch.segment_ids))
    steps += 1
  seconds = time.perf_counter() - start
  print(
    json.dumps(
      {
        "case": _LABEL.value or _MIXTURE.value,
        "mixture": _MIXTURE.value,
        "data_dir": _DATA_DIR.value,
        "design": "in_memory" if _IN_MEMORY.value else "store",
        "items": {
          name: len((data.episodes[0] if 0 in data.episodes else data.episodes)[name])
          for name in data.probabilities
        },
        "context": _CONTEXT.value,
        "batch_size": _BATCH_SIZE.value,
        "max_patches": data.max_patches,
        "sequences_per_second_per_core": round(steps * _BATCH_SIZE.value / seconds, 1),
        "tokens_per_second_per_core": round(tokens / seconds, 1),
        "fill": round(tokens / (steps * _BATCH_SIZE.value * _CONTEXT.value), 3),
        "first_batch_seconds": round(first_batch, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stores_built_in_this_run": built_here,
      }
    ),
    flush=True,
  )


if __name__ == "__main__":
  app.run(main)
