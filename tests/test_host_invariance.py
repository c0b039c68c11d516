"""The default config gives the same global batches on 1, 2 and 4 hosts: each host's share is built
here in one process with its process_index / process_count, as `train.build_data` builds it on a
pod, and the shares put together must equal the one-host batch."""

import jax
import numpy as np
import pytest

from gato_jax import train
from gato_jax.data import mixture
from gato_jax.model import ModelConfig

from helpers.configs import smoke_config


@pytest.fixture(scope="module")
def config(data_dir):
  # Every episode: a shard's episode limit would differ per host.
  return smoke_config(data_dir, **{"data.max_episodes_per_task": 0})


def _global_batch(config, hosts: int, step: int):
  """Every host's rows of batch `step`, in host order, and the rows' tasks."""
  patch_dim = ModelConfig.from_dict(config.model).patch_dim
  shares = [
    train.build_data(config, patch_dim, process_index=i, process_count=hosts).batch_at(step)
    for i in range(hosts)
  ]
  batch = jax.tree.map(lambda *xs: np.concatenate(xs), *[b for b, _ in shares])
  return batch, [task for _, tasks in shares for task in tasks]


def test_default_config_gives_the_same_global_batches_on_1_2_and_4_hosts(config):
  assert config.data.num_shards == 0 and mixture.data_shards(config.data.num_shards) == 1
  for step in (0, 7):
    one, one_tasks = _global_batch(config, 1, step)
    assert one.tokens.shape[0] == config.train.batch_size
    assert len(set(one_tasks)) == 2  # Both tasks drawn: the rows are not all alike.
    for hosts in (2, 4):
      many, many_tasks = _global_batch(config, hosts, step)
      assert many_tasks == one_tasks
      for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(one)):
        np.testing.assert_array_equal(a, b)
  # And the stream moves on: another step is another batch.
  assert not np.array_equal(_global_batch(config, 1, 0)[0].tokens, one.tokens)


def test_negative_num_shards_is_refused():
  with pytest.raises(ValueError, match="data.num_shards must be >= 0"):
    mixture.data_shards(-1)
