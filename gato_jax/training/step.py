"""Train state, sharded initialisation, the masked loss and the pure train step.

`create_train_state` never builds the model on one device: it traces initialisation with
`jax.eval_shape`, derives every leaf's NamedSharding from its logical axis names, and runs the
initialiser under `jax.jit(out_shardings=...)`, so each device materialises only its shard.
`make_train_step` jits the module-level `train_step` with explicit in/out shardings and donates
the old state.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gato_jax import sharding
from gato_jax.model.config import ModelConfig
from gato_jax.model.gato import Gato, count_params, init_variables
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.constants import TokenKind
from gato_jax.training.optimizer import OptimizerConfig, make_optimizer


@flax.struct.dataclass
class TrainState:
  step: Any  # int32 scalar
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What a jitted step closes over: model, optimizer, mesh and the shardings of the state."""

  model: Gato
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  rules: tuple
  state_shardings: Any


def _state_initializer(model_config: ModelConfig, tx: optax.GradientTransformation):
  def init_boxed(rng):
    params = init_variables(model_config, rng)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init_boxed


def abstract_train_state(
  model_config: ModelConfig, optimizer_config: OptimizerConfig, mesh: jax.sharding.Mesh, rules
) -> tuple[TrainState, Trainer]:
  """The state as ShapeDtypeStructs carrying their shardings, and its Trainer; no memory used.

  What ahead-of-time compilation (tools/aot_compile.py) lowers the step with, for a mesh of
  devices that need not be present.
  """
  rules = sharding.axis_rules(rules)
  tx, schedule = make_optimizer(optimizer_config)
  abstract = jax.eval_shape(_state_initializer(model_config, tx), jax.random.key(0))
  state_shardings = sharding.logical_shardings(abstract, mesh, rules)
  state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    nn.unbox(abstract),
    state_shardings,
  )
  return state, Trainer(Gato(model_config), tx, schedule, mesh, rules, state_shardings)


def create_train_state(
  model_config: ModelConfig, optimizer_config: OptimizerConfig, mesh: jax.sharding.Mesh, rules, rng
) -> tuple[TrainState, Trainer]:
  """Initialises parameters and optimizer state directly into their shards."""
  _, trainer = abstract_train_state(model_config, optimizer_config, mesh, rules)
  init_boxed = _state_initializer(model_config, trainer.tx)
  # No ambient mesh here: flax's DenseGeneral would constrain its flat kernel with the names of
  # the reshaped one. The out_shardings alone place every shard.
  state = jax.jit(lambda r: nn.unbox(init_boxed(r)), out_shardings=trainer.state_shardings)(rng)
  return state, trainer


def target_mask(batch: Batch):
  """bool [B, T-1]: position t's prediction of token t + 1 counts in the loss.

  Targets are text and action tokens (the tokenizer's loss mask); a target in a different packed
  segment than its predictor is not a next token, so it is dropped.
  """
  mask = batch.loss_mask[:, 1:] & (batch.segment_ids[:, 1:] == batch.segment_ids[:, :-1])
  return mask & (batch.segment_ids[:, 1:] > 0)


def max_targets_per_row(batch: Batch) -> int:
  """The largest number of loss targets in any row of a host (numpy) batch."""
  return int(np.asarray(target_mask(jax.tree.map(np.asarray, batch))).sum(axis=1).max(initial=0))


def target_bucket(count: int, seq_len: int) -> int:
  """A static logits budget K >= count: powers of two, so few shapes ever compile."""
  return int(min(max(16, 1 << max(count - 1, 0).bit_length()), seq_len - 1))


