"""Atari (ale-py) adapter and the RL Unplugged Atari loader: specs, preprocessing, seeds, TFDS."""

import os

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.data import rlds_io
from gato_jax.sources import rl_unplugged
from gato_jax.envs import atari, policies, registry

SHORT = atari.AtariConfig(max_episode_steps=30)


@pytest.fixture(scope="module")
def pong():
  return atari.AtariEnv("Pong", SHORT)


def _assert_trees_equal(a, b, path="<root>"):
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), path
    for key in a:
      _assert_trees_equal(a[key], b[key], f"{path}/{key}")
  else:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a, b, err_msg=path)


def test_every_game_ships_its_rom_and_has_gato_specs():
  assert len(atari.TASKS) >= 6
  for game in atari.TASKS:
    assert os.path.isfile(atari.rom_path(game))
    env = registry.make_env(f"atari/{game}")
    assert env.observation_spec == {"image": T.ImageSpec()}
    assert env.action_spec == T.DiscreteSpec((), num_values=18)
    assert env.max_episode_steps == 27_000
  assert (
    atari.rom_id("SpaceInvaders") == "space_invaders" and atari.rom_id("MsPacman") == "ms_pacman"
  )


def test_random_episode_tokenizes_into_patches(pong):
  episode = E.rollout(pong, policies.RandomPolicy(pong), seed=0)
  steps = episode["steps"]
  frames = steps["observation"]["image"]
  assert frames.shape == (31, 80, 80, 3) and frames.dtype == np.uint8
  assert frames.max() > frames.min()  # A real picture, not a blank screen.
  # Cut by the time limit: not terminal, discount stays 1.
  assert not steps["is_terminal"].any() and steps["discount"].min() == 1.0
  assert episode["episode_metadata"]["success"] == E.SUCCESS_UNDEFINED
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, pong.observation_spec, pong.action_spec)
  assert group.num_tokens == 30 * (25 + 1 + 1)  # 5x5 patches, |, one action.
  assert group.patches.shape == (30 * 25, 16 * 16 * 3)
  decoded = T.detokenize_action(group.tokens[group.action_mask].reshape(30, 1), pong.action_spec)
  np.testing.assert_array_equal(decoded.reshape(-1), actions)


def test_seeds_fix_the_episode(pong):
  a, b = (E.rollout(pong, policies.RandomPolicy(pong), seed=5) for _ in range(2))
  c = E.rollout(pong, policies.RandomPolicy(pong), seed=6)
  _assert_trees_equal(a, b)
  assert not np.array_equal(a["steps"]["action"], c["steps"]["action"])


def test_step_repeats_the_action_and_max_pools_the_last_two_frames():
  from ale_py import ALEInterface

  env = atari.AtariEnv("Breakout", atari.AtariConfig(sticky_action_probability=0.0))
  reference = ALEInterface()
  reference.setFloat("repeat_action_probability", 0.0)
  reference.setInt("random_seed", 3)
  reference.loadROM(atari.rom_path("Breakout"))
  env.reset(3)
  resize = atari.FrameResizer(atari.SCREEN_SHAPE, (80, 80))
  for action in [1, 1, 3, 3, 4, 0, 1, 3]:  # FIRE launches the ball; RIGHT/LEFT move.
    result = env.step(np.int32(action))
    reward, screens = 0, []
    for _ in range(4):
      reward += reference.act(action)
      screens.append(reference.getScreenRGB())
    np.testing.assert_array_equal(
      result.observation["image"], resize(np.maximum(screens[-2], screens[-1]))
    )
    assert result.reward == reward


def test_game_over_is_terminal():
  env = atari.AtariEnv("Breakout")
  episode = E.rollout(env, policies.RandomPolicy(env), seed=0)
  steps = episode["steps"]
  assert E.num_actions(episode) < env.max_episode_steps
  assert steps["is_terminal"][-1] and steps["discount"][-2] == 0.0
  assert episode["episode_metadata"]["return"] == steps["reward"].sum()


def test_resizer_averages_areas():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
  halved = atari.FrameResizer((160, 160), (80, 40))(image)
  expected = np.rint(image.reshape(80, 2, 40, 4, 3).astype(np.float64).mean(axis=(1, 3)))
  np.testing.assert_array_equal(halved, expected.astype(np.uint8))
  # Non-integer factors (210x160 -> 80x80, 84 -> 80) keep flat images flat and work on batches.
  flat = np.full((2, 210, 160, 3), 77, np.uint8)
  np.testing.assert_array_equal(atari.FrameResizer((210, 160), (80, 80))(flat), 77)
  batch = rng.integers(0, 256, (3, 84, 84, 1), dtype=np.uint8)
  resize = atari.FrameResizer((84, 84), (80, 80))
  np.testing.assert_array_equal(resize(batch)[1], resize(batch[1]))


def test_generated_episodes_round_trip_through_tfds(tmp_path, pong):
  written = [E.rollout(pong, policies.RandomPolicy(pong), seed=s) for s in range(2)]
  path = rlds_io.write_episodes(written, str(tmp_path), "gato_atari_random", "pong")
  for original, read in zip(written, rlds_io.read_episodes(path), strict=True):
    _assert_trees_equal(original, read)


def _rlu_episode(length, checkpoint, episode_id, num_actions):
  """An episode laid out as TFDS rlu_atari stores it (atari_utils.atari_example_to_rlds)."""
  rng = np.random.default_rng(episode_id)
  return {
    "steps": {
      "observation": rng.integers(0, 256, (length, 84, 84, 1), dtype=np.uint8),
      "action": rng.integers(0, num_actions, length).astype(np.int64),
      "reward": rng.integers(-1, 2, length).astype(np.float32),
      "discount": np.append(np.ones(length - 1, np.float32), 0.0).astype(np.float32),
      "is_first": np.arange(length) == 0,
      "is_last": np.arange(length) == length - 1,
      "is_terminal": np.arange(length) == length - 1,
    },
    "checkpoint_id": np.int64(checkpoint),
    "episode_id": np.int64(episode_id),
    "episode_return": np.float32(episode_id * 10.0),
  }


