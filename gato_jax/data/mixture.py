"""Weighted mixtures of tasks, sampled into batches that are a pure function of (seed, step).

Mixtures are plain data, `{task: weight}`, normalised here and logged as percentages. Every row
of every batch draws its own generator from (seed, step, global row): the task by weight, an
episode of that task, its window and optional prompt. So the stream is identical on every run,
a resumed run needs only the step counter to continue with exactly the batch it would have
seen, and each host computes just its own rows of the global batch.

Episodes are split into `num_shards` data shards (seqio.ShardInfo), and the global batch into as
many equal blocks of rows: the rows of block k sample only from shard k. Each host reads only
the shards its own rows draw from. The stream
depends on the shard count, not on how many hosts share the shards: one process holding all
shards yields exactly the batches that several hosts assemble together. By default there is one
shard (`data_shards`): every host opens all episodes (the derived stores read them lazily) and
the same config gives the same global batches on 1, 2 or 4 hosts.

A task's pool is a list of in-memory TokenGroups or a `store.Pool` of lazily read episodes from
the derived store; the draws, and so the batches, are the same for both. `stream` runs
`batch_at` for the coming steps in Grain worker threads or processes with prefetch.
"""

import dataclasses
from typing import Iterator, Mapping, Sequence

from absl import logging
import numpy as np

from gato_jax.data import packing, sequences
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.timestep import TokenGroup


KINDS = ("control", "text", "vision_language")


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
  """Weights -> probabilities summing to 1, in sorted task order; bad weights are an error."""
  if not weights:
    raise ValueError("a mixture needs at least one task")
  bad = {task: w for task, w in weights.items() if not np.isfinite(w) or w < 0}
  if bad:
    raise ValueError(f"mixture weights must be finite and non-negative, got {bad}")
  total = float(sum(weights.values()))
  if total <= 0:
    raise ValueError(f"mixture weights sum to {total}; at least one must be positive")
  return {task: float(weights[task]) / total for task in sorted(weights)}


def describe(probabilities: Mapping[str, float]) -> str:
  return "\n".join(f"  {100 * p:6.2f}%  {task}" for task, p in probabilities.items())


def patch_budget(
  patch_limits: Mapping[str, tuple[float, int]],
  kinds: Mapping[str, str],
  context: int,
  max_patches: int = -1,
) -> int:
  """Patch slots per row: enough for any row the mixture can draw, or a checked fixed number.

  A control row is whole timesteps of one task (window and prompt) within `context` tokens, so
  it holds at most ceil(context * f) patches, f being the task's largest share of patches among
  a timestep's tokens. A vision-language row holds at most its pairs' images (and is cropped to
  the budget); text rows hold none.

  Args:
    patch_limits: task -> (its largest patch share of a timestep, the most patches of one
      item): `store.TaskStore.max_patch_fraction()` and `max_item_patches()`.
    kinds: task -> kind ("control" by default).
    context: tokens per row.
    max_patches: -1 derives the budget; a number >= 0 is checked against the control tasks.

  Raises:
    ValueError: naming the task and what to set, if a fixed budget is too small for it.
  """
  needs = {}
  for task, (fraction, item_patches) in patch_limits.items():
    kind = kinds.get(task, "control")
    if kind != "text":
      needs[task] = int(np.ceil(context * fraction - 1e-9))
    if kind == "vision_language":
      needs[task] = min(needs[task], sequences.VISION_LANGUAGE_PAIRS * item_patches)
  if max_patches < 0:
    return max(needs.values(), default=0)
  for task, need in sorted(needs.items()):
    if kinds.get(task, "control") == "control" and need > max_patches:
      raise ValueError(
        f"task {task} needs up to {need} patch slots in a row of {context} tokens,"
        f" but train.max_patches={max_patches}; set train.max_patches={need} (or"
        " -1, derived from the context and the data)"
      )
  return max_patches


class DataChangedError(ValueError):
  """A resumed run's data differs from the data its checkpoint was trained on."""


def data_shards(num_shards: int) -> int:
  """The data shard count a config's `data.num_shards` asks for: 0 means one shard, so that the
  stream does not depend on the number of hosts; a run may fix more to have each host open less
  of the data (the stream then depends on that number, still not on the hosts)."""
  if num_shards < 0:
    raise ValueError(f"data.num_shards must be >= 0 (0: one shard), got {num_shards}")
  return num_shards or 1


