"""Trained PPO experts for the gymnax tasks: train, evaluate, cache on disk, reload as policies.

An expert lives in `<workdir>/<env id>/`:
  params.msgpack   the network parameters (flax.serialization);
  expert.json      env id, PPO config, evaluation summary (expert and random mean returns over
                   the same episodes' seeds, reference return, training wall time), versions.
The default workdir is ~/.cache/gato_jax/experts (never the repository), or $GATO_JAX_EXPERTS.
`make_expert(env)` is the `registry.register_expert("gymnax", ...)` factory.
"""

import dataclasses
import functools
import os
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from gato_jax import console
from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import gymnax_envs, policies
from gato_jax.experts import cache, ppo

DEFAULT_WORKDIR = os.environ.get("GATO_JAX_EXPERTS", "~/.cache/gato_jax/experts")


@dataclasses.dataclass
class Expert:
  """A reloaded expert; `expert(observation, rng)` acts on the adapter's numpy observations."""

  env_id: str
  config: ppo.PPOConfig
  params: Any
  summary: dict
  deterministic: bool = True
  version: str = ""  # Digest of the parameters (cache.read_expert).

  def policy_fn(self, deterministic: bool | None = None) -> gymnax_envs.PolicyFn:
    """The pure jax policy (gymnax observation, key) -> action, for `gymnax_envs.rollout`."""
    det = self.deterministic if deterministic is None else deterministic
    return ppo.make_policy(self.env_id, self.config, self.params, deterministic=det)

  def __call__(self, observation, rng=None) -> np.ndarray:
    """Acts on one `GymnaxEnvironment` observation (its dict, or the bare array).

    Args:
      observation: {"state": ...} / {"grid": ...} as the adapter returns it, or the array.
      rng: a jax PRNG key, a numpy Generator or None; only stochastic experts use it.

    Returns:
      The action as a numpy array matching the adapter's action_spec.
    """
    observation = gymnax_envs.to_gymnax_observation(self.env_id, observation)
    if rng is None:
      key = jax.random.key(0)
    elif isinstance(rng, np.random.Generator):
      key = jax.random.key(int(rng.integers(0, 2**31 - 1)))
    else:
      key = rng
    if not hasattr(self, "_jitted"):
      self._jitted = jax.jit(self.policy_fn())
    return np.asarray(self._jitted(observation, key))


class ExpertPolicy(policies.Policy):
  """A cached PPO expert as a `policies.Policy` (what data generation drives).

  Attributes:
    summary: the expert's training summary, whose baselines (`episodes.baseline_record`) the
      task's statistics reuse; empty where this policy acts otherwise than it was evaluated
      (greedy versus sampled).
  """

  name = "ppo_expert"

  def __init__(self, expert: Expert):
    self.expert = expert
    self.version = expert.version
    same = expert.summary.get("deterministic", expert.deterministic) == expert.deterministic
    self.summary = expert.summary if same else {}
    self._key = jax.random.key(0)
    self._batch_agent = None

  def batch_agent(self) -> gymnax_envs.PolicyFnAgent:
    """The expert acting for every row of a `GymnaxBatch` in one jitted call (`episodes.play`);
    built once, so that its compilations serve every batch."""
    if self._batch_agent is None:
      self._batch_agent = gymnax_envs.PolicyFnAgent(self.expert.policy_fn(), name=self.name)
    return self._batch_agent

  def reset(self, seed: int) -> None:
    # Seeded per episode: sampled actions depend only on the episode's seed.
    self._key = jax.random.key(int(seed))

  def act(self, observation) -> np.ndarray:
    self._key, key = jax.random.split(self._key)
    return self.expert(observation, key)


def make_expert(env: gymnax_envs.GymnaxEnvironment, workdir: str | None = None) -> ExpertPolicy:
  """The cached expert of `env`'s task (registry factory); FileNotFoundError if untrained."""
  return ExpertPolicy(load_expert(workdir or DEFAULT_WORKDIR, env.name))


def has_expert(task: str, workdir: str | None = None) -> bool:
  """Whether `task` ("gymnax/CartPole-v1") has a cached expert (registry check: random-policy
  data of an untrained task needs none)."""
  return cache.has_expert(expert_dir(workdir or DEFAULT_WORKDIR, task))


def expert_dir(workdir: str, env_id: str) -> str:
  return os.path.join(os.path.expanduser(workdir), gymnax_envs.canonical_id(env_id))


