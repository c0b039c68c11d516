"""The training loop: `train_and_evaluate(config, workdir)`, which launchers and tests call.

It joins a multi-host job when told to, builds the mesh, opens the derived stores of the
mixture's tasks (built from their SeqIO Tasks on first use), initialises (or resumes) the sharded train state and the data stream from the
newest readable checkpoint in `workdir/checkpoints`, and trains, logging metrics and saving
checkpoints as configured. `train.stop_at_step` ends the run early exactly as a preemption
would: after a checkpoint, with nothing else changed, so rerunning without it finishes the run.

Preemption: a SIGTERM on any host (how TPU VMs are told they will be preempted or maintained)
makes every host agree on one step (`training.preemption`), save a checkpoint there with the data
stream's state, and raise `preemption.Preempted`; the launchers then print one line and exit with
status `PREEMPTED_EXIT_CODE` (42), so that a scheduler starts the same command again, which
resumes with exactly the losses of an uninterrupted run.

`train.profile_steps="START,COUNT"` writes a `jax.profiler` trace of those steps into
`<workdir>/profile/` (TensorBoard's profile plugin reads it).
"""

import functools
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from gato_jax import checkpoint, files, sharding, workdir_lock
from gato_jax.data import catalogue, mixture, pipeline
from gato_jax.model import ModelConfig
from gato_jax.training import flops, metrics_log, preemption, profiler
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import (
  abstract_param_count,
  abstract_train_state,
  host_budget,
  initial_train_state,
  make_train_step,
)

# The exit status of a launcher whose run was preempted after saving: rerun the same command.
PREEMPTED_EXIT_CODE = preemption.PREEMPTED_EXIT_CODE


def _check_config(config: ml_collections.ConfigDict, mesh) -> None:
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % data_parallel:
    raise ValueError(
      f"train.batch_size {config.train.batch_size} is not divisible by the"
      f" {data_parallel} data-parallel shards of mesh {dict(mesh.shape)}"
    )
  if config.train.stop_at_step < 0 or config.train.stop_at_step > config.train.steps:
    raise ValueError(
      f"train.stop_at_step must be in [0, train.steps={config.train.steps}],"
      f" got {config.train.stop_at_step}"
    )
  profiler.parse_steps(config.train.profile_steps)  # A malformed value fails here, not mid-run.
  if "eval" in config and config.eval.every_steps:
    sharding.require_one_host("evaluation during training (eval.every_steps)")


