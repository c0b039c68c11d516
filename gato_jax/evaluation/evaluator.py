"""`evaluate(config, workdir, params=None, step=None)`: the launcher's and the trainer's entry.

For every control task of the config's mixture (or `eval.tasks`), it plays `eval.episodes`
prompted rollouts of the model in the real environment, scores them against the task's recorded
expert and random returns, aggregates per domain, and writes `workdir/eval/<step>/` reports.
Parameters come from the caller (the trainer's live state) or from the newest (or a given)
checkpoint in `workdir/checkpoints`.
"""

import os
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gato_jax import checkpoint
from gato_jax.data import episodes as episodes_lib
from gato_jax.envs import registry
from gato_jax.evaluation import agents, model_agent, prompts, reports, rollouts, scores
from gato_jax.model import ModelConfig
from gato_jax.model.gato import init_variables
from gato_jax.training.optimizer import OptimizerConfig, make_optimizer
from gato_jax.training.step import TrainState


def restore_params(config: ml_collections.ConfigDict, workdir: str,
                   step: int | None = None) -> tuple[Any, int]:
  """The model parameters of checkpoint `step` (default: the newest readable) on one device.

  Returns:
    (params, the restored step).
  """
  model_config = ModelConfig.from_dict(config.model)
  tx, _ = make_optimizer(OptimizerConfig.from_dict(config.optimizer))

  def init(rng):
    params = nn.unbox(init_variables(model_config, rng))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  # Shapes only: the checkpoint's train state is restored onto one device without building it.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(init, jax.random.key(0)))
  directory = os.path.join(os.path.expanduser(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise checkpoint.CheckpointError(f"no checkpoints directory at {directory}")
  checkpoints = checkpoint.Checkpointer(directory, keep_best=0, async_save=False)
  try:
    restored = checkpoints.restore(abstract, step)
  finally:
    checkpoints.close()
  return restored.state.params, restored.step


def _env_task_names() -> dict[str, str]:
  """SeqIO task name ("gato.babyai.GoToRedBall") -> environment task ("babyai/GoToRedBall")."""
  from gato_jax.data import tasks as data_tasks

  names = {}
  for domain in registry.domains():
    try:
      domain_tasks = registry.list_tasks(domain)
    except ImportError:
      continue
    names.update({data_tasks.task_name(task): task for task in domain_tasks})
  return names


def eval_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """The environment tasks to evaluate: `eval.tasks`, else the mixture's control tasks.

  Raises:
    ValueError: for an unknown task name, or when nothing is left to evaluate.
  """
  if config.eval.tasks:
    names = [t.strip() for t in config.eval.tasks.split(",") if t.strip()]
    for name in names:
      domain, task = registry.split_task_name(name)
      known = registry.list_tasks(domain)  # Raises for unknown domains.
      if name not in known:
        raise ValueError(f"unknown task {name!r} in eval.tasks; {domain} tasks: {known}")
    return names
  from gato_jax.data import presets
  from gato_jax.data import tasks as data_tasks

  data_tasks.register_builtin_tasks(os.path.expanduser(config.data.data_dir))
  weights = presets.resolve(config.data.mixture, data_tasks.available_builtin_tasks())
  env_names = _env_task_names()
  names = sorted(env_names[name] for name in weights if name in env_names)
  skipped = sorted(name for name in weights if name not in env_names)
  if skipped:
    logging.info("not evaluated in environments (no control task): %s", skipped)
  if not names:
    raise ValueError(f"mixture {config.data.mixture!r} has no control task to evaluate;"
                     " set eval.tasks")
  return names


def evaluate_task(task: str, config: ml_collections.ConfigDict, model_config: ModelConfig,
                  params: Any, agent: agents.Agent | None = None,
                  ) -> tuple[scores.TaskScores, episodes_lib.TaskStats, dict]:
  """Rollouts and scores of one task -> (TaskScores, its statistics, timing dict).

  Args:
    task: "<domain>/<task>".
    config: the config (`data.data_dir` and the `eval` group are used).
    model_config, params: the model to evaluate (unused when `agent` is given).
    agent: plays in place of the model when given, e.g. `agents.PolicyAgent(make_expert)` for
      an expert or scripted baseline scored exactly as the model would be.
  """
  data_dir = os.path.expanduser(config.data.data_dir)
  stats = episodes_lib.load_stats(data_dir, task)  # Clear FileNotFoundError when missing.
  scores.check_stats(stats)  # Before any rollout: a missing expert score fails fast.
  make_env = lambda: registry.make_env(task)
  prompt_fn = None
  if agent is None and config.eval.prompt_tokens:
    probe = make_env()
    specs = (probe.observation_spec, probe.action_spec)
    probe.close()
    demos = prompts.load_demonstrations(task, data_dir, stats, *specs,
                                        max_episodes=config.eval.prompt_episodes)
    prompt_fn = prompts.PromptSampler(demos, config.eval.prompt_tokens, task)
  if agent is None:
    agent = model_agent.ModelAgent(model_config, params, prompt_fn,
                                   temperature=config.eval.temperature, seed=config.eval.seed,
                                   headroom=config.eval.context_headroom)
  outcomes, timing = rollouts.run_task(make_env, agent, config.eval.episodes,
                                       config.eval.batch_size, config.eval.seed,
                                       config.eval.max_steps)
  task_scores = scores.score_task(task, outcomes, stats)
  timing_dict = {"agent_seconds": timing.agent_seconds, "env_seconds": timing.env_seconds,
                 "agent_calls": timing.agent_calls, "env_steps": timing.env_steps,
                 "rebuilds": getattr(agent, "num_rebuilds", 0)}
  logging.info("eval %s: return %.4g, normalised %.1f%%, %.3g s per batched step", task,
               task_scores.summary()["return"], 100 * task_scores.summary()["normalized_score"],
               timing.seconds_per_agent_call)
  return task_scores, stats, timing_dict


def evaluate(config: ml_collections.ConfigDict, workdir: str, params: Any = None,
             step: int | None = None) -> dict:
  """Evaluates the model on the config's control tasks and writes the reports.

  Args:
    config: a gato.py config (its `model`, `data` and `eval` groups are used).
    workdir: the run directory; reports go to `workdir/eval/<step>/`.
    params: the parameters to evaluate; None restores them from `workdir/checkpoints`.
    step: with params, the step to file the results under; without, the checkpoint to restore
      (None: the newest).

  Returns:
    The results dict written to results.json ("tasks", "domains", "overall", ...).
  """
  start = time.perf_counter()
  model_config = ModelConfig.from_dict(config.model)
  if params is None:
    params, step = restore_params(config, workdir, step)
  names = eval_tasks(config)
  per_task, stats, timing = {}, {}, {}
  for task in names:
    per_task[task], task_stats, timing[task] = evaluate_task(task, config, model_config, params)
    stats[task] = {"random_return": task_stats.random_return,
                   "expert_return": task_stats.expert_return,
                   "expert_agent": task_stats.expert_agent}
  results = scores.summarize(per_task, config.eval.bootstrap_resamples, config.eval.seed)
  calls = sum(t["agent_calls"] for t in timing.values())
  results.update(
      step=step, stats=stats, per_task_timing=timing,
      timing={"agent_calls": calls,
              "seconds_per_agent_call": sum(t["agent_seconds"] for t in timing.values()) / max(calls, 1),
              "env_steps": sum(t["env_steps"] for t in timing.values()),
              "batch_size": config.eval.batch_size,
              "total_seconds": time.perf_counter() - start},
      config={"model": config.model.to_dict(), "eval": config.eval.to_dict(),
              "mixture": config.data.mixture})
  if jax.process_index() == 0:
    paths = reports.write(results, reports.results_dir(workdir, step))
    logging.info("evaluation reports: %s", paths)
  return results


def scalar_metrics(results: dict) -> dict[str, float]:
  """The `eval/...` scalars the trainer logs (and ranks checkpoints by)."""
  overall = results["overall"]
  metrics = {"eval/normalized_score": overall["mean"], "eval/iqm": overall["iqm"],
             "eval/above_50_fraction": overall["above_50_fraction"]}
  for domain, agg in results["domains"].items():
    metrics[f"eval/{domain}/normalized_score"] = agg["mean"]
    metrics[f"eval/{domain}/iqm"] = agg["iqm"]
  for task, row in results["tasks"].items():
    metrics[f"eval/{task}/return"] = row["return"]
    metrics[f"eval/{task}/normalized_score"] = row["normalized_score"]
  return metrics
