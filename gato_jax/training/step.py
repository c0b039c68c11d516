"""Train state, sharded initialisation, the masked loss and the pure train step.

`create_train_state` never builds the model on one device: it traces initialisation with
`jax.eval_shape`, derives every leaf's NamedSharding from its logical axis names, and runs the
initialiser under `jax.jit(out_shardings=...)`, so each device materialises only its shard.
`make_train_step` jits the module-level `train_step` with explicit in/out shardings and donates
the old state.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gato_jax import sharding
from gato_jax.model.config import ModelConfig
from gato_jax.model.embeddings import group_rows
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


@dataclasses.dataclass(frozen=True)
class Budget:
  """Static sizes of one step's sparse work, per group of rows (a batch shard; see `group_rows`).

  A padded batch sizes everything for its fullest row: logits at the largest row's target count
  in every row, and ResNet work for the image row's patch slots in every row. Counted per group
  instead, a text row's 511 targets and an image row's 456 patches are paid for once.

  Attributes:
    groups: G, groups of consecutive rows of a (micro)batch; one per batch shard.
    targets: K, logits computed per group (None: at every position).
    patches: N, patches through the ResNet per group (None: every patch slot).
  """

  groups: int
  targets: int | None = None
  patches: int | None = None


def bucket(count: int, cap: int, floor: int = 16) -> int:
  """A static size >= count: a power of two (so few shapes ever compile), at most `cap`; 0 stays
  0 (nothing to compute)."""
  if count <= 0:
    return 0
  return int(min(max(floor, 1 << (count - 1).bit_length()), cap))


def shard_groups(trainer: Trainer, batch_size: int, microbatches: int = 1) -> int:
  """Groups per (micro)batch for a `Budget`: the batch's shards, so no gather leaves a device."""
  spec = sharding.batch_sharding(trainer.mesh, trainer.rules).spec[0]
  axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
  shards = int(np.prod([trainer.mesh.shape[a] for a in axes]))
  return math.gcd(shards, batch_size // microbatches)


def batch_loads(batch: Batch, groups: int, microbatches: int = 1) -> tuple[int, int]:
  """(targets, patches): the most loss targets and real patches of any group of any microbatch
  of a host (numpy) batch, split as `split_microbatches` and `Budget` split it."""
  batch = jax.tree.map(np.asarray, batch)
  rows = batch.tokens.shape[0]
  if rows % (microbatches * groups):
    raise ValueError(f"{microbatches} microbatches x {groups} groups do not divide {rows} rows")
  per_row = (
    np.asarray(target_mask(batch)).sum(axis=1),
    (batch.kinds == TokenKind.IMAGE_PATCH).sum(axis=1),
  )
  # Row r is row r // M of microbatch r % M; a microbatch's rows form `groups` equal blocks.
  loads = [
    c.reshape(rows // microbatches, microbatches).T.reshape(microbatches, groups, -1)
    for c in per_row
  ]
  return tuple(int(load.sum(axis=-1).max(initial=0)) for load in loads)


def step_budget(
  targets: int | None,
  patches: int,
  groups: int,
  rows_per_group: int,
  seq_len: int,
  max_patches: int,
) -> Budget:
  """The bucketed `Budget` for the loads `batch_loads` measured (the maximum over processes);
  `targets` None computes logits at every position."""
  return Budget(
    groups,
    # A batch without targets still computes a few logits: no zero-sized arrays in the loss.
    None if targets is None else bucket(max(targets, 1), rows_per_group * seq_len),
    bucket(patches, rows_per_group * max_patches),
  )


def masked_next_token_loss(logits, batch: Batch, positions=None):
  """Cross-entropy of next-token predictions on target tokens only.

  Args:
    logits: [B, T, V] for every position, or [G, K, V] for `positions` only.
    batch: the inputs (tokens, kinds, loss mask, segments).
    positions: int32 [G, K] predictor positions the logits belong to (see `target_positions`).

  Returns:
    (mean loss over targets, metrics dict with per-kind losses, accuracies and target counts).
  """
  rows, length = batch.tokens.shape
  mask = target_mask(batch)
  targets = batch.tokens[:, 1:]  # [B, T-1]
  target_kinds = batch.kinds[:, 1:]
  row_of = None
  if positions is None:
    logits = logits[:, :-1]
  else:
    groups = positions.shape[0]
    # Predictor t of row b sits at b T + t of its group, as the hidden states are flattened.
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 1)))
    take = lambda a: jnp.take_along_axis(group_rows(pad(a), groups), positions, axis=1)
    # Positions past a group's real targets are fill: weighted out below.
    real = jnp.arange(positions.shape[1]) < jnp.sum(group_rows(mask, groups), 1, keepdims=True)
    mask = take(mask) & real
    targets, target_kinds = take(targets), take(target_kinds)
    row_of = jnp.arange(groups)[:, None] * (rows // groups) + positions // length  # [G, K]
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = mask.astype(jnp.float32)
  count = jnp.sum(weights)
  loss = jnp.sum(nll * weights) / jnp.maximum(count, 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  # Per-row sums let the host split the loss by each row's task or domain.
  per_row = lambda v: (
    jnp.sum(v, axis=1) if row_of is None else jnp.zeros(rows).at[row_of.ravel()].add(v.ravel())
  )
  metrics = {
    "loss": loss,
    "target_tokens": count,
    "row_loss_sum": per_row(nll * weights),
    "row_targets": per_row(weights),
  }
  for name, kind in (("text", TokenKind.TEXT), ("action", TokenKind.VALUE)):
    kind_weights = weights * (target_kinds == kind)
    kind_count = jnp.sum(kind_weights)
    metrics[f"accuracy_{name}"] = jnp.sum(correct * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"loss_{name}"] = jnp.sum(nll * kind_weights) / jnp.maximum(kind_count, 1.0)
    metrics[f"{name}_tokens"] = kind_count
  return loss, metrics


def target_positions(batch: Batch, num_targets: int, groups: int | None = None):
  """int32 [G, K]: each group's predictor positions of its targets (see `Gato`), the first K,
  padded with 0. `groups` None: one group per row."""
  mask = jnp.pad(target_mask(batch), ((0, 0), (0, 1)))  # [B, T]: column t predicts t + 1.
  grouped = group_rows(mask, groups or mask.shape[0])
  return jax.vmap(lambda row: jnp.nonzero(row, size=num_targets, fill_value=0)[0])(grouped).astype(
    jnp.int32
  )


def loss_and_metrics(
  params, batch: Batch, rng, model: Gato, train: bool, budget: Budget | None = None
):
  dropout_rng, patch_rng = jax.random.split(rng)
  positions, patch_budget = None, None
  if budget is not None:
    if budget.targets is not None:
      positions = target_positions(batch, budget.targets, budget.groups)
    if budget.patches is not None:
      patch_budget = (budget.groups, budget.patches)
  logits = model.apply(
    {"params": params},
    batch,
    train=train,
    positions=positions,
    patch_budget=patch_budget,
    rngs={"dropout": dropout_rng, "patch_positions": patch_rng},
  )
  return masked_next_token_loss(logits, batch, positions)


def compute_gradients(params, batch: Batch, rng, trainer: Trainer, budget: Budget | None = None):
  """(metrics, gradients) of the training loss, with the model's sharding rules in force."""
  with nn.logical_axis_rules(trainer.rules):
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(params, batch, rng, trainer.model, True, budget)
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
  params, batch: Batch, rng, trainer: Trainer, budget: Budget | None = None, microbatches: int = 1
):
  """(metrics, gradients) of the whole batch, computed `microbatches` slices at a time.

  Each slice's gradient of its summed (not mean) loss is accumulated and the total divided by the
  batch's target count, so the result is the one large batch's gradient (up to float rounding);
  only one slice's activations are alive at a time. Stochastic depth draws per slice.
  """
  if microbatches == 1:
    return compute_gradients(params, batch, rng, trainer, budget)
  micro = split_microbatches(batch, microbatches)

  def body(carry, inputs):
    index, mb = inputs
    metrics, grads = compute_gradients(params, mb, jax.random.fold_in(rng, index), trainer, budget)
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
    lambda: compute_gradients(params, jax.tree.map(lambda x: x[0], micro), rng, trainer, budget)[0]
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
  budget: Budget | None = None,
  microbatches: int = 1,
):
  """One optimiser step; pure, so it can be jitted, sharded and tested as it is.

  `budget` (static), when given, bounds the logits and the ResNet's patches of each group of
  rows (see `Budget`); it must cover the batch's loads (`host_budget` measures them).
  `microbatches` (static) accumulates the gradient over that many slices of the batch: the same
  update as one step on the whole batch, with a slice's activation memory.
  """
  rng = jax.random.fold_in(rng, state.step)
  metrics, grads = accumulate_gradients(state.params, batch, rng, trainer, budget, microbatches)
  updates, opt_state = trainer.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(
    metrics, grad_norm=optax.tree.norm(grads), learning_rate=trainer.schedule(state.step)
  )
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def batch_shardings(trainer: Trainer, batch: Batch):
  return jax.tree.map(lambda x: sharding.batch_sharding(trainer.mesh, trainer.rules, x.ndim), batch)