def host_shards(batch_size: int, num_shards: int, process_index: int, process_count: int) -> range:
  """The data shards whose blocks of rows overlap this host's rows (the shards it must read)."""
  if num_shards < 1 or batch_size % num_shards:
    raise ValueError(
      f"batch size {batch_size} does not split into {num_shards} data shards' blocks of rows"
    )
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} does not split over {process_count} hosts")
  rows, block = batch_size // process_count, batch_size // num_shards
  return range(process_index * rows // block, ((process_index + 1) * rows - 1) // block + 1)


@dataclasses.dataclass
class MixtureIterator:
  """Yields this host's rows of each global batch, as model Batches.

  Args:
    episodes: task -> its tokenized episodes (all from one source agent per task), or, with
      several data shards, shard index -> (task -> that shard's episodes) for at least the
      shards this host's rows draw from.
    weights: task -> sampling weight (normalised here).
    batch_size: the global batch size; this host makes batch_size / process_count rows.
    context: tokens per row.
    max_patches: patch slots per row.
    patch_dim: patch vector size.
    seed: the stream's seed.
    prompt: prompt conditioning settings (docs/design.md, Training: 25%, half from episode ends).
    process_index, process_count: this host's share of the rows.
    kinds: task -> "control" (episodes: windows and prompts; the default), "text" (documents
      packed into rows) or "vision_language" (5 image-text pairs a sequence).
    num_shards: data shards the episodes were split into (see the module docstring); it must
      divide batch_size. Hosts may share a shard (each then reads all of it).
    sources: task -> a fingerprint of its data (the derived store's); saved with the stream's
      state, so that a run resumed on changed data stops (`DataChangedError`).
  """

  episodes: Mapping[str, Sequence[TokenGroup]]
  weights: Mapping[str, float]
  batch_size: int
  context: int
  max_patches: int
  patch_dim: int
  seed: int = 0
  prompt: sequences.PromptConfig = dataclasses.field(default_factory=sequences.PromptConfig)
  process_index: int = 0
  process_count: int = 1
  kinds: Mapping[str, str] = dataclasses.field(default_factory=dict)
  num_shards: int = 1
  sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
  step: int = 0

  def __post_init__(self):
    # Also checks that the batch splits over the hosts and the data shards.
    self.host_shards = host_shards(
      self.batch_size, self.num_shards, self.process_index, self.process_count
    )
    self._shard_pools = self._pools_by_shard()
    for shard in self.host_shards:
      if shard not in self._shard_pools:
        raise ValueError(
          f"host {self.process_index} makes rows of data shard {shard} but was given"
          f" only shards {sorted(self._shard_pools)}"
        )
      pools = self._shard_pools[shard]
      unknown = sorted(set(self.weights) - set(pools))
      if unknown:
        raise ValueError(f"mixture names tasks without data: {unknown}; have {sorted(pools)}")
      empty = sorted(task for task in self.weights if not pools[task])
      if empty:
        where = f" in data shard {shard} of {self.num_shards}" if self.num_shards > 1 else ""
        raise ValueError(f"tasks with no episodes{where}: {empty}")
    bad_kinds = {t: k for t, k in self.kinds.items() if k not in KINDS}
    if bad_kinds:
      raise ValueError(f"unknown task kinds {bad_kinds}; kinds are {KINDS}")
    self.probabilities = normalize_weights(self.weights)
    self._tasks = list(self.probabilities)
    self._cumulative = np.cumsum([self.probabilities[t] for t in self._tasks])
    logging.info("mixture (realised sampling probabilities):\n%s", describe(self.probabilities))

  def _pools_by_shard(self) -> dict[int, Mapping[str, Sequence[TokenGroup]]]:
    if self.episodes and all(isinstance(key, int) for key in self.episodes):
      return dict(self.episodes)
    if self.num_shards != 1:
      raise ValueError(
        f"with {self.num_shards} data shards, episodes must map shard index -> (task -> episodes)"
      )
    return {0: self.episodes}

  @property
  def rows_per_host(self) -> int:
    return self.batch_size // self.process_count

  def shard_of_row(self, row: int) -> int:
    return row // (self.batch_size // self.num_shards)

  def _draw_task(self, rng: np.random.Generator) -> str:
    index = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
    return self._tasks[min(index, len(self._tasks) - 1)]

  def row_task(self, step: int, row: int) -> str:
    """The task of global row `row` of batch `step`, without building the row (any host can)."""
    return self._draw_task(np.random.default_rng([self.seed, step, row]))

  def sample_row(self, step: int, row: int) -> tuple[str, list[TokenGroup]]:
    """Global row `row` of batch `step` (its segments): a pure function of (seed, step, row)."""
    rng = np.random.default_rng([self.seed, step, row])
    task = self._draw_task(rng)
    pool = self._shard_pools[self.shard_of_row(row)][task]
    kind = self.kinds.get(task, "control")
    if kind == "text":
      return task, sequences.text_row(pool, self.context, rng, name=task)
    if kind == "vision_language":
      return task, [
        sequences.vision_language_sequence(
          pool, self.context, rng, max_patches=self.max_patches, name=task
        )
      ]
    index = int(rng.integers(len(pool)))
    prompt_episode = None
    if len(pool) > 1:
      other = int(rng.integers(len(pool) - 1))
      prompt_episode = pool[other + (other >= index)]  # Any episode but the sampled one.
    sequence = sequences.make_sequence(
      pool[index], self.context, rng, prompt_episode, self.prompt, name=task
    )
    return task, [sequence]

  def batch_at(self, step: int) -> tuple[Batch, list[str]]:
    """This host's rows of batch `step`, and the task of each row."""
    first = self.process_index * self.rows_per_host
    rows = [self.sample_row(step, first + r) for r in range(self.rows_per_host)]
    batch = packing.rows_batch(
      [groups for _, groups in rows], self.context, self.max_patches, self.patch_dim
    )
    return batch, [task for task, _ in rows]

  def host_batch(self, step: int) -> Batch:
    """This host's rows of batch `step` (a pure function of the step)."""
    return self.batch_at(step)[0]

  def stream(
    self, start: int, stop: int, threads: int = 0, processes: int = 0, prefetch: int = 4
  ) -> Iterator[Batch]:
    """`host_batch(step)` for steps [start, stop), in order, built ahead by Grain workers.

    Args:
      start, stop: the steps to yield.
      threads: Grain read threads (0 with no processes: built in the caller's thread).
      processes: Grain worker processes, each building whole batches (threads then apply
        inside each worker); they need a picklable iterator (stores reopen their files).
      prefetch: batches built ahead of the consumer (per worker process, with processes).
    """
    if threads <= 0 and processes <= 0:
      return (self.host_batch(step) for step in range(start, stop))
    import grain

    dataset = grain.MapDataset.range(start, stop).map(self.host_batch)
    if processes > 0:
      from absl import flags

      if not flags.FLAGS.is_parsed():  # Grain's workers read its flags (outside absl apps too).
        flags.FLAGS.mark_as_parsed()
      iterable = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=prefetch)
      )
      iterable = iterable.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=processes, per_worker_buffer_size=prefetch)
      )
    else:
      iterable = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)
      )
    return iter(iterable)

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    batch, _ = self.batch_at(self.step)
    self.step += 1
    return batch

  def get_state(self) -> dict:
    """What a checkpoint must hold to resume the stream exactly."""
    return {
      "step": self.step,
      "seed": self.seed,
      "tasks": self._tasks,
      "num_shards": self.num_shards,
      "sources": dict(self.sources),
    }

  def set_state(self, state: Mapping) -> None:
    if state.get("seed") != self.seed or list(state.get("tasks", [])) != self._tasks:
      raise ValueError(
        f"data state was saved for seed {state.get('seed')} and tasks {state.get('tasks')}, not"
        f" seed {self.seed} and tasks {self._tasks}: resuming would change the data stream"
      )
    saved_sources = state.get("sources") or {}
    changed = sorted(
      t for t in saved_sources if t in self.sources and saved_sources[t] != self.sources[t]
    )
    if changed:
      raise DataChangedError(
        f"the data of {', '.join(changed)} changed since this run saved its checkpoint (e.g."
        " regenerated with a retrained expert); resuming would train on other data: restore"
        " the data it began with, or start the run in a new workdir"
      )
    saved_shards = int(state.get("num_shards", 1))
    if saved_shards != self.num_shards:
      # Allowed (a job may come back on a slice of another size), but no longer the same stream.
      logging.warning(
        "data state was saved with %d data shards, resuming with %d: batches from"
        " here on differ from the uninterrupted run's (set data.num_shards=%d to"
        " keep them)",
        saved_shards,
        self.num_shards,
        saved_shards,
      )
    self.step = int(state["step"])
