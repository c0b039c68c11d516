"""RLDS-shaped episodes as numpy trees, per-task return statistics, and Gato's data filtering.

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
policy gave up on (policies.PolicyGaveUp) ends there, truncated, with success 0. This module has no
TensorFlow; `rlds_io` stores and reads these trees as TFDS datasets.
"""

import dataclasses
import json
import os
import zlib
from typing import Any, Iterable

import numpy as np

from gato_jax import files
from gato_jax.envs import policies
from gato_jax.tokenizer import specs as token_specs

SUCCESS_UNDEFINED = -1
# Seed streams: episodes stored as data, and the separate rollouts that measure the statistics.
DATA_STREAM, EXPERT_STATS_STREAM, RANDOM_STATS_STREAM = 0, 1, 2
# Gato keeps episodes that reach 80% of the expert (GATO_SPEC.md, Training, Data filtering).
DEFAULT_FILTER_FRACTION = 0.8


def episode_seed(base_seed: int, task: str, index: int, stream: int = DATA_STREAM) -> int:
  """The reset seed of episode `index` of `task`: a function of these alone (resumable runs)."""
  entropy = [int(base_seed), zlib.crc32(task.encode()), int(stream), int(index)]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def _zero_action(action_spec: Any) -> Any:
  leaves = []
  for _, leaf in token_specs.action_leaf_specs(action_spec):
    dtype = np.int32 if isinstance(leaf, token_specs.DiscreteSpec) else np.float32
    leaves.append(np.zeros(leaf.shape, dtype))
  return token_specs.unflatten(action_spec, leaves)


def _stack(trees: list, spec: Any) -> Any:
  """Stacks a list of trees shaped like `spec` along a new time axis; text becomes object arrays."""
  columns = [[] for _ in token_specs.leaf_specs(spec)]
  for tree in trees:
    for column, (_, value, _) in zip(columns, token_specs.flatten_with_paths(tree, spec)):
      column.append(value)
  leaves = []
  for column, (_, leaf) in zip(columns, token_specs.leaf_specs(spec)):
    if isinstance(leaf, token_specs.TextSpec):
      leaves.append(np.array(column, dtype=object))
    else:
      leaves.append(np.stack([np.asarray(v) for v in column]))
  return token_specs.unflatten(spec, leaves)


def rollout(env, policy, seed: int) -> dict:
  """Runs one episode of `policy` in `env` from `seed` -> an RLDS episode tree (see module doc)."""
  observation = env.reset(seed)
  policy.reset(seed)
  limit = env.max_episode_steps  # Read after reset: BabyAI sets its limit per episode.
  observations, actions, rewards, discounts = [observation], [], [], []
  terminated, success = False, SUCCESS_UNDEFINED
  for _ in range(limit):
    try:
      action = policy.act(observation)
    except policies.PolicyGaveUp:
      # The episode ends here, unfinished: a failure of the policy, not a terminal state.
      success = 0
      break
    result = env.step(action)
    actions.append(action)
    rewards.append(result.reward)
    discounts.append(0.0 if result.terminated else 1.0)
    observations.append(result.observation)
    observation = result.observation
    if "success" in result.info:
      success = int(bool(result.info["success"]))
    if result.terminated or result.truncated:
      terminated = result.terminated
      break
  # The extra last step carries the final observation; its action/reward are padding (RLDS).
  actions.append(_zero_action(env.action_spec))
  rewards.append(0.0)
  discounts.append(0.0 if terminated else 1.0)
  num_steps = len(observations)
  is_last = np.zeros(num_steps, bool)
  is_last[-1] = True
  return {
      "steps": {
          "observation": _stack(observations, env.observation_spec),
          "action": _stack(actions, env.action_spec),
          "reward": np.asarray(rewards, np.float32),
          "discount": np.asarray(discounts, np.float32),
          "is_first": np.arange(num_steps) == 0,
          "is_last": is_last,
          "is_terminal": is_last & terminated,
      },
      "episode_metadata": {
          "task": env.name,
          "agent": policy.name,
          # float32 like the rewards: TFDS stores floats as tf.train.Example float32 lists.
          "return": np.float32(np.sum(np.asarray(rewards, np.float32), dtype=np.float64)),
          "success": np.int8(success),
          "seed": np.int64(seed),
      },
  }


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


@dataclasses.dataclass
class TaskStats:
  """Mean returns that anchor a task's normalised score: 0% random, 100% expert.

  Attributes:
    task: "<domain>/<task>".
    random_return / random_return_std / random_episodes / random_success_rate: a uniformly
      random policy's returns over `random_episodes` episodes.
    expert_agent / expert_return / ... : the same for the expert that makes the data; None
      where the task has no expert yet (e.g. DM Control before its SAC agents exist).
  """

  task: str
  random_return: float
  random_return_std: float
  random_episodes: int
  random_success_rate: float | None = None
  expert_agent: str | None = None
  expert_return: float | None = None
  expert_return_std: float | None = None
  expert_episodes: int = 0
  expert_success_rate: float | None = None


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


def stats_path(data_dir: str, task: str) -> str:
  """Where a task's statistics live: <data_dir>/gato_meta/stats/<domain>/<task>.json."""
  return os.path.join(os.path.expanduser(data_dir), "gato_meta", "stats", f"{task}.json")


def save_stats(stats: TaskStats, data_dir: str) -> str:
  return files.write_json(stats_path(data_dir, stats.task), dataclasses.asdict(stats))


def load_stats(data_dir: str, task: str) -> TaskStats:
  path = stats_path(data_dir, task)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no statistics for task {task!r} at {path}; run tools/generate_data.py for it first"
    )
  with open(path) as f:
    return TaskStats(**json.load(f))


def return_threshold(stats: TaskStats, fraction: float = DEFAULT_FILTER_FRACTION) -> float:
  """The least return an episode needs to be kept: random + fraction * (expert - random).

  The paper keeps episodes with "at least 80% of the expert return". Measured from the random
  return this is a normalised score >= 80%, which equals the paper's rule when random scores 0
  (most of its tasks) and stays meaningful for negative returns: with expert -150 and random
  -1200 (Pendulum-like), 0.8 * expert = -120 would reject the expert's own typical episodes,
  while random + 0.8 * gap = -360 keeps them.
  """
  if stats.expert_return is None:
    raise ValueError(f"task {stats.task!r} has no expert return, so it cannot be filtered")
  gap = stats.expert_return - stats.random_return
  if not gap > 0:
    raise ValueError(
        f"task {stats.task!r}: expert return {stats.expert_return:.4g} does not beat random"
        f" {stats.random_return:.4g}; normalised scores and filtering are undefined"
    )
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"filter fraction must be in [0, 1], got {fraction}")
  return stats.random_return + fraction * gap


def keep_episode(episode: dict, stats: TaskStats, fraction: float = DEFAULT_FILTER_FRACTION) -> bool:
  return float(episode["episode_metadata"]["return"]) >= return_threshold(stats, fraction)


def filter_episodes(episodes: Iterable[dict], stats: TaskStats,
                    fraction: float = DEFAULT_FILTER_FRACTION) -> Iterable[dict]:
  """Yields the episodes whose return reaches `return_threshold(stats, fraction)`."""
  threshold = return_threshold(stats, fraction)
  for episode in episodes:
    if float(episode["episode_metadata"]["return"]) >= threshold:
      yield episode


def normalized_score(episode_return: float, stats: TaskStats) -> float:
  """(return - random) / (expert - random): 1.0 is the expert, 0.0 a random policy."""
  return (episode_return - stats.random_return) / (return_threshold(stats, 1.0) - stats.random_return)
