"""Derived storage for training: tokenized episodes on disk, one window readable at a time.

RLDS/TFDS stays the format of record; training reads this derived form, built once per task
from the task's SeqIO examples (`build`, or on demand by `ensure`). A task's store is a folder

  <derived_dir>/<task>/records.array_record  one record per chunk of whole timesteps
  <derived_dir>/<task>/index.npz             tokens and patches per timestep, chunks per item
  <derived_dir>/<task>/meta.json             written last: its presence marks a complete build

Records hold token fields as int32 and image patches as their uint8 pixels (4x smaller than the
float32 vectors). Windows read from a store keep the uint8 pixels as their `patches` (4x less to
copy while a row is cut and packed); `model.inputs.batch_from_token_groups` normalises them
into the batch (`images.normalize_pixels`, bit-exact with the tokenizer). The index is small (a few integers per timestep), so a sampler chooses an item
and a window from the index alone and reads only the chunks that window covers: memory does not
grow with the data set. An "item" is an episode of a control task, a document of a text task or
an (image, text) example of a vision-language task.

A build writes into a temporary folder and renames it, so an interrupted build leaves nothing
half-written in place, and rebuilding a task after a crash (or `--rebuild`) starts it afresh.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from typing import Iterable, Iterator

import numpy as np

from gato_jax import files
from gato_jax.tokenizer import images
from gato_jax.tokenizer.constants import TokenKind
from gato_jax.tokenizer.timestep import TokenGroup

FORMAT_VERSION = 2
RECORDS, INDEX, META = "records.array_record", "index.npz", "meta.json"
# A chunk holds whole timesteps of about this many bytes (at least one step): a 1024-token window
# is then one or two records of state tokens, or three to five of 80x80 frames.
CHUNK_BYTES = 256 * 1024
_HEADER = 5  # int64 header: tokens, patches, patch_dim, pixels (1: uint8, 0: float32), steps.
_INT_FIELDS = ("tokens", "kinds", "local_positions", "loss_mask")


class StoreError(RuntimeError):
  """A derived file is missing, stale or corrupt; the message names the task and the file."""


def _error(task: str, path: str, problem: str) -> StoreError:
  return StoreError(
    f"task {task}: derived file {path} {problem}; rebuild it with"
    f" `python tools/build_store.py --tasks={task} --rebuild` (training rebuilds"
    " missing or stale stores itself)"
  )


def fingerprint(*parts) -> str:
  """What a store was built from (source files, filter); a different value marks it stale."""
  return hashlib.sha256(
    json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str).encode()
  ).hexdigest()[:16]


def _encode(group: TokenGroup, steps: int) -> bytes:
  """A chunk of whole timesteps -> one record."""
  n, p = group.num_tokens, group.patches.shape[0]
  patch_dim = group.patches.shape[1] if p else 0
  pixels = images.patches_to_pixels(group.patches) if p else np.zeros((0, 0), np.uint8)
  header = np.array([n, p, patch_dim, pixels is not None, steps], np.int64)
  ints = np.stack([np.asarray(getattr(group, f)).astype(np.int32) for f in _INT_FIELDS])
  patch_bytes = (pixels if pixels is not None else np.asarray(group.patches, np.float32)).tobytes()
  positions = np.concatenate(
    [
      np.asarray(group.patch_rows, np.float32).reshape(p, 2),
      np.asarray(group.patch_cols, np.float32).reshape(p, 2),
    ],
    axis=1,
  )
  return header.tobytes() + ints.tobytes() + positions.tobytes() + patch_bytes


def _decode(record: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One record -> (int32 [4, tokens] token fields, float32 [patches, 4] rows and columns,
  [patches, patch_dim] uint8 pixels or float32 vectors)."""
  header = np.frombuffer(record, np.int64, _HEADER)
  n, p, patch_dim, is_pixels, _ = (int(v) for v in header)
  at = _HEADER * 8
  ints = np.frombuffer(record, np.int32, 4 * n, at).reshape(4, n)
  at += 16 * n
  positions = np.frombuffer(record, np.float32, 4 * p, at).reshape(p, 4)
  at += 16 * p
  if is_pixels:  # Normalised when the batch is assembled (model.inputs.batch_from_token_groups).
    patches = np.frombuffer(record, np.uint8, p * patch_dim, at).reshape(p, patch_dim)
  else:
    patches = np.frombuffer(record, np.float32, p * patch_dim, at).reshape(p, patch_dim)
  return ints, positions, patches


