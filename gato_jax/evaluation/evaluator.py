"""`evaluate(config, workdir, params=None, step=None)`: the launcher's and the trainer's entry.

For every control task of the config's mixture (or `eval.tasks`), it plays `eval.episodes`
prompted rollouts of the model in the real environment (gymnax tasks stepped under jit, the
others in a host loop), scores them against the task's recorded expert and random returns,
aggregates per domain, and writes `workdir/eval/<step>/` reports. Text and vision-language
tasks of the mixture (or `eval.tasks`) are scored on `eval.non_control_examples` held-out
examples each: perplexity, captioning BLEU-4 / CIDEr-D, VQA accuracy (`non_control`).
Parameters come from the caller (the trainer's live state) or from the newest (or a given)
checkpoint in `workdir/checkpoints`.
"""

import hashlib
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from gato_jax import checkpoint, files, sharding
from gato_jax.data import catalogue
from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import gymnax_envs, registry, runner
from gato_jax.evaluation import model_agent, non_control, prompts, reports, rollouts, scores
from gato_jax.model import ModelConfig, abstract_params


# Results sections of the non-control tasks, and their scalars worth logging.
NON_CONTROL_SECTIONS = ("text", "vision_language")
NON_CONTROL_METRICS = ("perplexity", "bleu4", "cider", "vqa_accuracy")


