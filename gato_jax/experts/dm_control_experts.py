"""Trained SAC experts for the DM Control tasks: train, evaluate, cache on disk, reload as policies.

An expert lives in `<workdir>/dm_control/<task>/` (e.g. .../dm_control/cartpole-balance/):
  params.msgpack   the actor's parameters (flax.serialization); critics are not kept;
  expert.json      task, SAC config, evaluation summary (expert and random mean returns over the
                   same episode seeds, published reference, training wall time), versions.
The default workdir is ~/.cache/gato_jax/experts (never the repository), or $GATO_JAX_EXPERTS.
`make_expert(env)` is the `registry.register_expert("dm_control", ...)` factory.

The expert acts deterministically (tanh of the actor's mean) at the interval it was trained at,
the recipe's action repeat: the task's environment holds each action for that many control steps
(`dm_control_envs.ACTION_REPEAT`, which the recipes share), so every stored timestep is one
decision; on an environment that acts more often (SAC's own, every control step) the policy
holds its action over the environment's steps instead.
"""

import dataclasses
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from gato_jax import console
from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import base, policies
from gato_jax.experts import cache, sac

DOMAIN = "dm_control"


class ExpertNotTrainedError(FileNotFoundError, LookupError):
  """A task has no cached expert. A LookupError, as the registry raises for a domain without
  experts, and a FileNotFoundError, as the gymnax experts raise for missing parameters."""


def default_workdir() -> str:
  # Read at call time, so a test (or a shell) can point it elsewhere.
  return os.environ.get("GATO_JAX_EXPERTS", "~/.cache/gato_jax/experts")


def canonical_task(task: str) -> str:
  """ "cartpole-balance", "dm_control/cartpole-balance" -> "cartpole-balance" (checked)."""
  from gato_jax.envs import dm_control_envs

  name = task
  for domain in (DOMAIN, dm_control_envs.PIXELS_DOMAIN):  # A pixel task's expert is its state's.
    name = name.removeprefix(domain + "/")
  if name not in dm_control_envs.TASKS:
    raise ValueError(
      f"unknown DM Control task {task!r}; known tasks: {list(dm_control_envs.TASKS)}"
    )
  return name


def expert_dir(workdir: str, task: str) -> str:
  return os.path.join(os.path.expanduser(workdir), DOMAIN, canonical_task(task))


def train_command(task: str, workdir: str) -> str:
  return (
    f"python tools/train_expert.py --domain={DOMAIN} --env={canonical_task(task)}"
    f" --workdir={workdir}"
  )


@dataclasses.dataclass
class Expert:
  """A reloaded SAC actor for one task."""

  task: str
  config: sac.SACConfig
  obs_keys: tuple[str, ...]
  obs_dim: int
  action_dim: int
  params: Any
  summary: dict
  version: str = ""  # Digest of the parameters (cache.read_expert).

  def __post_init__(self):
    actor = sac.Actor(
      self.action_dim, self.config.hidden_sizes, self.config.log_std_min, self.config.log_std_max
    )
    self._mean_action = jax.jit(lambda params, obs: jnp.tanh(actor.apply(params, obs)[0]))

  def __call__(self, observation: dict) -> np.ndarray:
    """The deterministic action (float32 in [-1, 1]) for one adapter observation."""
    obs = sac.flatten_observation(observation, self.obs_keys)
    return np.asarray(self._mean_action(self.params, obs), np.float32)


class ExpertPolicy(policies.Policy):
  """A cached SAC expert as a `policies.Policy`, acting at the interval it was trained to.

  Args:
    expert: the cached expert.
    state_of: (observation) -> the state dict the expert acts on (pixel tasks).
    env_repeat: control steps the environment holds each action for; the policy holds its own
      for the rest of the expert's action repeat, which must be a multiple of it.
  """

  name = "sac_expert"

  def __init__(
    self,
    expert: Expert,
    state_of: Callable[[Any], dict] | None = None,
    env_repeat: int = 1,
  ):
    repeat = expert.config.action_repeat
    if env_repeat < 1 or repeat % env_repeat:
      raise ValueError(
        f"{expert.task}: the expert acts every {repeat} control steps, which an environment"
        f" holding each action for {env_repeat} cannot give (rebuild the environment with"
        f" action_repeat={repeat} or 1)"
      )
    self.expert = expert
    self.version = expert.version
    # Its baselines (`episodes.baseline_record`), which the task's statistics reuse.
    self.summary = expert.summary
    self.hold = repeat // env_repeat  # Calls each action is held for.
    self._state_of = state_of or (lambda observation: observation)
    self._steps = 0
    self._action = None

  def reset(self, seed: int) -> None:
    del seed  # Deterministic: the episode's seed only fixes the environment's initial state.
    self._steps, self._action = 0, None

  def act(self, observation) -> np.ndarray:
    if self._steps % self.hold == 0:
      self._action = self.expert(self._state_of(observation))
    self._steps += 1
    return self._action


