"""RLDS-shaped episodes as numpy trees: playing them, and measuring a task's return statistics.

An episode is a dict in the RLDS layout (github.com/google-research/rlds), leaves stacked over
time:

  {"steps": {"observation": tree [T+1, ...], "action": tree [T+1, ...],
             "reward": f32 [T+1], "discount": f32 [T+1],
             "is_first": bool [T+1], "is_last": bool [T+1], "is_terminal": bool [T+1]},
   "episode_metadata": {"task": str, "agent": str, "return": f32, "success": i8, "seed": i64}}

As in RLDS, step t holds observation o_t, the action a_t taken there and the reward and discount
that followed it; the extra last step holds the final observation with a zero action, zero
reward and `is_last` (plus `is_terminal` when the MDP ended rather than a time limit).
`success` is 1/0 where the task defines success and -1 where it does not; an episode the
policy gave up on (policies.PolicyGaveUp) ends there, truncated, with success 0. The episode
runner (`envs.runner.run_episodes(..., record=True)`) makes these trees; `play` picks its
backend: a task whose environment steps a batch on device (gymnax: `env.batch(rows)`) plays up to
`BATCH_ROWS` episodes at once, with a pure-JAX policy (`policy.batch_agent()`, the PPO experts)
acting for every row in one jitted call; other tasks play one episode after another on the host.
An episode's outcome depends on its seed alone either way, not on the rows it shared. This module
has no TensorFlow; `gato_jax.data.rlds_io` stores and reads them as TFDS datasets, and
`gato_jax.data.stats` holds the statistics (re-exported here for the episode makers).
"""

import copy
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

from gato_jax.data.stats import (  # noqa: F401  (the episode makers' statistics, in one import)
  DEFAULT_FILTER_FRACTION,
  TaskStats,
  load_stats,
  return_threshold,
  save_stats,
  stats_path,
)
from gato_jax.envs import policies, runner

SUCCESS_UNDEFINED = runner.SUCCESS_UNDEFINED
# Seed streams: episodes stored as data, and the separate rollouts that measure the statistics.
DATA_STREAM, EXPERT_STATS_STREAM, RANDOM_STATS_STREAM = 0, 1, 2
# Episodes per policy behind a task's statistics (tools/generate_data.py --stats_episodes).
BASELINE_EPISODES = 50


def episode_seed(base_seed: int, task: str, index: int, stream: int = DATA_STREAM) -> int:
  """The reset seed of episode `index` of `task`: a function of these alone (resumable runs)."""
  entropy = [int(base_seed), zlib.crc32(task.encode()), int(stream), int(index)]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


# Episodes played at once where a task's environments step as one on-device batch (gymnax).
BATCH_ROWS = 64


def batch_rows(env) -> int:
  """Episodes `play` runs side by side in `env`'s task: `BATCH_ROWS` on device, else 1."""
  return BATCH_ROWS if hasattr(env, "batch") else 1


def play(env, policy, seeds: Sequence[int], record: bool = True) -> list[runner.EpisodeOutcome]:
  """One episode of `policy` per seed in `env`'s task -> outcomes in the order of `seeds`.

  A task whose environment offers `batch(rows)` (gymnax) steps up to `BATCH_ROWS` episodes in one
  jitted call; a policy offering `batch_agent()` (a PPO expert) then acts for every row in one
  call too, sampling its t-th action of an episode with fold_in(key(seed), t), while other
  policies act row by row, each row with a copy of `policy` reset to its episode's seed. Other
  tasks play `env` itself, one episode after another.

  Args:
    env: the task's environment.
    policy: a `policies.Policy` for `env`'s task.
    seeds: one reset seed per episode.
    record: fill each outcome's `episode` with its RLDS tree.
  """
  if not seeds:
    raise ValueError("play needs at least one seed")
  make_batch = getattr(env, "batch", None)
  if make_batch is None:
    batch, agent = runner.HostBatch([env]), runner.PolicyAgent(lambda _: policy, name=policy.name)
  else:
    # Always this many rows, idle ones left over: one shape, so one compilation per task.
    batch = make_batch(BATCH_ROWS)
    if hasattr(policy, "batch_agent"):
      agent = policy.batch_agent()
    else:
      # Rows reset their own copy: a shared policy's state (its random generator) would make an
      # episode depend on the rows beside it.
      agent = runner.PolicyAgent(lambda _: copy.copy(policy), name=policy.name)
  try:
    return runner.run_episodes(batch, agent, [int(s) for s in seeds], record=record)
  finally:
    if make_batch is not None:
      batch.close()  # A host batch holds the caller's `env`: the caller closes it.


def rollout(env, policy, seed: int) -> dict:
  """One episode of `policy` in `env` from `seed` -> an RLDS episode tree (see module doc)."""
  return play(env, policy, [seed])[0].episode