def build_data(
  config: ml_collections.ConfigDict,
  patch_dim: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> mixture.MixtureIterator:
  """The training stream: this process's rows of each batch of the configured mixture.

  `gato_jax.data.pipeline.open_run_data`: registers the built-in tasks for the run's data
  directory and the modules of `data.imports`, resolves `data.mixture`, and opens each task's
  derived store (building it on first use), of which this process samples only the data shards
  its rows draw from (`data.num_shards`).

  Args:
    config: the run's config.
    patch_dim: the model's patch vector size.
    process_index, process_count: whose rows to build (default: this process's, of
      `jax.process_count()`), e.g. to build every host's share in one process.
  """
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  return pipeline.open_run_data(config.data).iterator(
    config.train.batch_size,
    config.train.seq_len,
    config.train.max_patches,
    patch_dim,
    process_index,
    process_count,
  )


def _global_max(values: tuple[int, ...]) -> tuple[int, ...]:
  """The elementwise maximum of `values` over all processes (every process must call this)."""
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(np.asarray(values, np.int32))
  return tuple(int(v) for v in np.max(gathered, axis=0))


def _domain_losses(metrics: dict, data: mixture.MixtureIterator, step: int) -> dict:
  """Replaces the per-row loss sums with the loss of each domain in the batch."""
  metrics = dict(metrics)
  row_loss, row_targets = metrics.pop("row_loss_sum"), metrics.pop("row_targets")
  totals: dict[str, list[float]] = {}
  for row in range(len(row_loss)):
    domain = catalogue.task_domain(data.row_task(step, row))
    total = totals.setdefault(domain, [0.0, 0.0])
    total[0] += float(row_loss[row])
    total[1] += float(row_targets[row])
  for domain, (loss_sum, count) in totals.items():
    if count:
      metrics[metrics_log.DOMAIN_LOSS_PREFIX + domain] = loss_sum / count
  return metrics


def _with_task_names(data_state: dict) -> dict:
  """The data state with tasks under their names: runs saved before built-in tasks were named
  "<domain>/<task>" recorded their SeqIO names, and resume as they would have."""
  state = dict(data_state)
  state["tasks"] = [catalogue.canonical_name(t) for t in state.get("tasks", [])]
  state["sources"] = {
    catalogue.canonical_name(t): v for t, v in (state.get("sources") or {}).items()
  }
  return state


# What a run writes into its workdir, besides the logs of the process that is writing them.
RUN_OUTPUTS = (checkpoint.CHECKPOINTS_DIR, "metrics.jsonl", "tensorboard", "eval")


def set_aside(workdir: str) -> str:
  """Moves a run's outputs into `<workdir>/set_aside/<time>/` (so that a new run can start there
  and nothing is deleted); returns that folder."""
  workdir = files.resolve(workdir)
  target = files.join(workdir, "set_aside", time.strftime("%Y%m%d-%H%M%S"))
  with workdir_lock.WorkdirLock(workdir, jax.process_index()):
    files.makedirs(target)
    for name in RUN_OUTPUTS:
      if files.exists(files.join(workdir, name)):
        files.move(files.join(workdir, name), files.join(target, name))
  return target


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming if `workdir` holds a checkpoint); returns the last logged metrics.

  The run holds `workdir`'s lock throughout: a second trainer on it refuses at once
  (`workdir_lock.WorkdirLockedError`) instead of mixing its checkpoints and metrics in.

  Raises:
    preemption.Preempted: after saving the checkpoint of the step all hosts stopped at on a
      SIGTERM (see the module docstring).
  """
  sharding.initialize_from_config(config)
  workdir = files.resolve(workdir)  # A local path or a URI (gs://...).
  with workdir_lock.WorkdirLock(workdir, jax.process_index()):
    return _train_holding_workdir(config, workdir)


def _train_holding_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  mesh_cfg = config.mesh
  model_config = ModelConfig.from_dict(config.model)
  optimizer_config = OptimizerConfig.from_dict(config.optimizer)
  mesh = sharding.create_mesh(tuple(mesh_cfg.shape))
  rules = sharding.axis_rules(mesh_cfg.rules)
  _check_config(config, mesh)
  data = build_data(config, model_config.patch_dim)

  abstract_state, trainer = abstract_train_state(
    model_config, optimizer_config, mesh, rules, config.train.action_loss_vocab
  )
  num_params = abstract_param_count(model_config)
  logging.info(
    "model %s: %d parameters; mesh %s, rules %s",
    config.model.size,
    num_params,
    dict(mesh.shape),
    mesh_cfg.rules,
  )
  checkpoints = checkpoint.Checkpointer(
    files.join(workdir, checkpoint.CHECKPOINTS_DIR),
    save_interval_steps=config.checkpoint.every_steps,
    keep_last=config.checkpoint.keep,
    keep_best=config.checkpoint.keep_best,
    best_metric="eval/normalized_score",
    async_save=config.checkpoint.async_save,
  )
  start = 0
  if checkpoints.latest_step() is not None:
    # Unreadable checkpoints are moved aside, so their steps are saved again. A resumed run
    # never builds a fresh state: the checkpoint is read straight into the state's shards.
    restored = checkpoints.restore(abstract_state, quarantine=True)
    state, start = restored.state, restored.step
    data.set_state(_with_task_names(restored.data_state))
    logging.info("resumed from step %d in %s", start, checkpoints.directory)
  else:
    state = initial_train_state(trainer, jax.random.key(config.train.seed))

  stop = config.train.stop_at_step or config.train.steps
  logger = metrics_log.MetricsLogger(
    workdir, config.train.steps, tensorboard=config.log.tensorboard, resume_step=start
  )
  example, _ = data.batch_at(start)
  train_step = make_train_step(
    trainer, sharding.global_batch(example, mesh, rules), config.train.microbatches
  )
  rng = jax.random.key(config.train.seed + 1)
  tokens_per_step = config.train.batch_size * config.train.seq_len
  # Model FLOPs of a step: the output projection counts at the logits its budget computes.
  step_flops = functools.cache(
    lambda budget: (
      tokens_per_step
      * flops.train_flops_per_token(
        model_config,
        num_params,
        config.train.seq_len,
        None
        if budget.targets is None
        else budget.full_logits(trainer.model.vocab_size)
        * budget.groups
        * config.train.microbatches
        / config.train.batch_size,
      )
    )
  )
  peak = flops.peak_flops()
  values: dict[str, Any] = {}
  interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
  eval_every = config.eval.every_steps if "eval" in config else 0
  batches = data.stream(
    start, stop, threads=config.data.read_threads, processes=config.data.read_processes
  )
  trace = profiler.StepProfiler(
    files.join(workdir, profiler.PROFILE_DIR), profiler.parse_steps(config.train.profile_steps)
  )
  preempted = False
  with preemption.PreemptionGuard() as guard:
    for step in range(start, stop):
      trace.before(step + 1)
      local_batch = next(batches)
      data.step = step + 1
      budget = host_budget(
        trainer,
        local_batch,
        config.train.microbatches,
        config.train.logits_at_targets_only,
        _global_max,
      )
      state, metrics = train_step(
        state, sharding.global_batch(local_batch, mesh, rules), rng, budget=budget
      )
      interval_steps += 1
      interval_flops += step_flops(budget)
      done = step + 1
      trace.after(done, metrics)
      if done % config.log.every_steps == 0 or done == stop:
        metrics = jax.device_get(metrics)  # Waits for the step: the interval's time is real.
        seconds = (time.perf_counter() - interval_start) / interval_steps
        values = logger.write(
          done,
          {
            **_domain_losses(metrics, data, step),
            "step_seconds": seconds,
            "tokens_per_second": tokens_per_step / seconds,
            "flops_per_second": interval_flops / interval_steps / seconds,
            # Model FLOPs utilisation against the devices' dense peak (absent on CPUs).
            **({"mfu": interval_flops / interval_steps / seconds / peak} if peak else {}),
          },
        )
        logger.progress(done, values)
        interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
      eval_metrics = {}
      if eval_every and done % eval_every == 0:
        # Imported here: evaluation pulls in the environments, which training alone never needs.
        from gato_jax.evaluation import evaluator

        results = evaluator.evaluate(config, workdir, params=state.params, step=done)
        eval_metrics = evaluator.scalar_metrics(results)
        logger.write(done, eval_metrics)
      # Every process asks at every step: JAX's sync protocol needs all of them to.
      preempted = guard.reached(done)
      if checkpoints.should_save(done) or done == stop or preempted:
        # The eval score ranks checkpoints for keep_best; steps saved without one are kept by
        # recency only, so choose eval.every_steps as a multiple of checkpoint.every_steps.
        checkpoints.save(done, state, data.get_state(), metrics=eval_metrics)
      if preempted:
        break
  trace.stop(state)
  checkpoints.wait()
  checkpoints.close()
  logger.close()
  if preempted:
    raise preemption.Preempted(done, checkpoints.directory)
  if stop < config.train.steps:
    logging.info(
      "stopped at step %d of %d (train.stop_at_step); rerun to continue", stop, config.train.steps
    )
  return values