def _step_counts(group: TokenGroup) -> tuple[np.ndarray, np.ndarray]:
  """Tokens and patches of each timestep of an item."""
  timesteps = np.asarray(group.timesteps)
  num = int(timesteps.max()) + 1 if timesteps.size else 0
  tokens = np.bincount(timesteps, minlength=num)
  is_patch = np.asarray(group.kinds) == TokenKind.IMAGE_PATCH
  return tokens, np.bincount(timesteps, weights=is_patch, minlength=num).astype(np.int64)


# How a user with data on a bucket gets stores: they are read with local file calls too.
LOCAL_STORES_FIX = (
  "build the stores locally with tools/build_store.py, then copy them to a local disk of every"
  " host and set data.derived_dir there"
)


def build(
  task: str,
  items: Iterable[TokenGroup],
  directory: str,
  source_fingerprint: str,
  chunk_bytes: int = CHUNK_BYTES,
  repair: bool = True,
) -> "TaskStore":
  """Writes a task's store at `directory` from its tokenized items.

  A store already there is replaced, unless `repair` is False and it is complete with the same
  fingerprint (built meanwhile by another process sharing the disk, which may be reading it).
  """
  from array_record.python import array_record_module

  # ArrayRecord writes through local file calls, and a store is completed by a folder rename.
  directory = files.local_only(directory, "a derived store", LOCAL_STORES_FIX)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  partial = f"{directory}.partial-{uuid.uuid4().hex[:8]}"
  os.makedirs(partial)
  try:
    writer = array_record_module.ArrayRecordWriter(os.path.join(partial, RECORDS), "group_size:1")
    item_chunks, chunk_steps, step_tokens, step_patches = [0], [0], [], []
    for group in items:
      tokens, patches = _step_counts(group)
      if tokens.size == 0:
        raise ValueError(f"task {task}: item {len(item_chunks) - 1} has no tokens")
      offsets = np.concatenate([[0], np.cumsum(tokens)])
      patch_offsets = np.concatenate([[0], np.cumsum(patches)])
      patch_dim = group.patches.shape[1] if group.patches.shape[0] else 0
      # Stored bytes of each timestep: 4 int32 fields a token, pixels and positions a patch.
      byte_offsets = np.concatenate([[0], np.cumsum(16 * tokens + (patch_dim + 16) * patches)])
      start = 0
      while start < tokens.size:
        # Whole timesteps up to chunk_bytes (one at least).
        stop = max(
          start + 1,
          int(np.searchsorted(byte_offsets, byte_offsets[start] + chunk_bytes, side="right")) - 1,
        )
        lo, hi, p_lo, p_hi = (
          offsets[start],
          offsets[stop],
          patch_offsets[start],
          patch_offsets[stop],
        )
        chunk = TokenGroup(
          tokens=np.asarray(group.tokens)[lo:hi],
          kinds=np.asarray(group.kinds)[lo:hi],
          local_positions=np.asarray(group.local_positions)[lo:hi],
          loss_mask=np.asarray(group.loss_mask)[lo:hi],
          timesteps=None,
          patches=np.asarray(group.patches)[p_lo:p_hi],
          patch_rows=np.asarray(group.patch_rows)[p_lo:p_hi],
          patch_cols=np.asarray(group.patch_cols)[p_lo:p_hi],
        )
        writer.write(_encode(chunk, stop - start))
        chunk_steps.append(chunk_steps[-1] + stop - start)
        start = stop
      item_chunks.append(len(chunk_steps) - 1)
      step_tokens.append(tokens)
      step_patches.append(patches)
    writer.close()
    if len(item_chunks) == 1:
      raise ValueError(f"task {task} has no items (episodes or examples) to store")
    step_tokens = np.concatenate(step_tokens).astype(np.int32)
    np.savez(
      os.path.join(partial, INDEX),
      item_chunks=np.asarray(item_chunks, np.int64),
      chunk_steps=np.asarray(chunk_steps, np.int64),
      step_tokens=step_tokens,
      step_patches=np.concatenate(step_patches).astype(np.int32),
    )
    meta = {
      "task": task,
      "format": FORMAT_VERSION,
      "fingerprint": source_fingerprint,
      "items": len(item_chunks) - 1,
      "chunks": len(chunk_steps) - 1,
      "tokens": int(step_tokens.sum()),
      "bytes": {name: os.path.getsize(os.path.join(partial, name)) for name in (RECORDS, INDEX)},
    }
    with open(os.path.join(partial, META), "w") as f:
      json.dump(meta, f, indent=1)
    existing = read_meta(directory)
    if not repair and existing is not None and existing.get("fingerprint") == source_fingerprint:
      # Another process (a host sharing the disk) built the same store meanwhile: keep theirs,
      # which it may be reading already.
      shutil.rmtree(partial, ignore_errors=True)
    else:
      if os.path.isdir(directory):
        shutil.rmtree(directory)
      try:
        os.rename(partial, directory)
      except OSError:  # Renamed into place by another process between the two lines above.
        shutil.rmtree(partial, ignore_errors=True)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return TaskStore(directory, task)