def measure_returns(
  env, policy, seed: int, num_episodes: int, stream: int
) -> tuple[float, float, int, float | None]:
  """`summarize_returns` of `policy`'s episodes on the seeds of `stream` (`episode_seed`)."""
  seeds = [episode_seed(seed, env.name, i, stream) for i in range(num_episodes)]
  # Unrecorded: the outcomes hold the returns, and recording costs more host time than playing.
  return summarize_returns(play(env, policy, seeds, record=False))


def random_baseline(
  env, seed: int = 0, num_episodes: int = BASELINE_EPISODES
) -> tuple[float, float, int, float | None]:
  """The uniformly random policy's returns: the 0% anchor of normalised scores.

  The one measurement of a task's random baseline: its statistics (`generation.ensure_stats`)
  and the experts' summaries both call this, so every table reports the same number.
  """
  return measure_returns(env, policies.RandomPolicy(env), seed, num_episodes, RANDOM_STATS_STREAM)


def expert_baseline(
  env, expert, seed: int = 0, num_episodes: int = BASELINE_EPISODES
) -> tuple[float, float, int, float | None]:
  """The expert's returns: the 100% anchor of normalised scores.

  The one measurement of a task's expert return: its statistics and the expert's own summary
  (the README's expert tables) both call this, so with the defaults they hold the same number.
  """
  return measure_returns(env, expert, seed, num_episodes, EXPERT_STATS_STREAM)


def baseline_record(env, measured: tuple, seed: int = 0) -> dict:
  """How an expert's summary stores a baseline (`random_baseline` or `expert_baseline`'s tuple,
  measured in `env` from `seed`): with what `recorded_baseline` checks before reusing it."""
  mean, std, count, rate = measured
  return dict(
    mean_return=mean,
    std_return=std,
    num_episodes=count,
    success_rate=rate,
    seed=seed,
    task=env.name,
    env_version=env.version,
  )


def recorded_baseline(
  record: Any, env, seed: int, num_episodes: int
) -> tuple[float, float, int, float | None] | None:
  """A summary's `baseline_record` as `random_baseline` / `expert_baseline(env, ..., seed,
  num_episodes)` would measure it, or None where it measured something else (another task,
  environment version or seed, or fewer episodes): the expert's training measured both
  baselines, and the task's statistics take them instead of playing the episodes again.

  Records from before they named their seed and task were all measured from seed 0 in the
  expert's own task (whose summary holds them), and are read so. A record that does not name its
  environment version counts as measured in an environment without one: it is reused only where
  `env.version` is None, and measured again in a versioned environment.
  """
  if not isinstance(record, dict) or not {"mean_return", "std_return", "num_episodes"} <= set(
    record
  ):
    return None
  same = (
    record.get("task", env.name) == env.name
    and record.get("env_version") == env.version
    and record.get("seed", 0) == seed
    and record["num_episodes"] >= num_episodes
  )
  if not same:
    return None
  return (
    float(record["mean_return"]),
    float(record["std_return"]),
    int(record["num_episodes"]),
    record.get("success_rate"),
  )


def num_actions(episode: dict) -> int:
  """Steps that carry a real action (all but the final observation step)."""
  return int(np.sum(~np.asarray(episode["steps"]["is_last"])))


def action_steps(episode: dict) -> tuple[Any, Any]:
  """(observations [T, ...], actions [T, ...]) of the steps with real actions, for tokenizing.

  Drops RLDS's final observation-only step, whose action is padding.
  """
  keep = ~np.asarray(episode["steps"]["is_last"])
  select = lambda tree: _map(lambda x: x[keep], tree)
  return select(episode["steps"]["observation"]), select(episode["steps"]["action"])


def _map(fn, tree):
  if isinstance(tree, dict):
    return {k: _map(fn, v) for k, v in tree.items()}
  return fn(np.asarray(tree))


def summarize_returns(
  episodes: Iterable[dict | runner.EpisodeOutcome],
) -> tuple[float, float, int, float | None]:
  """(mean return, std, count, success rate or None) of episodes' metadata (or outcomes)."""
  returns, successes = [], []
  for episode in episodes:
    if isinstance(episode, runner.EpisodeOutcome):
      # float32 as a recorded episode's return, so that both give the same statistics.
      returns.append(float(np.float32(episode.episode_return)))
      successes.append(int(episode.success))
      continue
    returns.append(float(episode["episode_metadata"]["return"]))
    successes.append(int(episode["episode_metadata"]["success"]))
  if not returns:
    raise ValueError("summarize_returns needs at least one episode")
  defined = [s for s in successes if s != SUCCESS_UNDEFINED]
  rate = float(np.mean(defined)) if len(defined) == len(successes) else None
  return float(np.mean(returns)), float(np.std(returns)), len(returns), rate