def restore_params(
  config: ml_collections.ConfigDict,
  workdir: str,
  step: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[Any, int]:
  """The model parameters of checkpoint `step` (default: the newest readable), sharded.

  Each parameter is read straight into its shards on `mesh` (default: the config's
  `mesh.shape` over every device) under the config's `mesh.rules`, as the trainer lays them out,
  so a model too large for one device evaluates on the mesh; no device ever holds the whole
  state. On one device the mesh is that device. Only the parameters are read: the optimizer
  state is neither read nor described (no optimizer code runs).

  Returns:
    (params, the restored step).
  """
  if mesh is None:
    mesh = sharding.create_mesh(tuple(config.mesh.shape))
  abstract, _ = abstract_params(ModelConfig.from_dict(config.model), mesh, config.mesh.rules)
  directory = files.join(files.resolve(workdir), checkpoint.CHECKPOINTS_DIR)
  if not files.isdir(directory):
    raise checkpoint.CheckpointError(f"no checkpoints directory at {directory}")
  checkpoints = checkpoint.Checkpointer(directory, keep_best=0, async_save=False)
  try:
    return checkpoints.restore_params(abstract, step)
  finally:
    checkpoints.close()


def _requested_tasks(config: ml_collections.ConfigDict) -> list[str]:
  return [t.strip() for t in config.eval.tasks.split(",") if t.strip()]


def _mixture_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """The tasks of the config's mixture whose data exists (no store is opened)."""
  from gato_jax.data import pipeline

  return list(pipeline.mixture_weights(config.data))


def task_episodes(config: ml_collections.ConfigDict, task: str) -> int:
  """Rollouts of `task`: `eval.task_episodes`' count for the task or else its domain
  ("dm_control_pixels=10,gymnax/CartPole-v1=50"), else `eval.episodes`.

  Raises:
    ValueError: for an entry that is not name=positive integer.
  """
  spec = config.eval.get("task_episodes", "")
  return catalogue.count_for(task, spec, config.eval.episodes, "eval.task_episodes")


def eval_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """The environment tasks to evaluate: those of `eval.tasks`, else the mixture's control tasks.

  Text and vision-language names in `eval.tasks` are left to `non_control_tasks`.

  Raises:
    ValueError: for an unknown task name.
  """
  from gato_jax.sources import example_sets

  if config.eval.tasks:
    names = []
    for name in _requested_tasks(config):
      domain, task = registry.split_task_name(name)
      if domain in example_sets.domains():
        continue
      known = registry.list_tasks(domain)  # Raises for unknown domains.
      if name not in known:
        raise ValueError(f"unknown task {name!r} in eval.tasks; {domain} tasks: {known}")
      names.append(name)
    return names
  weights = _mixture_tasks(config)
  infos = [catalogue.task_info(n) for n in weights]
  names = sorted(info.name for info in infos if info.kind == "control" and info.builtin)
  skipped = sorted(set(weights) - set(names))
  if skipped:
    logging.info("not evaluated in environments (no control task): %s", skipped)
  return names


def non_control_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """The text and vision-language tasks ("<domain>/<task>") to evaluate on held-out data.

  Those named in `eval.tasks`, else the mixture's; none when `eval.non_control_examples` is 0.

  Raises:
    ValueError: for an unknown text or vision-language task in `eval.tasks`.
  """
  from gato_jax.data import catalogue
  from gato_jax.sources import example_sets

  if not config.eval.get("non_control_examples", 0):
    return []
  domains = example_sets.domains()
  if config.eval.tasks:
    names = [n for n in _requested_tasks(config) if registry.split_task_name(n)[0] in domains]
    for name in names:
      known = example_sets.list_tasks(registry.split_task_name(name)[0])
      if name not in known:
        raise ValueError(f"unknown task {name!r} in eval.tasks; known: {known}")
    return names
  weights = _mixture_tasks(config)
  infos = [catalogue.task_info(n) for n in weights]
  return sorted(info.name for info in infos if info.kind != "control" and info.builtin)


def evaluate_non_control_task(
  task: str, config: ml_collections.ConfigDict, model_config: ModelConfig, params: Any
) -> tuple[str, dict]:
  """Scores one text or vision-language task on its held-out split.

  Returns:
    (the results section, "text" or "vision_language"; the task's results: perplexity for
    text, BLEU-4 / CIDEr-D and samples for captioning, accuracy and samples for VQA).

  Raises:
    FileNotFoundError: if the task's data has not been generated.
  """
  from gato_jax.data import examples as example_io
  from gato_jax.data import pipeline, rlds_io
  from gato_jax.sources import example_sets
  from gato_jax.tokenizer.text import TextTokenizer

  start = time.perf_counter()
  data_dir = os.path.expanduser(config.data.data_dir)
  domain, _ = registry.split_task_name(task)
  source = rlds_io.dataset_dir(
    data_dir, example_sets.make_task(task).dataset, rlds_io.config_name(task)
  )
  if not os.path.isfile(os.path.join(source, "dataset_info.json")):
    raise FileNotFoundError(
      f"no generated data of {task!r} at {source}; generate it with tools/generate_data.py"
      f" --domain={domain} --data_dir={data_dir}, or leave it out of eval.tasks"
    )
  limit, batch_size = config.eval.non_control_examples, config.eval.batch_size
  split = non_control.HELD_OUT_SPLIT
  if domain == "text":
    pipeline.register_config_tasks(config.data)
    # The derived store of the held-out split: the reader training uses.
    held_out = pipeline.task_store(task, config.data, split)
    documents = [held_out.read(i) for i in range(min(limit, len(held_out)))]
    row = non_control.evaluate_text(
      model_config, params, documents, config.train.seq_len, batch_size
    )
  else:
    if "question" in example_io.load_split(source, split).element_spec:
      examples = example_io.load_vqa(source, split)
    else:
      examples = example_io.load_captioning(source, split, all_captions=False)
    row = non_control.evaluate_vision_language(
      model_config, params, list(example_io.read(examples, limit)), TextTokenizer(), batch_size
    )
  row["seconds"] = time.perf_counter() - start
  logging.info("eval %s: %s", task, {k: v for k, v in row.items() if isinstance(v, float)})
  return ("text" if domain == "text" else "vision_language"), row


def evaluate_task(
  task: str,
  config: ml_collections.ConfigDict,
  model_config: ModelConfig,
  params: Any,
  agent: runner.Agent | None = None,
) -> tuple[scores.TaskScores, episodes_lib.TaskStats, dict]:
  """Rollouts and scores of one task -> (TaskScores, its statistics, timing dict).

  Args:
    task: "<domain>/<task>".
    config: the config (`data.data_dir` and the `eval` group are used).
    model_config, params: the model to evaluate (unused when `agent` is given).
    agent: plays in place of the model when given, e.g. `runner.PolicyAgent(registry.make_expert)` for
      an expert or scripted baseline scored exactly as the model would be.
  """
  data_dir = os.path.expanduser(config.data.data_dir)
  stats = episodes_lib.load_stats(data_dir, task)  # Clear FileNotFoundError when missing.
  scores.check_stats(stats)  # Before any rollout: a missing expert score fails fast.
  make_env = lambda: registry.make_env(task)
  if agent is None:
    demos = []
    if config.eval.prompt_tokens:
      from gato_jax.data import pipeline

      demos = prompts.load_demonstrations(
        task,
        data_dir,
        config.eval.prompt_episodes,
        config.data.get("derived_dir", ""),
        pipeline.episode_limit(config.data, task),
        config.data.get("action_noise", ""),
      )
    # Built (and its eval.prompt_from checked) even without a prompt budget; it then gives None.
    prompt_fn = prompts.PromptSampler(
      demos, config.eval.prompt_tokens, task, config.eval.get("prompt_from", "end")
    )
    agent = model_agent.ModelAgent(
      model_config,
      params,
      prompt_fn,
      temperature=config.eval.temperature,
      seed=config.eval.seed,
      headroom=config.eval.context_headroom,
      memory=config.eval.get("memory", "refill"),
    )
  make_batch = runner.host_batch(make_env)
  if registry.domain_of(task) == "gymnax" and config.eval.get("jit_envs", True):
    # Pure-JAX environments: the whole batch resets and steps in one jitted call.
    make_batch = lambda num_envs: gymnax_envs.GymnaxBatch(task, num_envs)
  outcomes, timing = rollouts.run_task(
    make_batch,
    agent,
    task_episodes(config, task),
    config.eval.batch_size,
    config.eval.seed,
    config.eval.max_steps,
  )
  task_scores = scores.score_task(task, outcomes, stats)
  timing_dict = {
    "agent_seconds": timing.agent_seconds,
    "env_seconds": timing.env_seconds,
    "agent_calls": timing.agent_calls,
    "env_steps": timing.env_steps,
    "rebuilds": getattr(agent, "num_rebuilds", 0),
  }
  logging.info(
    "eval %s: return %.4g, normalised %.1f%%, %.3g s per batched step",
    task,
    task_scores.summary()["return"],
    100 * task_scores.summary()["normalized_score"],
    timing.seconds_per_agent_call,
  )
  return task_scores, stats, timing_dict


def anchors(stats: episodes_lib.TaskStats) -> dict:
  """What a task's normalised scores are measured against, as the results record it."""
  return {
    "random_return": stats.random_return,
    "expert_return": stats.expert_return,
    "expert_agent": stats.expert_agent,
  }


class TaskResults:
  """Each finished task's results under `<reports>/tasks/`, so a killed evaluation resumes.

  An evaluation of many tasks runs for an hour on two cores; a rerun of the same evaluation
  (same parameters, eval settings, model and mixture, fingerprinted) takes the saved tasks
  instead of playing them again. Single-process only: on several hosts every process must run
  the same collectives, which a file one host cannot see would break.
  """

  def __init__(self, out_dir: str, config: ml_collections.ConfigDict, params: Any):
    self.directory = files.join(out_dir, "tasks")
    self.fingerprint = fingerprint(config, params)

  def _path(self, task: str) -> str:
    from gato_jax.data import catalogue

    return files.join(self.directory, catalogue.seqio_name(task) + ".json")

  def load(self, task: str) -> dict | None:
    """The task's saved results if this evaluation saved them, else None."""
    try:
      saved = files.read_json(self._path(task))
    except (OSError, ValueError):  # Missing, or cut short by a kill: play the task again.
      return None
    if saved.get("fingerprint") != self.fingerprint:
      return None
    logging.info("eval %s: results of an earlier run of this evaluation", task)
    return saved["results"]

  def save(self, task: str, results: dict) -> None:
    files.write_json(self._path(task), {"fingerprint": self.fingerprint, "results": results})


@jax.jit
def _leaf_moments(leaves: list) -> list:
  # Module-level so that every evaluation of a run (one per eval interval) reuses one compile.
  return [
    jnp.stack([jnp.sum(x, dtype=jnp.float32), jnp.sum(jnp.square(x), dtype=jnp.float32)])
    for x in leaves
  ]


# eval fields that select tasks or summarise them, never what a task's episodes are.
FINGERPRINT_IGNORES = ("tasks", "every_steps", "bootstrap_resamples")


def fingerprint(config: ml_collections.ConfigDict, params: Any) -> str:
  """A digest of what an evaluation's results depend on: the parameters (each leaf's sum and
  sum of squares), the model, the eval settings, the mixture and the data directory."""
  leaves = jax.tree.leaves(params)
  digest = hashlib.sha256()
  for value in jax.device_get(_leaf_moments(leaves)):
    digest.update(value.tobytes())
  # Fields that cannot change a task's episodes are left out: adding a task to eval.tasks (a
  # task's episode seeds do not depend on the others) must not replay the finished ones.
  eval_settings = {k: v for k, v in config.eval.to_dict().items() if k not in FINGERPRINT_IGNORES}
  settings = {
    "model": config.model.to_dict(),
    "eval": eval_settings,
    "mixture": config.data.mixture,
    "data_dir": config.data.data_dir,
    "shapes": [list(x.shape) for x in leaves],
  }
  digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
  return digest.hexdigest()


def evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  params: Any = None,
  step: int | None = None,
  output_dir: str | None = None,
) -> dict:
  """Evaluates the model on the config's control tasks and writes the reports.

  Args:
    config: a gato.py config (its `model`, `data` and `eval` groups are used).
    workdir: the run directory; reports go to `workdir/eval/<step>/`.
    params: the parameters to evaluate; None restores them from `workdir/checkpoints`.
    step: with params, the step to file the results under; without, the checkpoint to restore
      (None: the newest).
    output_dir: where the reports go instead of `workdir/eval/<step>/` (e.g. one folder per
      evaluation variant of the same checkpoint).

  Returns:
    The results dict written to results.json ("tasks", "domains", "overall", ...).
  """
  start = time.perf_counter()
  sharding.require_one_host("evaluation")
  model_config = ModelConfig.from_dict(config.model)
  if params is None:
    params, step = restore_params(config, workdir, step)
  names, extra = eval_tasks(config), non_control_tasks(config)
  if not names and not extra:
    raise ValueError(
      f"nothing to evaluate: mixture {config.data.mixture!r} has no control, text"
      " or vision-language task with data; set eval.tasks"
    )
  out_dir = files.resolve(output_dir) if output_dir else reports.results_dir(workdir, step)
  done = TaskResults(out_dir, config, params) if jax.process_count() == 1 else None
  per_task, stats, timing = {}, {}, {}
  data_dir = os.path.expanduser(config.data.data_dir)
  for task in names:
    saved = done.load(task) if done else None
    if saved is not None and saved["stats"] != anchors(episodes_lib.load_stats(data_dir, task)):
      saved = None  # The task's expert or random baseline was measured again since.
    if saved is None:
      task_scores, task_stats, task_timing = evaluate_task(task, config, model_config, params)
      saved = {
        "scores": task_scores.to_json(),
        "stats": anchors(task_stats),
        "timing": task_timing,
      }
      if done:
        done.save(task, saved)
    per_task[task] = scores.TaskScores.from_json(saved["scores"])
    stats[task], timing[task] = saved["stats"], saved["timing"]
  if per_task:
    results = scores.summarize(per_task, config.eval.bootstrap_resamples, config.eval.seed)
  else:
    results = {"tasks": {}, "domains": {}, "overall": None}
  for task in extra:
    saved = done.load(task) if done else None
    if saved is None:
      section, row = evaluate_non_control_task(task, config, model_config, params)
      saved = {"section": section, "row": row}
      if done:
        done.save(task, saved)
    results.setdefault(saved["section"], {})[task] = saved["row"]
  calls = sum(t["agent_calls"] for t in timing.values())
  results.update(
    step=step,
    stats=stats,
    per_task_timing=timing,
    timing={
      "agent_calls": calls,
      "seconds_per_agent_call": sum(t["agent_seconds"] for t in timing.values()) / max(calls, 1),
      "env_steps": sum(t["env_steps"] for t in timing.values()),
      "batch_size": config.eval.batch_size,
      "total_seconds": time.perf_counter() - start,
    },
    config={
      "model": config.model.to_dict(),
      "eval": config.eval.to_dict(),
      "mixture": config.data.mixture,
    },
  )
  if jax.process_index() == 0:
    paths = reports.write(results, out_dir)
    logging.info("evaluation reports: %s", paths)
  return results


def scalar_metrics(results: dict) -> dict[str, float]:
  """The `eval/...` scalars the trainer logs (and ranks checkpoints by)."""
  metrics = {}
  overall = results.get("overall")
  if overall:
    metrics.update(
      {
        "eval/normalized_score": overall["mean"],
        "eval/iqm": overall["iqm"],
        "eval/above_50_fraction": overall["above_50_fraction"],
      }
    )
  for domain, agg in results.get("domains", {}).items():
    metrics[f"eval/{domain}/normalized_score"] = agg["mean"]
    metrics[f"eval/{domain}/iqm"] = agg["iqm"]
  for task, row in results.get("tasks", {}).items():
    metrics[f"eval/{task}/return"] = row["return"]
    metrics[f"eval/{task}/normalized_score"] = row["normalized_score"]
  for section in NON_CONTROL_SECTIONS:
    for task, row in results.get(section, {}).items():
      for key in NON_CONTROL_METRICS:
        if row.get(key) is not None:
          metrics[f"eval/{task}/{key}"] = row[key]
  return metrics
