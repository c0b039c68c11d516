"""Resumable, deterministic generation of a task's episodes and statistics into TFDS datasets.

For one task this (1) measures the statistics that anchor normalised scores (a random policy's
and the expert's mean return over their own seeds; a trained expert's summary already holds
them), then (2) rolls out the data policy in shards of episodes (`episodes.play`: gymnax tasks a
batch at a time on device), each pickled atomically into a staging folder, and (3) once every shard
exists, stores them in order as one TFDS dataset and removes the staging folder. A killed run
resumes at the first missing shard (finished shards are never regenerated), and since episode
seeds derive from (seed, task, index) alone, the data is the same however often it was resumed.

Layout under data_dir:
  <name>/<config>/1.0.0/                       the TFDS dataset, e.g. gato_babyai/go_to_red_ball
  gato_meta/stats/<domain>/<task>.json         TaskStats (episodes.stats_path)
  gato_meta/generated/<name>/<config>.json     what was generated (counts, seed, flags)
  gato_meta/staging/<name>/<config>/           shards of a run in progress
  gato_meta/locks/<name>/<config>/.lock        held by the process making that dataset
"""

import dataclasses
import json
import os
import pickle
import shutil
import sys
import time
from typing import Callable, Iterable, Iterator, Mapping

from absl import logging

from gato_jax import files, tokenizer, workdir_lock
from gato_jax.sources import episodes as episodes_lib
from gato_jax.data import rlds_io
from gato_jax.envs import noise, policies, registry

POLICIES = ("expert", "random")


@dataclasses.dataclass
class TaskSummary:
  """One row of the generation summary table."""

  task: str
  agent: str
  episodes: int
  steps: int  # Steps with actions (RLDS steps minus the final observation step).
  tokens: int  # Gato tokens of those steps (observation, separator and action tokens).
  expert_return: float | None
  random_return: float
  seconds: float
  status: str  # "generated", "existing" or "regenerated" (its expert was retrained).
  dataset_dir: str = ""


def dataset_name(domain: str, policy: str, action_noise: float = 0.0) -> str:
  """ "gato_babyai" for expert data, "gato_babyai_random" for random-policy data, and
  "gato_dm_control_noise0p3" for expert episodes executed with action noise 0.3 (its own
  dataset, so that noisy and clean episodes of a task are never mixed)."""
  name = f"gato_{domain}" if policy == "expert" else f"gato_{domain}_{policy}"
  if action_noise:
    name += f"_noise{noise.check_scale(action_noise):g}".replace(".", "p")
  return name


def _meta_dir(data_dir: str, *parts: str) -> str:
  return os.path.join(os.path.expanduser(data_dir), "gato_meta", *parts)


def _make_policy(env, policy: str) -> policies.Policy:
  if policy not in POLICIES:
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
  return registry.make_expert(env) if policy == "expert" else policies.RandomPolicy(env)


def ensure_stats(env, data_dir: str, seed: int, num_episodes: int) -> episodes_lib.TaskStats:
  """Loads the task's statistics, measuring what is missing (>= num_episodes each) or stale (an
  expert retrained since), and saves them.

  A task that renders its state task (`env.state_task`: DM Control from pixels) takes the state
  task's statistics: from the same seed it has the same physics, the same expert acting on the
  same states and the same action spec, so the same returns, and measuring them there spares
  rendering 2 x num_episodes episodes (about two hours at 75 ms a frame).
  """
  state_task = getattr(env, "state_task", None)
  if state_task is not None:
    state_env = registry.make_env(state_task)
    try:
      stats = ensure_stats(state_env, data_dir, seed, num_episodes)
    finally:
      state_env.close()
    stats = dataclasses.replace(stats, task=env.name)
    episodes_lib.save_stats(stats, data_dir)
    return stats
  try:
    stats = episodes_lib.load_stats(data_dir, env.name)
  except FileNotFoundError:
    stats = None  # No statistics yet: measure them below.
  if stats is not None and stats.env_version != env.version:
    logging.info(
      "%s: statistics measured on environment %s, now %s: measuring them again",
      env.name,
      stats.env_version,
      env.version,
    )
    stats = None
  random_ok = stats is not None and stats.random_episodes >= num_episodes
  expert, expert_ok = None, not registry.has_expert(env.name)
  if not expert_ok and stats is not None and stats.expert_episodes >= num_episodes:
    try:
      expert = registry.make_expert(env)
      expert_ok = stats.expert_version == expert.version
    except FileNotFoundError:
      expert_ok = True  # No trained expert to compare with (yet): the stored numbers stand.
  if random_ok and expert_ok:
    return stats
  if expert is None and registry.trained_expert(env.name) and registry.has_expert(env.name):
    expert = registry.make_expert(env)
  # A trained expert's summary holds both baselines, measured when it was trained: taken where
  # they are what would be measured here (the same seeds, at least as many episodes).
  summary = getattr(expert, "summary", None) or {}
  if not random_ok:
    measured = episodes_lib.recorded_baseline(summary.get("random"), env, seed, num_episodes)
    mean, std, count, rate = measured or episodes_lib.random_baseline(env, seed, num_episodes)
    kept = {f: getattr(stats, f) for f in EXPERT_FIELDS} if stats else {}
    stats = episodes_lib.TaskStats(
      env.name, mean, std, count, rate, **kept, env_version=env.version
    )
  if not expert_ok:
    expert = expert or registry.make_expert(env)  # Names the training command if untrained.
    measured = episodes_lib.recorded_baseline(summary.get("expert"), env, seed, num_episodes)
    mean, std, count, rate = measured or episodes_lib.expert_baseline(
      env, expert, seed, num_episodes
    )
    stats = dataclasses.replace(
      stats,
      expert_agent=expert.name,
      expert_version=expert.version,
      expert_return=mean,
      expert_return_std=std,
      expert_episodes=count,
      expert_success_rate=rate,
    )
  episodes_lib.save_stats(stats, data_dir)
  return stats


