"""From a run's `config.data` to its tasks, weights, stores and batches: the one entry point.

  data = pipeline.open_run_data(config.data)     # tasks registered, mixture resolved, stores open
  batches = data.iterator(batch_size, seq_len, max_patches, patch_dim, process_index, count)

Training, evaluation, tools/build_store.py, tools/action_fidelity.py and
experiments/generalist.py all ask here. `mixture_weights(config.data)` answers "which tasks, at
which weights" without opening a store (evaluation needs no more); `task_store` opens one task's
derived store (gato_jax.data.store), building it on first use from the task's reader: the
built-in tasks' episodes tokenized by numpy, any other task through its SeqIO Task
(gato_jax.data.tasks.iter_token_groups).

The steps, in order: `register_config_tasks` registers the built-in tasks for `data.data_dir`
(gato_jax.sources.builtin) and imports the modules of `data.imports`, which may add tasks and
seqio Mixtures; `presets.resolve` turns `data.mixture` into {task: probability}; each task's
store is opened; `RunData.iterator` samples this process's data shards of them
(gato_jax.data.mixture).
"""

import dataclasses
import importlib
import os
from typing import Any

from absl import logging

from gato_jax import files
from gato_jax.data import catalogue, mixture, presets, sequences, tasks
from gato_jax.data import store as store_lib

# Config fields that older configs (e.g. ones saved with a checkpoint) may lack: name -> default.
_DEFAULTS = {
  "derived_dir": "",
  "policy": "expert",
  "imports": "",
  "max_episodes_per_task": 0,
  "task_max_episodes": "",
  "action_noise": "",
}


def _field(data, name: str) -> Any:
  return data.get(name, _DEFAULTS[name])


def data_dir(data) -> str:
  """The run's data directory, expanded; a clear error for a bucket (the episode files are read
  with local file calls)."""
  return files.local_only(
    data.data_dir, "data.data_dir", "copy it to a local disk on every host first"
  )


def store_root(data_dir: str, derived_dir: str = "") -> str:
  """Where the derived stores of a data directory go: data.derived_dir, by default
  DATA_DIR/derived."""
  return os.path.expanduser(derived_dir or os.path.join(os.path.expanduser(data_dir), "derived"))


def derived_dir(data) -> str:
  """The run's store folder (`store_root` of data.data_dir and data.derived_dir), local only."""
  return files.local_only(
    store_root(data_dir(data), _field(data, "derived_dir")),
    "data.derived_dir (the ArrayRecord stores)",
    store_lib.LOCAL_STORES_FIX,
  )


def episode_limit(data, task: str) -> int | None:
  """How many of `task`'s stored episodes (or examples) the run reads: `data.task_max_episodes`'
  count for the task or its domain, else `data.max_episodes_per_task`; None: all of them.

  A run reads the first N a data stage stored, so runs that generated different --episodes
  share one dataset: its first N episodes are the N episodes a smaller run generated.
  """
  spec, default = _field(data, "task_max_episodes"), _field(data, "max_episodes_per_task")
  return catalogue.count_for(task, spec, default, "data.task_max_episodes") or None


def store_dir(derived_dir: str, name: str, split: str = "train", limit: int | None = None) -> str:
  """Where a task's derived store lives, in a folder named by its file-safe SeqIO name: `split`,
  or `<split>-first<limit>` for a store of the first `limit` stored items."""
  folder = f"{split}-first{limit}" if limit else split
  return os.path.join(
    os.path.expanduser(derived_dir), catalogue.seqio_name(catalogue.canonical_name(name)), folder
  )


def open_store(
  name: str,
  derived_dir: str,
  split: str = "train",
  rebuild: bool = False,
  limit: int | None = None,
) -> store_lib.TaskStore:
  """A task's derived store (of its first `limit` stored items alone; None: all), built first if
  it is missing, stale or `rebuild` is set.

  Raises:
    store_lib.StoreError: naming the task and the file, if a store's files are corrupt.
    KeyError: if the task is not in the catalogue.
  """
  info = catalogue.task_info(name)
  name = info.name
  stored = info.stored_items(split)
  if limit and stored is not None and limit >= stored:
    limit = None  # Nothing to cut: the whole set's store serves.
  directory = store_dir(derived_dir, name, split, limit)
  fingerprint = info.fingerprint(split)
  if limit:
    fingerprint = store_lib.fingerprint(fingerprint, "first", limit)
  meta = store_lib.read_meta(directory)
  if rebuild or meta is None or meta.get("fingerprint") != fingerprint:
    if not info.has_data():
      raise FileNotFoundError(
        f"task {name}: no dataset at {info.source} to build its store from;"
        " generate it with tools/generate_data.py"
      )
    logging.info("building the derived store of %s (%s) at %s", name, split, directory)
    return store_lib.build(
      name,
      tasks.iter_token_groups(name, split, limit=limit),
      directory,
      fingerprint,
      repair=rebuild,
    )
  return store_lib.TaskStore(directory, name)