def save_expert(workdir: str, env_id: str, config: ppo.PPOConfig, params, summary: dict) -> str:
  """Writes params and metadata atomically (temp files, then rename); returns the directory."""
  directory = expert_dir(workdir, env_id)
  meta = dict(
    env_id=gymnax_envs.canonical_id(env_id),
    ppo_config=dataclasses.asdict(config),
    summary=summary,
    versions=cache.package_versions("jax", "flax", "optax", "gymnax"),
  )
  return cache.write_expert(directory, params, meta)


def load_expert(workdir: str, env_id: str, deterministic: bool | None = None) -> Expert:
  """Reloads a cached expert; raises FileNotFoundError naming the training command if absent.

  `deterministic=None` acts as the expert was evaluated (its summary's "deterministic" flag).
  """
  directory = expert_dir(workdir, env_id)
  if not cache.has_expert(directory):
    raise FileNotFoundError(
      f"no cached expert for {env_id!r} in {directory}; train one with: python"
      f" tools/train_expert.py --env={gymnax_envs.canonical_id(env_id)} --workdir={workdir}"
    )
  config_of = lambda meta: ppo.PPOConfig(**meta["ppo_config"])
  params, meta = cache.read_expert(
    directory, lambda meta: ppo.params_template(env_id, config_of(meta))
  )
  config = config_of(meta)
  if deterministic is None:
    deterministic = bool(meta["summary"].get("deterministic", True))
  return Expert(
    env_id=meta["env_id"],
    config=config,
    params=params,
    summary=meta["summary"],
    deterministic=deterministic,
    version=meta["version"],
  )


def policy_returns(
  env_id: str,
  policy: gymnax_envs.PolicyFn | gymnax_envs.PolicyFnAgent,
  num_episodes: int,
  seed: int,
) -> dict:
  """Mean/std return and mean length of a pure-JAX policy (or its agent, which keeps its
  compilation) over `num_episodes` episodes (`gymnax_envs.rollout`)."""
  result = gymnax_envs.rollout(env_id, policy, num_episodes, seed=seed)
  return dict(
    mean_return=float(result["returns"].mean()),
    std_return=float(result["returns"].std()),
    mean_length=float(result["lengths"].mean()),
    num_episodes=int(num_episodes),
  )


def train_expert(config, workdir: str = DEFAULT_WORKDIR, reevaluate: bool = False) -> dict:
  """Trains (or reloads) the expert that `config` describes, evaluates it, caches it.

  Seeds `config.seed`, `config.seed + 1`, ... are trained in turn (at most `config.num_seeds`)
  until one reaches `config.target_return`; the best of them is kept. One PPO seed is fragile (the
  same recipe ends at 500 or near 200 on CartPole depending on the CPU's float rounding), and the
  data only needs one good expert. Each seed checkpoints as it trains and keeps its result under
  `<expert dir>/seeds/<seed>/`, so a killed run resumes where it stopped. A cached expert trained
  with another recipe (PPO config, seeds, target) is trained again (`cache.train_or_reuse`).

  Args:
    config: a gato_jax/configs/experts/gymnax.py config (env_id, seed, ppo, eval, ...).
    workdir: the expert cache; the expert goes to `<workdir>/<env_id>/`.
    reevaluate: for a cached expert (and no config.overwrite), rerun the evaluation with
      `config.eval` and rewrite its summary instead of returning the stored one.

  Returns:
    The summary stored in expert.json: expert (greedy and sampled) and random returns over
    `config.eval.num_episodes` episodes, the reference return, the seeds tried and their
    returns, and the training wall time.
  """
  env_id = gymnax_envs.canonical_id(config.env_id)
  ppo_config = ppo.PPOConfig(
    **{
      k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.ppo.to_dict().items()
    }
  )
  return cache.train_or_reuse(
    env_id,
    expert_dir(workdir, env_id),
    config,
    "ppo",
    ppo_config,
    load=lambda: load_expert(workdir, env_id),
    evaluate=lambda expert: _evaluate_expert(config, expert.config, expert.params),
    train_seed=lambda seed, directory: _train_seed(config, ppo_config, seed, directory),
    save=lambda algorithm_config, params, summary: save_expert(
      workdir, env_id, algorithm_config, params, summary
    ),
    reevaluate=reevaluate,
  )


