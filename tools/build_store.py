r"""Builds the derived training stores of a mixture's tasks (gato_jax.data.store).

Training builds a missing or stale store on first use; this tool does it ahead of time (e.g. once
per data set, before a multi-host job), and `--rebuild` repairs corrupt ones. Stores that are
complete and fresh are skipped, so an interrupted run resumes where it stopped.

  python tools/build_store.py --data_dir=~/.cache/gato_jax --mixture=control
  python tools/build_store.py --data_dir=~/.cache/gato_jax --tasks=babyai/GoToRedBall --rebuild
"""

import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "disable")

from absl import app, flags
import ml_collections

from gato_jax.data import catalogue, pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "TFDS data directory.")
_DERIVED_DIR = flags.DEFINE_string("derived_dir", "", "Where stores go; empty: DATA_DIR/derived.")
_MIXTURE = flags.DEFINE_string("mixture", "", "A seqio Mixture or Task name, or name=weight,...")
_TASKS = flags.DEFINE_list("tasks", [], "Task names (instead of, or besides, --mixture).")
_IMPORTS = flags.DEFINE_list("imports", [], "Modules registering more tasks (as data.imports).")
_POLICY = flags.DEFINE_enum(
  "policy",
  "expert",
  ["expert", "random"],
  "Whose episodes the built-in control tasks read (as data.policy).",
)
_ACTION_NOISE = flags.DEFINE_string(
  "action_noise",
  "",
  "Tasks read from noisy demonstrations, per task or domain (as data.action_noise).",
)
_REBUILD = flags.DEFINE_bool("rebuild", False, "Rebuild even complete, fresh stores.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The fields of a run's config.data that name its tasks and stores.
  data = ml_collections.ConfigDict(
    {
      "data_dir": _DATA_DIR.value,
      "derived_dir": _DERIVED_DIR.value,
      "policy": _POLICY.value,
      "imports": ",".join(_IMPORTS.value),
      "action_noise": _ACTION_NOISE.value,
      "mixture": _MIXTURE.value,
    }
  )
  pipeline.register_config_tasks(data)
  names = [catalogue.canonical_name(n) for n in _TASKS.value]
  if _MIXTURE.value:
    names += [n for n in pipeline.mixture_weights(data, register=False) if n not in names]
  if not names:
    raise app.UsageError("name the stores to build with --mixture and/or --tasks")
  for name in names:
    start = time.perf_counter()
    built = pipeline.task_store(name, data, rebuild=_REBUILD.value)
    print(
      json.dumps(
        {
          "task": name,
          "items": len(built),
          "tokens": built.meta["tokens"],
          "bytes": sum(built.meta["bytes"].values()),
          "directory": built.directory,
          "seconds": round(time.perf_counter() - start, 2),
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