def register_run_tasks(
  data_dir: str, policy: str = "expert", imports: str = "", action_noise: str = ""
) -> None:
  """What a run registers: the built-in tasks and presets for `data_dir`, `policy` and
  `action_noise` (whose noisy demonstrations a control task reads), then the modules of
  `imports` (comma-separated), which may add tasks and mixtures."""
  from gato_jax.sources import builtin  # The built-in tasks' specs come from their environments.

  modules = [m.strip() for m in imports.split(",") if m.strip()]
  # User modules may name the built-in tasks' SeqIO Tasks; without them no SeqIO is needed.
  builtin.register_builtin_tasks(
    data_dir, policy, seqio_tasks=bool(modules), action_noise=action_noise
  )
  for module in modules:
    importlib.import_module(module)


def register_config_tasks(data) -> None:
  """`register_run_tasks` for a run's `config.data` (data_dir, policy, imports, action_noise)."""
  register_run_tasks(
    data_dir(data), _field(data, "policy"), _field(data, "imports"), _field(data, "action_noise")
  )


def mixture_weights(data, register: bool = True) -> dict[str, float]:
  """{task: probability} of `data.mixture` over the tasks with data, registering the run's tasks
  first (`register_config_tasks`) unless `register` is False (they are already)."""
  if register:
    register_config_tasks(data)
  return presets.resolve(data.mixture, catalogue.available_builtin_tasks())


def task_store(name: str, data, split: str = "train", rebuild: bool = False) -> store_lib.TaskStore:
  """The store of one registered task that a run with `data` reads (`open_store` in its store
  folder, `derived_dir`): of the "train" split, its first `episode_limit` items."""
  limit = episode_limit(data, name) if split == "train" else None
  return open_store(name, derived_dir(data), split, rebuild, limit)


@dataclasses.dataclass(frozen=True)
class RunData:
  """A run's mixture: its tasks' weights, catalogue entries and opened stores.

  Attributes:
    data: the `config.data` group it was opened from.
    weights: {task: probability}.
    infos: {task: TaskInfo}.
    stores: {task: its derived store}.
  """

  data: Any
  weights: dict[str, float]
  infos: dict[str, catalogue.TaskInfo]
  stores: dict[str, store_lib.TaskStore]

  @property
  def kinds(self) -> dict[str, str]:
    return {name: info.kind for name, info in self.infos.items()}

  def iterator(
    self,
    batch_size: int,
    seq_len: int,
    max_patches: int,
    patch_dim: int,
    process_index: int = 0,
    process_count: int = 1,
  ) -> mixture.MixtureIterator:
    """This process's rows of each batch of the mixture.

    Each process samples only the data shards its rows draw from (`data.num_shards`; by default
    one, so the same config gives the same global batches on any number of hosts).
    """
    data = self.data
    num_shards = mixture.data_shards(data.num_shards)
    host_shards = mixture.host_shards(batch_size, num_shards, process_index, process_count)
    pools = {
      shard: {
        name: store_lib.Pool.shard(self.stores[name], shard, num_shards) for name in self.weights
      }
      for shard in host_shards
    }
    logging.info(
      "episodes per task in data shards %s of %d: %s",
      list(host_shards),
      num_shards,
      {name: sum(len(pools[shard][name]) for shard in pools) for name in self.weights},
    )
    kinds = self.kinds
    budget = mixture.patch_budget(
      {name: (s.max_patch_fraction(), s.max_item_patches()) for name, s in self.stores.items()},
      kinds,
      seq_len,
      max_patches,
    )
    prompt = sequences.PromptConfig(
      probability=data.prompt_probability,
      end_fraction=data.prompt_end_fraction,
      max_tokens=data.prompt_tokens,
    )
    return mixture.MixtureIterator(
      pools,
      self.weights,
      batch_size,
      seq_len,
      budget,
      patch_dim,
      seed=data.seed,
      prompt=prompt,
      process_index=process_index,
      process_count=process_count,
      kinds=kinds,
      num_shards=num_shards,
      sources={name: s.meta["fingerprint"] for name, s in self.stores.items()},
    )


def open_run_data(data) -> RunData:
  """Registers the run's tasks, resolves `data.mixture` and opens (building on first use) each
  task's derived store."""
  weights = mixture_weights(data)
  return RunData(
    data,
    weights,
    {name: catalogue.task_info(name) for name in weights},
    {name: task_store(name, data) for name in weights},
  )
