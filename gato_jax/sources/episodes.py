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
runner (`envs.runner.run_episodes(..., record=True)`) makes these trees. This module has no
TensorFlow; `gato_jax.data.rlds_io` stores and reads them as TFDS datasets, and
`gato_jax.data.stats` holds the statistics (re-exported here for the episode makers).
"""

import zlib
from typing import Any, Iterable

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


def rollout(env, policy, seed: int) -> dict:
  """One episode of `policy` in `env` from `seed` -> an RLDS episode tree (see module doc)."""
  agent = runner.PolicyAgent(lambda _: policy, name=policy.name)
  return runner.run_episodes(runner.HostBatch([env]), agent, [seed], record=True)[0].episode


def measure_returns(
  env, policy, seed: int, num_episodes: int, stream: int
) -> tuple[float, float, int, float | None]:
  """`summarize_returns` of `policy`'s episodes on the seeds of `stream` (`episode_seed`)."""
  seeds = [episode_seed(seed, env.name, i, stream) for i in range(num_episodes)]
  agent = runner.PolicyAgent(lambda _: policy, name=policy.name)
  outcomes = runner.run_episodes(runner.HostBatch([env]), agent, seeds, record=True)
  return summarize_returns(o.episode for o in outcomes)


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


def summarize_returns(episodes: Iterable[dict]) -> tuple[float, float, int, float | None]:
  """(mean return, std, count, success rate or None) of episodes' metadata."""
  returns, successes = [], []
  for episode in episodes:
    returns.append(float(episode["episode_metadata"]["return"]))
    successes.append(int(episode["episode_metadata"]["success"]))
  if not returns:
    raise ValueError("summarize_returns needs at least one episode")
  defined = [s for s in successes if s != SUCCESS_UNDEFINED]
  rate = float(np.mean(defined)) if len(defined) == len(successes) else None
  return float(np.mean(returns)), float(np.std(returns)), len(returns), rate