def make_expert(env: base.Environment, workdir: str | None = None) -> ExpertPolicy:
  """The cached expert of `env`'s task (registry factory); ExpertNotTrainedError if absent.

  For a `DMControlPixelsEnv` it is the state task's expert, acting on the state behind each frame.
  """
  expert = load_expert(workdir or default_workdir(), env.name)
  repeat = getattr(env, "action_repeat", 1)
  if hasattr(env, "state_observation"):
    return ExpertPolicy(expert, lambda _: env.state_observation, repeat)
  return ExpertPolicy(expert, env_repeat=repeat)


def has_expert(task: str, workdir: str | None = None) -> bool:
  """Whether `task` ("dm_control/cartpole-balance") has a cached expert (registry check)."""
  directory = expert_dir(workdir or default_workdir(), task)
  return cache.has_expert(directory)


def save_expert(
  workdir: str,
  task: str,
  config: sac.SACConfig,
  obs_keys,
  obs_dim: int,
  action_dim: int,
  params,
  summary: dict,
) -> str:
  """Writes params and metadata atomically (temp files, then rename); returns the directory."""
  return _write(
    expert_dir(workdir, task), task, config, obs_keys, obs_dim, action_dim, params, summary
  )


def _write(directory, task, config, obs_keys, obs_dim, action_dim, params, summary) -> str:
  meta = dict(
    task=f"{DOMAIN}/{canonical_task(task)}",
    sac_config=dataclasses.asdict(config),
    obs_keys=list(obs_keys),
    obs_dim=int(obs_dim),
    action_dim=int(action_dim),
    summary=summary,
    versions=cache.package_versions("jax", "flax", "optax", "dm_control", "mujoco"),
  )
  return cache.write_expert(directory, params, meta)


def load_expert(workdir: str, task: str) -> Expert:
  """Reloads a cached expert; ExpertNotTrainedError naming the training command if absent."""
  directory = expert_dir(workdir, task)
  if not has_expert(task, workdir):
    raise ExpertNotTrainedError(
      f"no expert trained for dm_control/{canonical_task(task)}: {directory} holds no SAC"
      f" parameters; train one with: {train_command(task, workdir)}"
    )
  return _read(directory)


def _read(directory: str) -> Expert:
  config_of = lambda meta: sac.SACConfig(**meta["sac_config"])
  params, meta = cache.read_expert(
    directory,
    lambda meta: sac.SAC(meta["obs_dim"], meta["action_dim"], config_of(meta)).init_actor_params(
      jax.random.key(0)
    ),
  )
  return Expert(
    task=meta["task"],
    config=config_of(meta),
    obs_keys=tuple(meta["obs_keys"]),
    obs_dim=int(meta["obs_dim"]),
    action_dim=int(meta["action_dim"]),
    params=params,
    summary=meta["summary"],
    version=meta["version"],
  )


def sac_config_from(config) -> sac.SACConfig:
  """The SACConfig of a gato_jax/configs/experts/dm_control.py config."""
  return sac.SACConfig(
    **{
      k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.sac.to_dict().items()
    }
  )


def train_expert(config, workdir: str | None = None, reevaluate: bool = False) -> dict:
  """Trains (or reloads) the expert that `config` describes, evaluates it, caches it.

  Seeds `config.seed`, `config.seed + 1`, ... are trained in turn (at most `config.num_seeds`)
  until one reaches `config.target_return`, and the best is kept (`cache.best_of_seeds`): one SAC
  seed is not robust across CPUs. Each seed checkpoints as it trains and keeps its result under
  `<expert dir>/seeds/<seed>/`, so a killed run resumes where it stopped. A cached expert trained
  with another recipe (SAC config, seeds, target) is trained again (`cache.train_or_reuse`).

  Args:
    config: a gato_jax/configs/experts/dm_control.py config (task, seed, sac, eval, ...).
    workdir: the expert cache (default: default_workdir()).
    reevaluate: for a cached expert (and no config.overwrite), rerun the evaluation with
      `config.eval` and rewrite its summary instead of returning the stored one.

  Returns:
    The summary stored in expert.json: the expert's and the random policy's baselines
    (`episodes.expert_baseline` over `config.eval.num_episodes` episodes, `random_baseline`),
    the published reference, the seeds tried and their returns, and the training wall time.
  """
  from gato_jax.envs import dm_control_envs

  workdir = workdir or default_workdir()
  task = canonical_task(config.task)
  env = dm_control_envs.DMControlEnv(task, action_repeat=1)  # SAC repeats its actions itself.
  sac_config = sac_config_from(config)
  obs_keys = sac.observation_keys(env)
  obs_dim, action_dim = sac.problem_dims(env)
  return cache.train_or_reuse(
    env.name,
    expert_dir(workdir, task),
    config,
    "sac",
    sac_config,
    load=lambda: load_expert(workdir, task),
    evaluate=lambda expert: _evaluate_expert(config, env, expert),
    train_seed=lambda seed, directory: _train_seed(config, env, sac_config, seed, directory),
    save=lambda algorithm_config, params, summary: save_expert(
      workdir, task, algorithm_config, obs_keys, obs_dim, action_dim, params, summary
    ),
    reevaluate=reevaluate,
  )


