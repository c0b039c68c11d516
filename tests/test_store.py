"""Derived storage: windows equal the tokenized episodes', samplers give the same batches from disk
as from memory, and damaged files name the task and the file until a rebuild repairs them."""

import os

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import mixture, pipeline, rlds_io, sequences, store, tasks
from gato_jax.sources import generation
from gato_jax.envs import registry
from gato_jax.tokenizer import images

FIELDS = (
  "tokens",
  "kinds",
  "local_positions",
  "loss_mask",
  "timesteps",
  "patches",
  "patch_rows",
  "patch_cols",
)


def _assert_groups_equal(stored, expected):
  """A group read from a store (images as uint8 pixels) equals the tokenized one."""
  if stored.patches.size:
    assert stored.patches.dtype == np.uint8
    stored = stored.replace(patches=images.normalize_pixels(stored.patches))
  for field in FIELDS:
    np.testing.assert_array_equal(getattr(stored, field), getattr(expected, field), err_msg=field)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("store_data"))
  generation.generate_task(
    "babyai/GoToRedBall",
    path,
    num_episodes=4,
    stats_episodes=4,
    shard_episodes=4,
    progress=lambda line: None,
  )
  return path


def _register(data_dir, name="test.store_babyai"):
  env = registry.make_env("babyai/GoToRedBall")
  source = rlds_io.dataset_dir(
    data_dir, generation.dataset_name("babyai", "expert"), rlds_io.config_name("babyai/GoToRedBall")
  )
  tasks.register_control_task(
    name, source, env.observation_spec, env.action_spec, data_dir=data_dir, stats_task=None
  )
  return name


def _image_episode(seed, steps=7):
  rng = np.random.default_rng(seed)
  spec = {"image": T.ImageSpec(), "proprio": T.ContinuousSpec((2,))}
  observations = {
    "image": rng.integers(0, 256, (steps, 32, 48, 3), dtype=np.uint8),
    "proprio": rng.standard_normal((steps, 2)).astype(np.float32),
  }
  return T.tokenize_episode(
    observations, rng.integers(0, 4, steps).astype(np.int32), spec, T.DiscreteSpec((), num_values=4)
  )


def test_windows_read_from_the_store_equal_the_tokenized_episode(tmp_path):
  episodes = [_image_episode(seed) for seed in range(3)]
  # Timesteps of 10 tokens and 6 patches (4,864 stored bytes): two a chunk, so windows cross
  # chunk boundaries.
  built = store.build("test.images", episodes, str(tmp_path / "s"), "fp", chunk_bytes=10_000)
  assert len(built) == 3 and built.meta["chunks"] > 3
  assert built.max_item_patches() == 7 * 6 and built.max_patch_fraction() == 6 / 10
  for item, episode in enumerate(episodes):
    _assert_groups_equal(built.read(item), episode)
    num_steps = len(sequences.timestep_offsets(episode)) - 1
    for start, stop in [(0, 1), (2, 5), (3, num_steps), (num_steps - 1, num_steps)]:
      _assert_groups_equal(
        built.read(item, start, stop), sequences.slice_timesteps(episode, start, stop)
      )
    np.testing.assert_array_equal(
      built.step_tokens(item), np.diff(sequences.timestep_offsets(episode))
    )
  # Images are kept as uint8 pixels (a quarter of the float32 patches, plus 64 KiB blocks).
  patch_bytes = sum(e.patches.nbytes for e in episodes)
  assert built.meta["bytes"][store.RECORDS] < 0.6 * patch_bytes
  with pytest.raises(ValueError, match="item 0 has 7 timesteps; cannot read"):
    built.read(0, 3, 9)