def _train_seed(config, ppo_config: ppo.PPOConfig, seed: int, directory: str) -> tuple[Any, dict]:
  """One seed's (params, summary), trained and evaluated, or found in `directory` from an
  earlier (killed) run of the same recipe."""
  env_id = gymnax_envs.canonical_id(config.env_id)
  recipe = cache.recipe(config, "ppo")
  template = lambda meta: ppo.params_template(env_id, ppo_config)
  if cache.has_expert(directory):
    params, meta = cache.read_expert(directory, template)
    if meta["summary"].get("recipe") == recipe:
      logging.info(
        "%s: seed %d was trained earlier (return %.2f)",
        env_id,
        seed,
        meta["summary"]["expert_return"],
      )
      return params, meta["summary"]

  pace = console.Pace(ppo_config.num_updates * ppo_config.batch_size)

  def log(step, metrics):
    logging.info(
      "%s seed %d step %d: return %.2f entropy %.3f value_loss %.3f",
      env_id,
      seed,
      step,
      metrics["episode_return"],
      metrics["entropy"],
      metrics["value_loss"],
      extra={"console": False},  # Every chunk to the file; the console a line a minute.
    )
    if pace.due(step):
      line = pace.line(step)
      logging.info(
        "%s seed %d: step %s, return %.2f", env_id, seed, line, metrics["episode_return"]
      )

  progress = os.path.join(directory, "progress.pkl")
  start = time.time()
  params, metrics = ppo.train(
    env_id, ppo_config, seed=seed, log_every=config.log_every, log_fn=log, checkpoint=progress
  )
  summary = _evaluate_expert(config, ppo_config, params)
  tail = metrics["episode_return"][-max(1, len(metrics["episode_return"]) // 10) :]
  summary.update(
    train_seconds=round(time.time() - start, 1),
    seed=seed,
    train_timesteps=ppo_config.num_updates * ppo_config.batch_size,
    final_training_return=float(np.nanmean(tail)) if np.isfinite(tail).any() else None,
    recipe=recipe,
  )
  cache.write_expert(
    directory, params, dict(ppo_config=dataclasses.asdict(ppo_config), summary=summary)
  )
  if os.path.exists(progress):
    os.remove(progress)
  return params, summary


def _evaluate_expert(config, ppo_config: ppo.PPOConfig, params) -> dict:
  """The expert's and the random policy's baselines (`episodes.expert_baseline` and
  `random_baseline`: the numbers the task's statistics hold), acting greedily or sampling as
  `config.eval.deterministic` says (the way it generates data), and both ways on
  `config.eval.num_episodes` other episodes, to choose between them."""
  env_id = gymnax_envs.canonical_id(config.env_id)
  n, seed = config.eval.num_episodes, config.eval.seed
  # One policy per way of acting, whose batch agent compiles once (seconds on a loaded CPU) and
  # plays its evaluation episodes and, for the way the data is generated, the expert baseline.
  acting = {
    deterministic: ExpertPolicy(Expert(env_id, ppo_config, params, {}, deterministic))
    for deterministic in (True, False)
  }
  greedy = policy_returns(env_id, acting[True].batch_agent(), n, seed)
  sampled = policy_returns(env_id, acting[False].batch_agent(), n, seed)
  env = gymnax_envs.GymnaxEnvironment(env_id)
  baseline = episodes_lib.baseline_record(
    env, episodes_lib.expert_baseline(env, acting[bool(config.eval.deterministic)])
  )
  random = _random_baseline(env_id)
  logging.info(
    "%s: expert %.2f (%s; greedy %.2f, sampled %.2f over %d other episodes), random %.2f,"
    " reference %.1f",
    env_id,
    baseline["mean_return"],
    "greedy" if config.eval.deterministic else "sampled",
    greedy["mean_return"],
    sampled["mean_return"],
    n,
    random["mean_return"],
    config.reference_return,
  )
  return dict(
    env_id=env_id,
    expert_return=baseline["mean_return"],
    random_return=random["mean_return"],
    reference_return=float(config.reference_return),
    deterministic=bool(config.eval.deterministic),
    expert=baseline,
    greedy=greedy,
    sampled=sampled,
    random=random,
  )


@functools.cache
def _random_baseline(env_id: str) -> dict:
  """The task's random baseline (it does not depend on the expert: measured once a process,
  however many seeds are evaluated)."""
  env = gymnax_envs.GymnaxEnvironment(env_id)
  return episodes_lib.baseline_record(env, episodes_lib.random_baseline(env))
