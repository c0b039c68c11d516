"""Mixture sampling: rates, determinism, resume, host shards, packing into model batches."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import mixture, packing, sequences

SPEC = {"proprio": T.ContinuousSpec((3,))}


def _episodes(task_seed, count=4, steps=20, action_offset=0):
  rng = np.random.default_rng(task_seed)
  return [
    T.tokenize_episode(
      {"proprio": rng.standard_normal((steps, 3)).astype(np.float32)},
      np.full(steps, action_offset, np.int32),
      SPEC,
      T.DiscreteSpec((), num_values=8),
    )
    for _ in range(count)
  ]


EPISODES = {
  "a": _episodes(0, action_offset=1),
  "b": _episodes(1, action_offset=2),
  "c": _episodes(2, action_offset=3),
}


def _iterator(**kwargs):
  args = dict(
    episodes=EPISODES,
    weights={"a": 3, "b": 1, "c": 0},
    batch_size=8,
    context=40,
    max_patches=0,
    patch_dim=768,
    seed=0,
  )
  return mixture.MixtureIterator(**{**args, **kwargs})


def test_weights_are_normalised_and_checked():
  assert mixture.normalize_weights({"b": 1, "a": 3}) == {"a": 0.75, "b": 0.25}
  with pytest.raises(ValueError, match="non-negative"):
    mixture.normalize_weights({"a": -1})
  with pytest.raises(ValueError, match="sum to 0"):
    mixture.normalize_weights({"a": 0})
  with pytest.raises(ValueError, match=r"without data: \['zzz'\]"):
    _iterator(weights={"zzz": 1})


def test_sampling_rates_match_weights():
  it = _iterator()
  counts = {"a": 0, "b": 0, "c": 0}
  n = 0
  for step in range(250):
    _, tasks = it.batch_at(step)
    for task in tasks:
      counts[task] += 1
      n += 1
  assert counts["c"] == 0
  assert abs(counts["a"] / n - 0.75) < 4 * np.sqrt(0.75 * 0.25 / n)


def test_batches_hold_the_sampled_tasks_sequences():
  it = _iterator()
  batch, tasks = it.batch_at(3)
  assert tasks == [it.row_task(3, row) for row in range(8)]
  assert batch.tokens.shape == (8, 40) and batch.patches.shape == (8, 0, 768)
  for row, task in enumerate(tasks):
    actions = batch.tokens[row][batch.loss_mask[row]] - 32000
    assert set(actions.tolist()) == {" abc".index(task)}  # Each task's constant action.


def test_deterministic_and_resumable():
  first = _iterator()
  uninterrupted = [next(first).tokens for _ in range(6)]
  resumed = _iterator()
  for _ in range(3):
    next(resumed)
  state = resumed.get_state()
  fresh = _iterator()
  fresh.set_state(state)
  for expected in uninterrupted[3:]:
    np.testing.assert_array_equal(next(fresh).tokens, expected)
  with pytest.raises(ValueError, match="would change the data stream"):
    _iterator(seed=1).set_state(state)
  # A run resumed on regenerated data stops, naming the task; unchanged data resumes.
  sources = {"a": "f1", "b": "f2"}
  saved = _iterator(sources=sources).get_state()
  _iterator(sources=sources).set_state(saved)
  with pytest.raises(mixture.DataChangedError, match="the data of b changed"):
    _iterator(sources={"a": "f1", "b": "f3"}).set_state(saved)


def test_hosts_split_the_global_batch():
  whole, _ = _iterator().batch_at(5)
  parts = [_iterator(process_index=i, process_count=2).batch_at(5)[0] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p.tokens for p in parts]), whole.tokens)
  with pytest.raises(ValueError, match="does not split over 3 hosts"):
    _iterator(process_count=3)


def test_data_shards_give_the_same_stream_on_any_host_count():
  shards = {k: {task: pool[k::2] for task, pool in EPISODES.items()} for k in range(2)}
  whole, tasks = _iterator(episodes=shards, num_shards=2).batch_at(5)
  assert _iterator(episodes=shards, num_shards=2).shard_of_row(3) == 0
  hosts = [
    _iterator(episodes={k: shards[k]}, num_shards=2, process_index=k, process_count=2)
    for k in range(2)
  ]
  parts = [host.batch_at(5) for host in hosts]
  np.testing.assert_array_equal(np.concatenate([p[0].tokens for p in parts]), whole.tokens)
  assert sum((p[1] for p in parts), []) == tasks
  assert hosts[1].host_shards == range(1, 2)
  with pytest.raises(ValueError, match="makes rows of data shard 1 but was given only shards"):
    _iterator(episodes={0: shards[0]}, num_shards=2, process_index=1, process_count=2)
  with pytest.raises(ValueError, match="does not split into 3 data shards"):
    _iterator(episodes=shards, num_shards=3, process_count=2)
  assert mixture.host_shards(8, 2, 3, 4) == range(1, 2)  # Two hosts share each shard.
  assert mixture.host_shards(8, 8, 1, 2) == range(4, 8)
  with pytest.raises(ValueError, match="must map shard index"):
    _iterator(num_shards=2)
  empty = {0: shards[0], 1: {**shards[1], "b": []}}
  with pytest.raises(ValueError, match=r"no episodes in data shard 1 of 2: \['b'\]"):
    _iterator(episodes=empty, num_shards=2)


def test_rows_draw_only_from_their_shard():
  marked = {
    k: {task: _episodes(10 + k, count=2, action_offset=4 + k) for task in "abc"} for k in range(2)
  }
  batch, _ = _iterator(episodes=marked, num_shards=2).batch_at(0)
  for row in range(8):
    actions = set((batch.tokens[row][batch.loss_mask[row]] - 32000).tolist())
    assert actions == {4 + row // 4}, (row, actions)


def test_packing_short_sequences():
  short = [
    sequences.slice_timesteps(EPISODES["a"][0], 0, n) for n in (1, 2, 3, 1)
  ]  # 5 tokens a step
  rows = packing.pack_rows(short, 20, 0)
  assert rows == [[0, 1, 3], [2]]
  batch = packing.packed_batch(short, 20, 0, 768, num_rows=3)
  np.testing.assert_array_equal(batch.segment_ids[0], [1] * 5 + [2] * 10 + [3] * 5)
  np.testing.assert_array_equal(batch.segment_ids[1], [1] * 15 + [0] * 5)
  assert not batch.segment_ids[2].any()
  with pytest.raises(ValueError, match="need 2 rows when packed, more than 1"):
    packing.packed_batch(short, 20, 0, 768, num_rows=1)
  with pytest.raises(ValueError, match="sequence 2 has 15 tokens"):
    packing.pack_rows(short, 10, 0)