def jit_train_step(
  trainer: Trainer, example_batch: Batch, budget: Budget | None = None, microbatches: int = 1
):
  """`train_step` jitted with explicit shardings and the old state donated (call it, or
  `.lower()` it, under `jax.set_mesh(trainer.mesh)`)."""
  return jax.jit(
    functools.partial(train_step, trainer=trainer, budget=budget, microbatches=microbatches),
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
    step(state, batch, rng, budget=None) -> (state, metrics), compiled once per distinct
    budget (`host_budget` buckets them); without one, logits at every position and every patch
    slot through the ResNet.
  """
  compiled = {}

  def step(state, batch, rng, budget: Budget | None = None):
    if budget not in compiled:
      compiled[budget] = jit_train_step(trainer, example_batch, budget, microbatches)
    with jax.set_mesh(trainer.mesh):
      return compiled[budget](state, batch, rng)

  return step


def host_budget(
  trainer: Trainer,
  local_batch: Batch,
  microbatches: int = 1,
  targets_only: bool = True,
  reduce_max=None,
) -> Budget:
  """The `Budget` of the global batch whose rows this process holds as `local_batch`.

  Args:
    trainer: gives the batch's shards (one group each).
    local_batch: this process's rows (numpy), in the order `sharding.global_batch` places them.
    microbatches: the step's `train.microbatches`.
    targets_only: logits at targets only (`train.logits_at_targets_only`); else everywhere.
    reduce_max: on several processes, a function giving the elementwise maximum of a tuple of
      ints over all processes (every process calls it); None on one process.
  """
  processes = jax.process_count()
  local_rows, seq_len = local_batch.tokens.shape
  rows = local_rows * processes
  groups = shard_groups(trainer, rows, microbatches)
  if groups % processes:  # A group spans processes: a process's load times their number bounds it.
    loads = batch_loads(local_batch, 1, microbatches)
    loads = tuple(v * processes // groups for v in loads)
  else:
    loads = batch_loads(local_batch, groups // processes, microbatches)
  if reduce_max is not None:
    loads = reduce_max(loads)
  rows_per_group = rows // microbatches // groups
  targets, patches = loads
  return step_budget(
    targets if targets_only else None,
    patches,
    groups,
    rows_per_group,
    seq_len,
    local_batch.patches.shape[1],
  )


def abstract_param_count(model_config: ModelConfig) -> int:
  """Exact parameter count from shapes alone (no memory), via jax.eval_shape."""
  shapes = jax.eval_shape(lambda r: init_variables(model_config, r), jax.random.key(0))
  return count_params(nn.unbox(shapes)["params"])