def _write_rlu_atari(data_dir, game, run, episodes):
  """A local dataset with the public rlu_atari features, where tfds.builder finds it by name."""
  rlds_io.import_tfds()  # (TensorFlow via tf_compat first)
  import tensorflow_datasets as tfds
  from tensorflow_datasets.rl_unplugged import atari_utils

  tfds.dataset_builders.store_as_tfds_dataset(
    name="rlu_atari",
    version="1.3.0",
    features=atari_utils.features_dict(),
    split_datasets={"train": list(enumerate(episodes))},
    config=f"{game}_run_{run}",
    data_dir=str(data_dir),
    disable_shuffling=True,
  )


def test_rl_unplugged_episodes_convert_to_our_layout(tmp_path):
  public = [_rlu_episode(5, 10, 1, 4), _rlu_episode(7, 45, 2, 4), _rlu_episode(4, 50, 3, 4)]
  _write_rlu_atari(tmp_path / "rlu", "Breakout", 2, public)
  read = list(
    rl_unplugged.read_atari_episodes(
      "Breakout", run=2, data_dir=str(tmp_path / "rlu"), min_checkpoint=40
    )
  )
  assert [int(ep["episode_metadata"]["episode_id"]) for ep in read] == [2, 3]
  episode, source = read[0], public[1]
  steps = episode["steps"]
  assert steps["observation"]["image"].shape == (7, 80, 80, 3)
  grey = atari.FrameResizer((84, 84), (80, 80))(source["steps"]["observation"])
  np.testing.assert_array_equal(steps["observation"]["image"], np.repeat(grey, 3, axis=-1))
  # Breakout's minimal set is NOOP, FIRE, RIGHT, LEFT = full-set ids 0, 1, 3, 4.
  np.testing.assert_array_equal(steps["action"], np.array([0, 1, 3, 4])[source["steps"]["action"]])
  for key in ("reward", "discount", "is_first", "is_last", "is_terminal"):
    np.testing.assert_array_equal(steps[key], source["steps"][key])
  assert episode["episode_metadata"]["task"] == "atari/Breakout"
  assert episode["episode_metadata"]["agent"] == "rlu_dqn_run_2"
  assert episode["episode_metadata"]["return"] == 20.0
  # The converted episodes tokenize with the adapter's specs.
  env = registry.make_env("atari/Breakout")
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, env.observation_spec, env.action_spec)
  assert group.num_tokens == 6 * 27


def test_rl_unplugged_import_stores_expert_data_and_statistics(tmp_path):
  public = [_rlu_episode(6, 50, i, 4) for i in (1, 2, 3)]
  _write_rlu_atari(tmp_path / "rlu", "Breakout", 1, public)
  data_dir = str(tmp_path / "gato")
  summary = rl_unplugged.import_atari(
    "Breakout", 1, data_dir, num_episodes=2, rlu_data_dir=str(tmp_path / "rlu"), stats_episodes=2
  )
  assert (summary.episodes, summary.steps, summary.tokens) == (2, 10, 10 * 27)
  stored = list(rlds_io.read_episodes("gato_atari/breakout", data_dir=data_dir))
  expected = list(rl_unplugged.read_atari_episodes("Breakout", 1, str(tmp_path / "rlu"), limit=2))
  for a, b in zip(stored, expected, strict=True):
    _assert_trees_equal(a, b)
  stats = E.load_stats(data_dir, "atari/Breakout")
  assert stats.expert_agent == "rlu_dqn_run_1" and stats.expert_return == 15.0
  assert stats.expert_episodes == 2 and stats.random_episodes == 2


def test_bad_inputs_give_clear_errors(tmp_path, pong):
  with pytest.raises(ValueError, match="unknown Atari game 'Pacman2'"):
    atari.AtariEnv("Pacman2")
  with pytest.raises(ValueError, match="multiples of 16"):
    atari.AtariEnv("Pong", atari.AtariConfig(frame_size=(84, 84)))
  with pytest.raises(ValueError, match="ships no ROM for Atari game 'NoSuchGame'"):
    atari.rom_path("NoSuchGame")
  with pytest.raises(RuntimeError, match="call reset"):
    atari.AtariEnv("Boxing").step(np.int32(0))
  pong.reset(0)
  with pytest.raises(ValueError, match=r"integer scalars in \[0, 18\)"):
    pong.step(np.int32(18))
  with pytest.raises(ValueError, match="integer scalars"):
    pong.step(np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="unknown atari task 'Tetris2'"):
    registry.make_env("atari/Tetris2")
  with pytest.raises(LookupError, match="no expert is registered for domain 'atari'"):
    registry.make_expert(pong)
  with pytest.raises(ValueError, match="rlu_atari has runs"):
    rl_unplugged.atari_source("Pong", 6)
  with pytest.raises(FileNotFoundError, match="rlu_atari/Pong_run_1"):
    next(rl_unplugged.read_atari_episodes("Pong", 1, data_dir=str(tmp_path)))
  _write_rlu_atari(tmp_path, "Pong", 3, [_rlu_episode(3, 50, 1, 9)])  # 9 actions: not Pong's 6.
  with pytest.raises(ValueError, match="minimal action set of 6 actions"):
    next(rl_unplugged.read_atari_episodes("Pong", 3, data_dir=str(tmp_path)))
