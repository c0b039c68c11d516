"""RL Unplugged Atari episodes (TFDS `rlu_atari`) as Gato Atari episodes: the Atari expert data.

No Atari expert can be trained here, so expert episodes come from RL Unplugged, whose Atari
datasets hold the replay of DQN agents trained with sticky actions (Agarwal et al., 2020) in
RLDS form (tensorflow_datasets/rl_unplugged/atari_utils.py):

  steps: observation uint8 [84, 84, 1] (grayscale), action int64 (an index into the game's
         minimal action set), reward f32 (unclipped), discount, is_first, is_last, is_terminal
  episode_return f32, episode_id i64, checkpoint_id i64 (the DQN checkpoint, 0..50, that acted)

Reading goes through rlds_io with a key map; then each episode is converted to what
gato_jax.envs.atari produces: frames resized to the adapter's 80x80 and repeated to 3 channels
(grey RGB), actions mapped to the full 18-action set. Early checkpoints play badly, so
`min_checkpoint` keeps only late ones; Gato's 80%-of-expert filter then applies as for any task.

Getting the public data (tens of GB per game and run) is the user's step, e.g.
  tfds build rlu_atari/Pong_run_1 --data_dir=/data/tfds
then `tools/import_rl_unplugged.py` stores the converted episodes as gato_atari/<game>.
"""

import dataclasses
import itertools
import os
import time
from typing import Iterator

import numpy as np

from gato_jax.sources import episodes as episodes_lib
from gato_jax.data import rlds_io

RUNS = (1, 2, 3, 4, 5)  # rlu_atari has five DQN runs per game, configs "<Game>_run_<n>".
RLU_FRAME_SHAPE = (84, 84)
# {our path: theirs}: what rlds_io renames; the pixel and action conversion follow.
ATARI_KEY_MAP = {
  "steps/observation/image": "steps/observation",
  "episode_metadata/return": "episode_return",
  "episode_metadata/episode_id": "episode_id",
  "episode_metadata/checkpoint_id": "checkpoint_id",
}


def agent_name(run: int) -> str:
  """The source agent recorded in metadata, e.g. "rlu_dqn_run_1"."""
  return f"rlu_dqn_run_{run}"


def atari_source(game: str, run: int) -> str:
  """The TFDS name of a game's run, e.g. "rlu_atari/Pong_run_1"."""
  if run not in RUNS:
    raise ValueError(f"rlu_atari has runs {RUNS}, got run={run!r}")
  return f"rlu_atari/{game}_run_{run}"


class AtariConverter:
  """Converts key-mapped rlu_atari episodes (numpy trees) of one game to our Atari layout."""

  def __init__(self, game: str, run: int, frame_size: tuple[int, int] | None = None):
    from gato_jax.envs import atari

    if game not in atari.TASKS:
      raise ValueError(f"unknown Atari game {game!r}; known games: {list(atari.TASKS)}")
    atari_source(game, run)  # Validates the run.
    self.task, self.agent = f"atari/{game}", agent_name(run)
    self._resize = atari.FrameResizer(RLU_FRAME_SHAPE, frame_size or atari.AtariConfig().frame_size)
    self._action_ids = atari.minimal_action_ids(game)

  def __call__(self, episode: dict) -> dict:
    steps = episode["steps"]
    frames = np.asarray(steps["observation"]["image"])
    if frames.dtype != np.uint8 or frames.shape[1:] != (*RLU_FRAME_SHAPE, 1):
      raise ValueError(
        f"{self.task}: rlu_atari frames are uint8 [T, 84, 84, 1], got {frames.dtype} {frames.shape}"
      )
    actions = np.asarray(steps["action"])
    if actions.size and (actions.min() < 0 or actions.max() >= len(self._action_ids)):
      raise ValueError(
        f"{self.task}: actions index the minimal action set of {len(self._action_ids)} actions,"
        f" got values in [{actions.min()}, {actions.max()}]; is this data of another game?"
      )
    metadata = episode["episode_metadata"]
    return {
      "steps": {
        # Grey frames as RGB: the model's image patches are 16x16x3 in every domain.
        "observation": {"image": np.repeat(self._resize(frames), 3, axis=-1)},
        "action": self._action_ids[actions],
        "reward": np.asarray(steps["reward"], np.float32),
        "discount": np.asarray(steps["discount"], np.float32),
        "is_first": np.asarray(steps["is_first"], bool),
        "is_last": np.asarray(steps["is_last"], bool),
        "is_terminal": np.asarray(steps["is_terminal"], bool),
      },
      "episode_metadata": {
        "task": self.task,
        "agent": self.agent,
        "return": np.float32(metadata["return"]),
        "success": np.int8(episodes_lib.SUCCESS_UNDEFINED),
        "episode_id": np.int64(metadata["episode_id"]),
        "checkpoint_id": np.int64(metadata["checkpoint_id"]),
      },
    }