def read_meta(directory: str) -> dict | None:
  """A store's meta.json, or None if the store was never completed."""
  try:
    with open(os.path.join(directory, META)) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


class TaskStore:
  """Random access to one task's stored items: the index in memory, records read on demand.

  Picklable (the file reader reopens in each process), so worker processes can share it.
  """

  def __init__(self, directory: str, task: str):
    self.directory, self.task = directory, task
    meta_path = os.path.join(directory, META)
    try:
      with open(meta_path) as f:
        self.meta = json.load(f)
    except FileNotFoundError:
      raise _error(
        task, meta_path, "is missing (the store was never built, or its build did not finish)"
      ) from None
    except json.JSONDecodeError as e:
      raise _error(task, meta_path, f"is corrupt ({e})") from None
    for name, size in self.meta["bytes"].items():
      path = os.path.join(directory, name)
      if not os.path.isfile(path):
        raise _error(task, path, "is missing")
      if os.path.getsize(path) != size:
        raise _error(task, path, f"has {os.path.getsize(path)} bytes, not the {size} written")
    index_path = os.path.join(directory, INDEX)
    try:
      with np.load(index_path) as index:
        self._item_chunks = index["item_chunks"]
        self._chunk_steps = index["chunk_steps"]
        self._step_tokens = index["step_tokens"]
        self._step_patches = index["step_patches"]
    except Exception as e:  # A damaged zip or array.
      raise _error(task, index_path, f"is corrupt ({type(e).__name__}: {e})") from None
    self._reader = None

  @property
  def records_path(self) -> str:
    return os.path.join(self.directory, RECORDS)

  def __getstate__(self):
    return {**self.__dict__, "_reader": None}

  def _records(self, start: int, stop: int) -> list[bytes]:
    try:
      if self._reader is None:
        from array_record.python import array_record_module

        self._reader = array_record_module.ArrayRecordReader(
          self.records_path, "readahead_buffer_size:0"
        )
        if self._reader.num_records() != self.meta["chunks"]:
          raise ValueError(f"holds {self._reader.num_records()} records, not {self.meta['chunks']}")
      return self._reader.read(start, stop)
    except Exception as e:
      self._reader = None
      raise _error(
        self.task, self.records_path, f"cannot be read ({type(e).__name__}: {e})"
      ) from None

  def __len__(self) -> int:
    return len(self._item_chunks) - 1

  def _steps(self, item: int) -> tuple[int, int]:
    chunks = self._item_chunks
    return int(self._chunk_steps[chunks[item]]), int(self._chunk_steps[chunks[item + 1]])

  def step_tokens(self, item: int) -> np.ndarray:
    lo, hi = self._steps(item)
    return self._step_tokens[lo:hi]

  def max_patch_fraction(self) -> float:
    """The largest share of patches among a timestep's tokens (a row's patch budget per token)."""
    return float(np.max(self._step_patches / np.maximum(self._step_tokens, 1)))

  def max_item_patches(self) -> int:
    """The most patches of any one item (a vision-language example's image)."""
    per_item = np.add.reduceat(self._step_patches, self._chunk_steps[self._item_chunks[:-1]])
    return int(per_item.max())

  def read(
    self, item: int, start: int = 0, stop: int | None = None, pixels: bool = True
  ) -> TokenGroup:
    """Timesteps [start, stop) of an item (default: all), renumbered from 0.

    Reads only the chunks those timesteps lie in. Patches stored as pixels come back as uint8
    pixels (see the module docstring), or normalised float32 vectors with `pixels=False` (for
    joining tokens made elsewhere, as evaluation prompts do).
    """
    first, last = self._steps(item)
    stop = last - first if stop is None else stop
    if not 0 <= start < stop <= last - first:
      raise ValueError(
        f"task {self.task}: item {item} has {last - first} timesteps; cannot read [{start}, {stop})"
      )
    c_lo, c_hi = int(self._item_chunks[item]), int(self._item_chunks[item + 1])
    steps = self._chunk_steps[c_lo : c_hi + 1] - first
    lo = int(np.searchsorted(steps, start, side="right")) - 1
    hi = int(np.searchsorted(steps, stop, side="left"))
    decoded = [_decode(r) for r in self._records(c_lo + lo, c_lo + hi)]
    join = lambda arrays, axis=0: arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis)
    ints = join([d[0] for d in decoded], 1)
    positions = join([d[1] for d in decoded])
    patches = join([d[2] for d in decoded]) if any(d[2].size for d in decoded) else decoded[0][2]
    # Cut the wanted timesteps [a, b) out of the chunks', which start at timestep `base`.
    base, a, b = first + int(steps[lo]), first + start, first + stop
    t0 = int(self._step_tokens[base:a].sum())
    t1 = t0 + int(self._step_tokens[a:b].sum())
    p0 = int(self._step_patches[base:a].sum())
    p1 = p0 + int(self._step_patches[a:b].sum())
    ints, positions, patches = ints[:, t0:t1], positions[p0:p1], patches[p0:p1]
    if not pixels and patches.dtype == np.uint8:
      patches = images.normalize_pixels(patches)
    return TokenGroup(
      tokens=ints[0],
      kinds=ints[1],
      local_positions=ints[2],
      loss_mask=ints[3].astype(bool),
      timesteps=np.repeat(np.arange(b - a, dtype=np.int32), self._step_tokens[a:b]),
      patches=patches,
      patch_rows=positions[:, :2],
      patch_cols=positions[:, 2:],
    )


@dataclasses.dataclass(frozen=True)
class StoredEpisode:
  """An item of a store, read lazily: what the sequence builders need of an episode."""

  store: TaskStore
  item: int

  @property
  def step_tokens(self) -> np.ndarray:
    return self.store.step_tokens(self.item)

  @property
  def num_tokens(self) -> int:
    return int(self.step_tokens.sum())

  def read(self, start: int = 0, stop: int | None = None) -> TokenGroup:
    return self.store.read(self.item, start, stop)


@dataclasses.dataclass(frozen=True)
class Pool:
  """The items of a store that one data shard samples from, as a sequence of StoredEpisodes."""

  store: TaskStore
  items: np.ndarray

  @classmethod
  def shard(cls, store: TaskStore, index: int = 0, count: int = 1):
    """Items index, index + count, ..."""
    if not 0 <= index < count:
      raise ValueError(f"shard index {index} is outside [0, {count}) for task {store.task}")
    return cls(store, np.arange(index, len(store), count))

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, k: int) -> StoredEpisode:
    return StoredEpisode(self.store, int(self.items[k]))

  def __iter__(self) -> Iterator[StoredEpisode]:
    return (self[k] for k in range(len(self)))
