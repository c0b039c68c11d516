r"""Generates expert (or random-policy) episodes of a domain's tasks as local TFDS datasets.

  python tools/generate_data.py --domain=babyai --tasks=GoToRedBall,BossLevel --episodes=1000
  python tools/generate_data.py --domain=dm_control --tasks=all --episodes=50 --policy=random
  python tools/generate_data.py --domain=atari --tasks=Pong --episodes=5 --policy=random  # no expert
  python tools/generate_data.py --domain=dm_control --tasks=cartpole-balance --action_noise=0.3
  python tools/generate_data.py --domain=metaworld --episodes=20     # the metaworld extra (README)
  python tools/generate_data.py --domain=text                      # CPython documentation
  python tools/generate_data.py --domain=vision_language --episodes=20000   # scenes per task

Each task becomes the TFDS dataset gato_<domain>[_random|_noise<value>]/<task config> under
--data_dir (--action_noise: noisy demonstrations, gato_jax/envs/noise.py), with
its statistics (expert and random mean returns over --stats_episodes each) in
<data_dir>/gato_meta/stats/. Runs are resumable (rerun the same command after a kill; finished
shards are kept) and deterministic given --seed. The example domains `text` and
`vision_language` (gato_jax.sources.example_sets) store train and validation splits of examples
instead of episodes: --episodes counts training scenes (text stores its whole corpus), and
--shard_episodes items per shard. Data never goes into git: the default
--data_dir is outside the repository.
"""

import os

from absl import app, flags

from gato_jax import launch
from gato_jax.sources import example_sets, generation
from gato_jax.envs import registry

_DOMAIN = flags.DEFINE_string(
  "domain",
  None,
  "Domain: a registered control domain (babyai, dm_control, ...), text or vision_language.",
)
_TASKS = flags.DEFINE_list(
  "tasks", ["all"], "Task names within the domain (e.g. GoToRedBall), or 'all'."
)
_EPISODES = flags.DEFINE_integer(
  "episodes", 100, "Episodes to store per task (vision_language: training scenes)."
)
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "TFDS data directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Base seed; episode seeds derive from (seed, task, index).")
_POLICY = flags.DEFINE_enum("policy", "expert", generation.POLICIES, "Which policy makes the data.")
_SHARD_EPISODES = flags.DEFINE_integer("shard_episodes", 100, "Episodes per resumable shard.")
_STATS_EPISODES = flags.DEFINE_integer(
  "stats_episodes", 50, "Episodes per policy for the task statistics."
)
_ACTION_NOISE = flags.DEFINE_float(
  "action_noise",
  0.0,
  "Expert data only: execute each action with this noise (continuous values: Gaussian std;"
  " discrete: probability of a random value) while storing the expert's own, into"
  " gato_<domain>_noise<value> (a run reads it with --config.data.action_noise).",
)
flags.mark_flag_as_required("domain")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # State observations need no renderer; without this dm_control probes for a display. (Pixel
  # tasks render in a child process of their own, with EGL.)
  os.environ.setdefault("MUJOCO_GL", "disable")
  examples = _DOMAIN.value in example_sets.domains()
  if not examples and _DOMAIN.value not in registry.domains():
    raise app.UsageError(
      f"unknown domain {_DOMAIN.value!r}; control domains:"
      f" {registry.domains()}, example domains: {example_sets.domains()}"
    )
  if examples and (_POLICY.value != "expert" or _ACTION_NOISE.value):
    raise app.UsageError(
      f"--policy and --action_noise apply to control domains, not {_DOMAIN.value}"
    )
  known = (example_sets if examples else registry).list_tasks(_DOMAIN.value)
  if _TASKS.value == ["all"]:
    tasks = known
  else:
    tasks = [f"{_DOMAIN.value}/{t}" for t in _TASKS.value]
    unknown = [t for t in tasks if t not in known]
    if unknown:
      raise app.UsageError(f"unknown {_DOMAIN.value} tasks {unknown}; known: {known}")
  rows = []
  for task in tasks:
    if examples:
      rows.append(
        example_sets.generate_task(
          task,
          _DATA_DIR.value,
          _EPISODES.value,
          seed=_SEED.value,
          shard_items=_SHARD_EPISODES.value,
        )
      )
      print(
        f"\n{task}: {rows[-1].status}, {rows[-1].episodes} items, {rows[-1].steps} examples"
        f" in {rows[-1].dataset_dir}",
        flush=True,
      )
      continue
    rows.append(
      generation.generate_task(
        task,
        _DATA_DIR.value,
        _EPISODES.value,
        seed=_SEED.value,
        policy=_POLICY.value,
        shard_episodes=_SHARD_EPISODES.value,
        stats_episodes=_STATS_EPISODES.value,
        action_noise=_ACTION_NOISE.value,
      )
    )
    print(
      f"\n{task}: {rows[-1].status}, {rows[-1].episodes} episodes in {rows[-1].dataset_dir}",
      flush=True,
    )
  generation.end_progress()
  print(generation.format_table(rows))


if __name__ == "__main__":
  launch.run(main)