def read_atari_episodes(
  game: str,
  run: int = 1,
  data_dir: str | None = None,
  source: str | None = None,
  min_checkpoint: int = 0,
  limit: int | None = None,
) -> Iterator[dict]:
  """Yields rlu_atari episodes of `game` converted to gato_jax.envs.atari's layout.

  Args:
    game: an Atari task of gato_jax.envs.atari, e.g. "Pong".
    run: which of the five DQN runs.
    data_dir: the TFDS data directory holding the prepared rlu_atari dataset.
    source: a dataset directory or name instead of "rlu_atari/<game>_run_<run>".
    min_checkpoint: skip episodes played by DQN checkpoints before this one.
    limit: stop after this many converted episodes.
  """
  if limit is not None and limit < 1:
    raise ValueError(f"limit must be positive, got {limit}")
  convert = AtariConverter(game, run)
  kept = 0
  for episode in rlds_io.read_episodes(
    source or atari_source(game, run), data_dir=data_dir, key_map=ATARI_KEY_MAP, task=convert.task
  ):
    if int(episode["episode_metadata"]["checkpoint_id"]) < min_checkpoint:
      continue
    yield convert(episode)
    kept += 1
    if limit is not None and kept >= limit:
      return


def import_atari(
  game: str,
  run: int,
  data_dir: str,
  num_episodes: int,
  rlu_data_dir: str | None = None,
  source: str | None = None,
  min_checkpoint: int = 0,
  stats_episodes: int = 50,
  seed: int = 0,
):
  """Stores converted rlu_atari episodes as the expert data of atari/<game>, with statistics.

  The episodes become TFDS dataset gato_atari/<game config> (where generate_data.py would put
  expert data), so SeqIO tasks and mixtures pick them up like any generated task. The task's
  statistics get the random policy's mean return (measured here if missing) and, as the expert
  return, the mean return of the imported episodes.

  Returns:
    A generation.TaskSummary row.
  """
  from gato_jax.sources import generation
  from gato_jax.envs import atari

  start = time.time()
  env = atari.make_env(game)
  name, config = generation.dataset_name("atari", "expert"), rlds_io.config_name(env.name)
  returns, steps, tokens = [], [], []

  def counted():
    # Streamed (an RL Unplugged episode can hold thousands of frames), counting on the way.
    for episode in read_atari_episodes(
      game, run, rlu_data_dir, source, min_checkpoint, limit=num_episodes
    ):
      returns.append(float(episode["episode_metadata"]["return"]))
      steps.append(episodes_lib.num_actions(episode))
      tokens.append(generation.count_tokens(episode, env))
      yield episode

  stream = counted()
  first = next(stream, None)
  if first is None:
    raise ValueError(
      f"no rlu_atari episodes of {game} run {run} from checkpoint"
      f" {min_checkpoint} on in {source or atari_source(game, run)}"
    )
  target = rlds_io.write_episodes(
    itertools.chain([first], stream),
    data_dir,
    name,
    config,
    description=f"RL Unplugged episodes of {env.name} ({agent_name(run)}, checkpoints >="
    f" {min_checkpoint}), converted by gato_jax.",
  )
  stats = generation.ensure_stats(env, data_dir, seed, stats_episodes)
  mean, std = float(np.mean(returns)), float(np.std(returns))
  stats = dataclasses.replace(
    stats,
    expert_agent=agent_name(run),
    expert_return=mean,
    expert_return_std=std,
    expert_episodes=len(returns),
    expert_success_rate=None,
  )
  episodes_lib.save_stats(stats, data_dir)
  return generation.TaskSummary(
    env.name,
    agent_name(run),
    len(returns),
    sum(steps),
    sum(tokens),
    mean,
    stats.random_return,
    time.time() - start,
    "imported",
    os.path.expanduser(target),
  )