# TaskStats fields that describe the expert (kept when only the random baseline is re-measured).
EXPERT_FIELDS = (
  "expert_agent",
  "expert_version",
  "expert_return",
  "expert_return_std",
  "expert_episodes",
  "expert_success_rate",
)


def count_tokens(episode: dict, env) -> int:
  """Gato tokens of an episode's steps with actions, as the trainer will see them."""
  if episodes_lib.num_actions(episode) == 0:
    return 0
  observations, actions = episodes_lib.action_steps(episode)
  group = tokenizer.tokenize_episode(observations, actions, env.observation_spec, env.action_spec)
  return int(group.num_tokens)


_progress_line_open = False


def print_progress(line: str) -> None:
  """Rewrites one console line in place (the default `progress` of the generators)."""
  global _progress_line_open
  sys.stderr.write("\r" + line.ljust(79))
  sys.stderr.flush()
  _progress_line_open = True


def end_progress() -> None:
  """Ends the in-place progress line, if one is open, so that what follows gets lines of its own."""
  global _progress_line_open
  if _progress_line_open:
    sys.stderr.write("\n")
    sys.stderr.flush()
    _progress_line_open = False


def generate_staged(
  data_dir: str,
  name: str,
  config: str,
  manifest: dict,
  num_shards: Mapping[str, int],
  make_shard: Callable[[str, int], dict],
  write: Callable[[Callable[[str], Iterator[dict]]], None],
  request_keys: Iterable[str],
  stale_keys: Iterable[str] = (),
  at_least_keys: Iterable[str] = (),
) -> tuple[dict, str]:
  """The resumable skeleton of every generator of stored data (episodes and example sets).

  Shards are pickled atomically into a staging folder; once all exist, `write` stores them as
  TFDS dataset `name/config` (in `data_dir`) and the staging folder goes. A killed run resumes
  at the first missing shard; a finished dataset is found, not regenerated. One process makes a
  dataset at a time (a lock in gato_meta/locks/): a second one, e.g. a parallel data job that
  shares a task, waits and then finds it.

  Args:
    manifest: what the run is asked for (task, agent, counts, seed, shard size); staged shards
      and a finished dataset are reused only for the same request.
    num_shards: {split: number of shards}.
    make_shard: (split, shard index) -> {"items": [...], <counter>: int, ...}: a function of
      its arguments and the manifest alone.
    write: receives `staged`, where `staged(split)` yields the split's shards in order.
    request_keys: the manifest's keys that must match a finished dataset's record.
    stale_keys: the manifest's keys (e.g. the agent's version) whose change makes stored data
      and staged shards outdated: they are removed and the data is generated again.
    at_least_keys: request keys (counts of items that are a function of their index alone)
      where a finished dataset with more serves the request (its readers take the first ones),
      and one with fewer is generated again at the requested size.

  Returns:
    (record, status): the manifest plus each counter summed over shards, and "generated",
    "existing" or "regenerated".
  """
  with workdir_lock.WorkdirLock(_meta_dir(data_dir, "locks", name, config), wait=True):
    target = rlds_io.dataset_dir(data_dir, name, config)
    record_path = _meta_dir(data_dir, "generated", name, f"{config}.json")
    staging = _meta_dir(data_dir, "staging", name, config)
    at_least = set(at_least_keys)
    request = {k: manifest[k] for k in request_keys}
    exact = {k: v for k, v in request.items() if k not in at_least}
    stale = {k: manifest[k] for k in stale_keys}
    prepared = lambda: os.path.exists(os.path.join(target, "dataset_info.json"))
    status = "generated"

    if os.path.exists(record_path) and prepared():
      with open(record_path) as f:
        record = json.load(f)
      if {k: record.get(k) for k in exact} != exact:
        raise ValueError(
          f"{target} was generated with { ({k: record.get(k) for k in request}) }, not {request};"
          f" delete it and {record_path} to regenerate, or repeat the original flags"
        )
      short = {k: record.get(k) for k in at_least if (record.get(k) or 0) < manifest[k]}
      if {k: record.get(k) for k in stale} == stale and not short:
        return record, "existing"
      logging.info(
        "%s was generated with %s, not %s: generating it again",
        target,
        {k: record.get(k) for k in [*stale, *short]},
        {**stale, **{k: manifest[k] for k in short}},
      )
      shutil.rmtree(target)
      os.remove(record_path)
      status = "regenerated"

    manifest_path = os.path.join(staging, "manifest.json")
    if os.path.exists(manifest_path):
      with open(manifest_path) as f:
        previous = json.load(f)
      if {k: previous.get(k) for k in stale} != stale:
        logging.info("discarding %s: its shards come from %s, not %s", staging, previous, manifest)
        shutil.rmtree(staging)
      elif previous != manifest:
        raise ValueError(
          f"staged shards in {staging} come from a run with {previous}, not"
          f" {manifest}; rerun with those flags to resume, or delete the folder"
        )
    if not os.path.exists(manifest_path):
      files.write_json(manifest_path, manifest)

    paths = {
      split: [os.path.join(staging, f"{split}-{s:05d}-of-{count:05d}.pkl") for s in range(count)]
      for split, count in num_shards.items()
    }
    for split, split_paths in paths.items():
      for s, path in enumerate(split_paths):
        if not os.path.exists(path):  # Else finished by an earlier run.
          files.write_pickle(path, make_shard(split, s))  # A shard exists only once complete.

    def staged(split: str) -> Iterator[dict]:
      for path in paths[split]:
        with open(path, "rb") as f:
          yield pickle.load(f)

    if not prepared():
      write(staged)
    record = dict(manifest)
    for split in paths:
      for shard in staged(split):
        for key, count in shard.items():
          if key != "items":
            record[key] = record.get(key, 0) + count
    files.write_json(record_path, record)
    shutil.rmtree(staging)
    return record, status