def test_stored_pools_give_the_in_memory_batches(tmp_path):
  episodes = {
    task: [_image_episode(10 * k + i, steps=5 + i) for i in range(4)]
    for k, task in enumerate(("a", "b"))
  }
  stored = {
    task: store.Pool.shard(store.build(task, eps, str(tmp_path / task), "fp", 12_000))
    for task, eps in episodes.items()
  }
  args = dict(
    weights={"a": 2, "b": 1},
    batch_size=4,
    context=60,
    max_patches=60,
    patch_dim=768,
    seed=3,
    prompt=sequences.PromptConfig(probability=0.5, max_tokens=30),
  )
  memory = mixture.MixtureIterator(episodes, **args)
  disk = mixture.MixtureIterator(stored, **args)
  for step in range(6):
    a, b = memory.host_batch(step), disk.host_batch(step)
    for field in ("tokens", "kinds", "loss_mask", "segment_ids", "patches", "patch_rows"):
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
  # Grain workers build the same batches, in order.
  streamed = list(disk.stream(2, 6, threads=2))
  # And so do worker processes (the iterator is pickled into them; the stores reopen there).
  processed = list(disk.stream(2, 6, threads=1, processes=2))
  assert len(streamed) == len(processed) == 4
  for step, batch, other in zip(range(2, 6), streamed, processed):
    np.testing.assert_array_equal(batch.tokens, memory.host_batch(step).tokens)
    for field in ("tokens", "loss_mask", "patches", "patch_rows", "patch_cols"):
      np.testing.assert_array_equal(getattr(other, field), getattr(batch, field), err_msg=field)
  # Shards split a store's items like the episodes' lists.
  shard = store.Pool.shard(stored["a"].store, 1, 2)
  assert [e.item for e in shard] == [1, 3]


def test_task_store_is_built_once_and_checked(data_dir, tmp_path):
  name = _register(data_dir)
  derived = str(tmp_path / "derived")
  built = pipeline.open_store(name, derived)
  directory = pipeline.store_dir(derived, name)
  assert directory == os.path.join(derived, name, "train")
  expected = tasks.load_token_groups(name)
  assert len(built) == len(expected) == 4
  for item, group in enumerate(expected):
    _assert_groups_equal(built.read(item), group)
  mtime = os.path.getmtime(os.path.join(directory, store.META))
  assert (
    os.path.getmtime(os.path.join(pipeline.open_store(name, derived).directory, store.META))
    == mtime
  )  # Reused, not rebuilt.

  records = os.path.join(directory, store.RECORDS)
  with open(records, "r+b") as f:  # Truncated by a failed copy.
    f.truncate(os.path.getsize(records) // 2)
  with pytest.raises(store.StoreError, match=f"task {name}: derived file {records} has"):
    pipeline.open_store(name, derived)
  index = os.path.join(directory, store.INDEX)
  with open(index, "r+b") as f:  # Same size, garbage inside.
    f.write(b"\0" * 64)
  os.remove(records)
  with pytest.raises(store.StoreError, match=f"task {name}: derived file {records} is missing"):
    pipeline.open_store(name, derived)
  repaired = pipeline.open_store(name, derived, rebuild=True)
  _assert_groups_equal(repaired.read(2), expected[2])

  with open(index, "r+b") as f:
    f.seek(40)
    f.write(b"\xff" * 64)
  with pytest.raises(store.StoreError, match=f"task {name}: derived file {index} is corrupt"):
    pipeline.open_store(name, derived)
  pipeline.open_store(name, derived, rebuild=True)
  # A store whose build did not finish (no meta.json) is rebuilt on first use.
  os.remove(os.path.join(directory, store.META))
  assert len(pipeline.open_store(name, derived)) == 4


def test_patch_budget_follows_the_context():
  fractions = {"atari": (25 / 27, 25), "state": (0.0, 0), "captions": (16 / 18, 16)}
  kinds = {"captions": "vision_language"}
  assert mixture.patch_budget(fractions, kinds, 1024) == 949
  assert mixture.patch_budget({"state": (0.0, 0)}, {}, 1024) == 0
  # Five (image, text) pairs of 16 patches at most.
  assert mixture.patch_budget({"captions": (16 / 18, 16)}, kinds, 1024) == 80
  assert mixture.patch_budget(fractions, kinds, 1024, max_patches=1000) == 1000
  with pytest.raises(
    ValueError,
    match="task atari needs up to 949 patch slots in a row of 1024"
    r" tokens, but train.max_patches=256; set",
  ):
    mixture.patch_budget(fractions, kinds, 1024, max_patches=256)