def _train_seed(config, env, sac_config: sac.SACConfig, seed: int, directory: str):
  """One seed's (params, summary), trained and evaluated, or found in `directory` from an
  earlier (killed) run of the same recipe."""
  recipe = cache.recipe(config, "sac")
  if cache.has_expert(directory):
    expert = _read(directory)
    if expert.summary.get("recipe") == recipe:
      logging.info(
        "%s: seed %d was trained earlier (return %.1f)",
        env.name,
        seed,
        expert.summary["expert_return"],
      )
      return expert.params, expert.summary

  pace = console.Pace(sac_config.total_env_steps)

  def log(step, metrics):
    logging.info(
      "%s seed %d step %d: return %.1f q %.1f entropy %.2f alpha %.4f",
      env.name,
      seed,
      step,
      metrics["episode_return"],
      metrics.get("q", float("nan")),
      metrics.get("entropy", float("nan")),
      metrics.get("temperature", float("nan")),
      extra={"console": False},  # Every block to the file; the console a line a minute.
    )
    if pace.due(step):
      line = pace.line(step)
      logging.info(
        "%s seed %d: step %s, return %.1f", env.name, seed, line, metrics["episode_return"]
      )

  start = time.time()
  # Checkpoints as episodes end: a killed run (hours for walker-walk) resumes there.
  progress = os.path.join(directory, "progress.pkl")
  params, history = sac.train(env, sac_config, seed, config.log_every, log, checkpoint=progress)
  train_seconds = time.time() - start
  obs_keys = sac.observation_keys(env)
  obs_dim, action_dim = sac.problem_dims(env)
  expert = Expert(env.name, sac_config, obs_keys, obs_dim, action_dim, params, {})
  summary = _evaluate_expert(config, env, expert)
  tail = history["episode_return"][-5:]
  summary.update(
    train_seconds=round(train_seconds, 1),
    seed=seed,
    train_env_steps=sac_config.agent_steps * sac_config.action_repeat,
    final_training_return=float(tail.mean()) if len(tail) else None,
    recipe=recipe,
  )
  _write(directory, env.name, sac_config, obs_keys, obs_dim, action_dim, params, summary)
  if os.path.exists(progress):
    os.remove(progress)
  return params, summary


def _evaluate_expert(config, env: base.Environment, expert: Expert) -> dict:
  """The expert's returns (deterministic) and the random policy's on the task's environment,
  which acts at the task's interval (`dm_control_envs.ACTION_REPEAT`), not on SAC's `env`:
  `episodes.expert_baseline` and `random_baseline`, the numbers the task's statistics hold (a
  random action held for 8 control steps swings cartpole further than one drawn every step)."""
  from gato_jax.envs import dm_control_envs

  start = time.time()
  task_env = dm_control_envs.DMControlEnv(canonical_task(env.name))
  try:
    expert_stats = episodes_lib.baseline_record(
      task_env,
      episodes_lib.expert_baseline(
        task_env,
        ExpertPolicy(expert, env_repeat=task_env.action_repeat),
        num_episodes=config.eval.num_episodes,
      ),
    )
    random_stats = episodes_lib.baseline_record(task_env, episodes_lib.random_baseline(task_env))
  finally:
    task_env.close()
  logging.info(
    "%s: expert %.1f +- %.1f, random %.1f, reference %.0f (%.0f s)",
    env.name,
    expert_stats["mean_return"],
    expert_stats["std_return"],
    random_stats["mean_return"],
    config.reference_return,
    time.time() - start,
  )
  return dict(
    env_id=env.name,
    expert_return=expert_stats["mean_return"],
    random_return=random_stats["mean_return"],
    reference_return=float(config.reference_return),
    reference=str(config.reference),
    deterministic=True,
    expert=expert_stats,
    random=random_stats,
  )