def generate_task(
  task: str,
  data_dir: str,
  num_episodes: int,
  seed: int = 0,
  policy: str = "expert",
  shard_episodes: int = 100,
  stats_episodes: int = 50,
  progress: Callable[[str], None] = print_progress,
  action_noise: float = 0.0,
) -> TaskSummary:
  """Generates (or resumes, or finds) `num_episodes` episodes of `task` as a TFDS dataset.

  Args:
    task: "<domain>/<task>", e.g. "babyai/GoToRedBall".
    data_dir: TFDS data directory (also holds gato_meta/).
    num_episodes: episodes to store.
    seed: base seed; episode i of the task resets with episodes.episode_seed(seed, task, i).
    policy: "expert" (the registered expert) or "random".
    shard_episodes: episodes per staged shard (the unit of resumption).
    stats_episodes: episodes per policy for the task statistics (>= 50 for reported numbers).
    progress: receives a one-line progress message (at most one a second, and at each shard end).
    action_noise: > 0: the expert's actions are executed with this noise
      (`envs.noise.NoisyActions`) while the episodes store the expert's own, into the dataset
      `dataset_name(domain, "expert", action_noise)`; the statistics stay the clean expert's.

  Returns:
    The task's TaskSummary.
  """
  if num_episodes < 1 or shard_episodes < 1 or stats_episodes < 1:
    raise ValueError(
      f"episode counts must be positive: episodes={num_episodes},"
      f" shard_episodes={shard_episodes}, stats_episodes={stats_episodes}"
    )
  action_noise = noise.check_scale(action_noise, task)
  if action_noise and policy != "expert":
    raise ValueError(f"action noise perturbs an expert's demonstrations, not {policy!r} episodes")
  start = time.time()
  env = registry.make_env(task)
  domain, _ = registry.split_task_name(task)
  data_policy = _make_policy(env, policy)  # Fails early when no expert is registered.
  name, config = dataset_name(domain, policy, action_noise), rlds_io.config_name(task)
  stats = ensure_stats(env, data_dir, seed, stats_episodes)
  # The expert is made for `env` itself (a pixel task's expert reads its state), and acts in it.
  data_env = noise.NoisyActions(env, action_noise) if action_noise else env
  num_shards = -(-num_episodes // shard_episodes)
  clock = {"done": 0, "made": 0, "start": time.time(), "last": 0.0}

  def make_shard(split: str, s: int) -> dict:
    indices = range(s * shard_episodes, min(num_episodes, (s + 1) * shard_episodes))
    clock["done"] = s * shard_episodes
    shard = {"items": [], "steps": 0, "tokens": 0}
    rows = episodes_lib.batch_rows(data_env)
    for first in range(0, len(indices), rows):  # Episodes side by side where the task can.
      chunk = indices[first : first + rows]
      seeds = [episodes_lib.episode_seed(seed, task, i) for i in chunk]
      for outcome in episodes_lib.play(data_env, data_policy, seeds):
        shard["items"].append(outcome.episode)
        shard["steps"] += episodes_lib.num_actions(outcome.episode)
        shard["tokens"] += count_tokens(outcome.episode, env)
      clock["done"] += len(chunk)
      clock["made"] += len(chunk)
      now = time.time()
      if now - clock["last"] < 1.0 and chunk[-1] != indices[-1]:
        continue  # One line a second is enough, and keeps logs short.
      clock["last"], rate = now, clock["made"] / max(now - clock["start"], 1e-9)
      progress(
        f"{task}: episode {clock['done']}/{num_episodes}, shard {s + 1}/{num_shards},"
        f" {rate:.1f} episodes/s"
      )
    return shard

  def write(staged):
    progress(f"{task}: writing {num_episodes} episodes to {name}/{config}")
    rlds_io.write_episodes(
      (episode for shard in staged("train") for episode in shard["items"]),
      data_dir,
      name,
      config,
      description=f"{num_episodes} episodes of {task} from {data_policy.name}, seed {seed}"
      + (f", executed with action noise {action_noise:g}." if action_noise else "."),
    )

  manifest = {
    "task": task,
    "agent": data_policy.name,
    "agent_version": data_policy.version,
    # None for most environments, as in records written before environments had versions.
    "env_version": env.version,
    "episodes": num_episodes,
    "seed": seed,
    "shard_episodes": shard_episodes,
  }
  if action_noise:  # Records of clean data, older ones included, have no such key.
    manifest["action_noise"] = action_noise
  record, status = generate_staged(
    data_dir,
    name,
    config,
    manifest,
    {"train": num_shards},
    make_shard,
    write,
    ("task", "agent", "episodes", "seed", *(["action_noise"] if action_noise else [])),
    ("agent_version", "env_version"),
    # Episode i's seed depends on i alone (episode_seed), so a stored set's first N episodes
    # are the N episodes of a smaller request: runs read them (data.max_episodes_per_task).
    ("episodes",),
  )
  env.close()
  if status == "existing" and record["episodes"] > num_episodes:
    status = f"existing; runs read the first {num_episodes}"
  return TaskSummary(
    task,
    data_policy.name,
    record["episodes"],
    record["steps"],
    record["tokens"],
    stats.expert_return,
    stats.random_return,
    time.time() - start,
    status,
    rlds_io.dataset_dir(data_dir, name, config),
  )


def format_table(rows: list[TaskSummary]) -> str:
  """The end-of-run summary: one row per task, plus totals."""
  width = max([28] + [len(r.task) for r in rows])
  header = (
    f"{'task':<{width}} {'agent':<11} {'episodes':>8} {'steps':>9} {'tokens':>11}"
    f" {'expert R':>9} {'random R':>9} {'time s':>7}  status"
  )
  fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(
      f"{r.task:<{width}} {r.agent:<11} {r.episodes:>8} {r.steps:>9} {r.tokens:>11}"
      f" {fmt(r.expert_return):>9} {fmt(r.random_return):>9} {r.seconds:>7.1f}"
      f"  {r.status}"
    )
  lines.append(
    f"{'total':<{width}} {'':<11} {sum(r.episodes for r in rows):>8}"
    f" {sum(r.steps for r in rows):>9} {sum(r.tokens for r in rows):>11}"
    f" {'':>9} {'':>9} {sum(r.seconds for r in rows):>7.1f}"
  )
  return "\n".join(lines)
