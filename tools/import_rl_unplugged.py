r"""Imports RL Unplugged Atari episodes as the expert data of Gato's Atari tasks.

  tfds build rlu_atari/Pong_run_1 --data_dir=/data/tfds      # the public data, once
  python tools/import_rl_unplugged.py --games=Pong --run=1 --rlu_data_dir=/data/tfds \
      --episodes=500 --min_checkpoint=40

Each game becomes TFDS dataset gato_atari/<game> under --data_dir (where SeqIO tasks and
mixtures look for expert data), converted to gato_jax.envs.atari's observations and actions
(gato_jax.sources.rl_unplugged); the task's statistics get the imported episodes' mean return as
the expert return and a uniformly random policy's (measured if missing) as the random one.
"""

from absl import app, flags

from gato_jax.sources import generation, rl_unplugged
from gato_jax.envs import atari

_GAMES = flags.DEFINE_list("games", None, f"Atari games, from {list(atari.TASKS)}.")
_RUN = flags.DEFINE_integer("run", 1, "Which DQN run of rlu_atari (1-5).")
_RLU_DATA_DIR = flags.DEFINE_string("rlu_data_dir", None, "TFDS data directory holding rlu_atari.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "Where gato_jax's datasets live.")
_EPISODES = flags.DEFINE_integer("episodes", 500, "Episodes to import per game.")
_MIN_CHECKPOINT = flags.DEFINE_integer(
  "min_checkpoint",
  40,
  "Skip episodes of DQN checkpoints before this one (0-50; early ones play badly).",
)
_STATS_EPISODES = flags.DEFINE_integer(
  "stats_episodes", 50, "Random-policy episodes for the statistics."
)
flags.mark_flag_as_required("games")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [g for g in _GAMES.value if g not in atari.TASKS]
  if unknown:
    raise app.UsageError(f"unknown Atari games {unknown}; known: {list(atari.TASKS)}")
  rows = [
    rl_unplugged.import_atari(
      game,
      _RUN.value,
      _DATA_DIR.value,
      _EPISODES.value,
      rlu_data_dir=_RLU_DATA_DIR.value,
      min_checkpoint=_MIN_CHECKPOINT.value,
      stats_episodes=_STATS_EPISODES.value,
    )
    for game in _GAMES.value
  ]
  generation.end_progress()
  print(generation.format_table(rows))


if __name__ == "__main__":
  app.run(main)