def masked_next_token_loss(logits, batch: Batch, positions=None):
  """Cross-entropy of next-token predictions on target tokens only.

  Args:
    logits: [B, T, V] for every position, or [B, K, V] for `positions` only.
    batch: the inputs (tokens, kinds, loss mask, segments).
    positions: int32 [B, K] predictor positions the logits belong to (see `target_positions`).

  Returns:
    (mean loss over targets, metrics dict with per-kind losses, accuracies and target counts).
  """
  mask = target_mask(batch)
  targets = batch.tokens[:, 1:]  # [B, T-1]
  target_kinds = batch.kinds[:, 1:]
  if positions is None:
    logits = logits[:, :-1]
  else:
    # Positions past a row's real targets are fill: weighted out below.
    take = lambda a: jnp.take_along_axis(a, positions, axis=1)
    mask = take(mask) & (
      jnp.arange(positions.shape[1]) < jnp.sum(target_mask(batch), 1, keepdims=True)
    )
    targets, target_kinds = take(targets), take(target_kinds)
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = mask.astype(jnp.float32)
  count = jnp.sum(weights)
  loss = jnp.sum(nll * weights) / jnp.maximum(count, 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  # Per-row sums let the host split the loss by each row's task or domain.
  metrics = {
    "loss": loss,
    "target_tokens": count,
    "row_loss_sum": jnp.sum(nll * weights, axis=1),
    "row_targets": jnp.sum(weights, axis=1),
  }
  for name, kind in (("text", TokenKind.TEXT), ("action", TokenKind.VALUE)):
    kind_weights = weights * (target_kinds == kind)
    kind_count = jnp.sum(kind_weights)
    metrics[f"accuracy_{name}"] = jnp.sum(correct * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"loss_{name}"] = jnp.sum(nll * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"{name}_tokens"] = kind_count
  return loss, metrics


def target_positions(batch: Batch, num_targets: int):
  """int32 [B, K]: each row's predictor positions of its targets, first K, padded with 0."""
  return jax.vmap(lambda row: jnp.nonzero(row, size=num_targets, fill_value=0)[0])(
    target_mask(batch)
  ).astype(jnp.int32)


def loss_and_metrics(
  params, batch: Batch, rng, model: Gato, train: bool, num_targets: int | None = None
):
  dropout_rng, patch_rng = jax.random.split(rng)
  positions = None if num_targets is None else target_positions(batch, num_targets)
  logits = model.apply(
    {"params": params},
    batch,
    train=train,
    positions=positions,
    rngs={"dropout": dropout_rng, "patch_positions": patch_rng},
  )
  return masked_next_token_loss(logits, batch, positions)


def compute_gradients(params, batch: Batch, rng, trainer: Trainer, num_targets: int | None = None):
  """(metrics, gradients) of the training loss, with the model's sharding rules in force."""
  with nn.logical_axis_rules(trainer.rules):
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(params, batch, rng, trainer.model, True, num_targets)
  return metrics, grads


# Metrics that are means over some count: their weight when microbatches are combined.
_MEAN_WEIGHTS = {
  "loss": "target_tokens",
  "loss_text": "text_tokens",
  "loss_action": "action_tokens",
  "accuracy_text": "text_tokens",
  "accuracy_action": "action_tokens",
}
_PER_ROW = ("row_loss_sum", "row_targets")


def split_microbatches(batch: Batch, microbatches: int) -> Batch:
  """[B, ...] -> [M, B/M, ...]; microbatch m takes rows m, m + M, ..., so each spans every shard.

  With the batch split in contiguous blocks over devices, strided rows keep every device busy in
  every microbatch (as long as M divides the rows per device).
  """
  rows = batch.tokens.shape[0]
  if rows % microbatches:
    raise ValueError(
      f"train.microbatches={microbatches} does not divide the global batch of {rows}"
    )
  split = lambda x: jnp.swapaxes(
    x.reshape((rows // microbatches, microbatches) + x.shape[1:]), 0, 1
  )
  return jax.tree.map(split, batch)


def accumulate_gradients(
  params, batch: Batch, rng, trainer: Trainer, num_targets: int | None = None, microbatches: int = 1
):
  """(metrics, gradients) of the whole batch, computed `microbatches` slices at a time.

  Each slice's gradient of its summed (not mean) loss is accumulated and the total divided by the
  batch's target count, so the result is the one large batch's gradient (up to float rounding);
  only one slice's activations are alive at a time. Stochastic depth draws per slice.
  """
  if microbatches == 1:
    return compute_gradients(params, batch, rng, trainer, num_targets)
  micro = split_microbatches(batch, microbatches)

  def body(carry, inputs):
    index, mb = inputs
    metrics, grads = compute_gradients(
      params, mb, jax.random.fold_in(rng, index), trainer, num_targets
    )
    # Undo each mean: the loss is sum / max(count, 1), its gradient scales the same way.
    scale = jnp.maximum(metrics["target_tokens"], 1.0)
    grad_sum = jax.tree.map(lambda acc, g: acc + g * scale, carry[0], grads)
    sums = {
      k: v * jnp.maximum(metrics[_MEAN_WEIGHTS[k]], 1.0) if k in _MEAN_WEIGHTS else v
      for k, v in metrics.items()
      if k not in _PER_ROW
    }
    sums = jax.tree.map(jnp.add, carry[1], sums)
    return (grad_sum, sums), {k: metrics[k] for k in _PER_ROW}

  zeros = jax.tree.map(jnp.zeros_like, params)
  metric_shapes = jax.eval_shape(
    lambda: compute_gradients(
      params, jax.tree.map(lambda x: x[0], micro), rng, trainer, num_targets
    )[0]
  )
  zero_sums = {
    k: jnp.zeros(v.shape, v.dtype) for k, v in metric_shapes.items() if k not in _PER_ROW
  }
  (grad_sum, sums), rows = jax.lax.scan(body, (zeros, zero_sums), (jnp.arange(microbatches), micro))
  total = jnp.maximum(sums["target_tokens"], 1.0)
  grads = jax.tree.map(lambda g: g / total, grad_sum)
  metrics = {
    k: v / jnp.maximum(sums[_MEAN_WEIGHTS[k]], 1.0) if k in _MEAN_WEIGHTS else v
    for k, v in sums.items()
  }
  # [M, B/M] -> [B] in the batch's own row order (the inverse of split_microbatches).
  metrics.update({k: jnp.swapaxes(v, 0, 1).reshape(-1) for k, v in rows.items()})
  return metrics, grads


def train_step(
  state: TrainState,
  batch: Batch,
  rng,
  *,
  trainer: Trainer,
  num_targets: int | None = None,
  microbatches: int = 1,
):
  """One optimiser step; pure, so it can be jitted, sharded and tested as it is.

  `num_targets` (static), when given, bounds the loss targets of every row: logits are then
  computed at those positions only. It must be at least `max_targets_per_row(batch)`.
  `microbatches` (static) accumulates the gradient over that many slices of the batch: the same
  update as one step on the whole batch, with a slice's activation memory.
  """
  rng = jax.random.fold_in(rng, state.step)
  metrics, grads = accumulate_gradients(
    state.params, batch, rng, trainer, num_targets, microbatches
  )
  updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(
    metrics, grad_norm=optax.tree.norm(grads), learning_rate=trainer.schedule(state.step)
  )
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def batch_shardings(trainer: Trainer, batch: Batch):
  return jax.tree.map(lambda x: sharding.batch_sharding(trainer.mesh, trainer.rules, x.ndim), batch)


def jit_train_step(
  trainer: Trainer, example_batch: Batch, num_targets: int | None = None, microbatches: int = 1
):
  """`train_step` jitted with explicit shardings and the old state donated (call it, or
  `.lower()` it, under `jax.set_mesh(trainer.mesh)`)."""
  return jax.jit(
    functools.partial(
      train_step, trainer=trainer, num_targets=num_targets, microbatches=microbatches
    ),
    in_shardings=(
      trainer.state_shardings,
      batch_shardings(trainer, example_batch),
      sharding.replicated(trainer.mesh),
    ),
    out_shardings=(trainer.state_shardings, sharding.replicated(trainer.mesh)),
    donate_argnums=0,
  )


def make_train_step(trainer: Trainer, example_batch: Batch, microbatches: int = 1):
  """`train_step` jitted with explicit shardings and the old state donated.

  `microbatches` (config `train.microbatches`) splits each global batch inside the step.

  Returns:
    step(state, batch, rng, num_targets=None) -> (state, metrics). With `num_targets` (the
    global maximum of `max_targets_per_row`, which multi-host callers agree on) logits are
    computed for targets only, in power-of-two buckets; without it, for every position.
  """
  compiled = {}
  seq_len = example_batch.tokens.shape[1]

  def step(state, batch, rng, num_targets: int | None = None):
    bucket = None if num_targets is None else target_bucket(num_targets, seq_len)
    if bucket not in compiled:
      compiled[bucket] = jit_train_step(trainer, example_batch, bucket, microbatches)
    with jax.set_mesh(trainer.mesh):
      return compiled[bucket](state, batch, rng)

  return step


def abstract_param_count(model_config: ModelConfig) -> int:
  """Exact parameter count from shapes alone (no memory), via jax.eval_shape."""
  shapes = jax.eval_shape(lambda r: init_variables(model_config, r), jax.random.key(0))
  return count_params(nn.unbox(shapes)["params"])
