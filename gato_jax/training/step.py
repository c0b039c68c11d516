"""Train state, sharded initialisation, the masked loss and the pure train step.

`create_train_state` never builds the model on one device: it traces initialisation with
`jax.eval_shape`, derives every leaf's NamedSharding from its logical axis names, and runs the
initialiser under `jax.jit(out_shardings=...)`, so each device materialises only its shard.
`make_train_step` jits the module-level `train_step` with explicit in/out shardings and donates
the old state.
"""

import collections
import dataclasses
import functools
import gc
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
from gato_jax.model.gato import Gato, count_params, init_variables, param_shapes
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.constants import TokenKind
from gato_jax.training.loss import (
  ACTION_IDS,
  check_action_vocab,
  masked_next_token_loss,
  target_mask,
  target_positions,
)
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
  action_loss_vocab: str = (
    "full"  # The action targets' normaliser (config train.action_loss_vocab).
  )


def _state_initializer(model_config: ModelConfig, tx: optax.GradientTransformation):
  def init_boxed(rng):
    params = init_variables(model_config, rng)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init_boxed


def abstract_train_state(
  model_config: ModelConfig,
  optimizer_config: OptimizerConfig,
  mesh: jax.sharding.Mesh,
  rules,
  action_loss_vocab: str = "full",
) -> tuple[TrainState, Trainer]:
  """The state as ShapeDtypeStructs carrying their shardings, and its Trainer; no memory used.

  What ahead-of-time compilation (tools/aot_compile.py) lowers the step with, for a mesh of
  devices that need not be present. `action_loss_vocab`: the loss's action normaliser
  (`loss.ACTION_VOCABS`).
  """
  rules = sharding.axis_rules(rules)
  tx, schedule = make_optimizer(optimizer_config)
  # The optimizer state's leaves inherit the parameters' logical axes through the boxes.
  boxed = jax.eval_shape(_state_initializer(model_config, tx), jax.random.key(0))
  state, state_shardings = sharding.sharded_abstract(boxed, mesh, rules)
  trainer = Trainer(
    Gato(model_config),
    tx,
    schedule,
    mesh,
    rules,
    state_shardings,
    check_action_vocab(action_loss_vocab),
  )
  return state, trainer


def create_train_state(
  model_config: ModelConfig,
  optimizer_config: OptimizerConfig,
  mesh: jax.sharding.Mesh,
  rules,
  rng,
  action_loss_vocab: str = "full",
) -> tuple[TrainState, Trainer]:
  """Initialises parameters and optimizer state directly into their shards."""
  _, trainer = abstract_train_state(model_config, optimizer_config, mesh, rules, action_loss_vocab)
  return initial_train_state(trainer, rng), trainer


def initial_train_state(trainer: Trainer, rng) -> TrainState:
  """A fresh state for `trainer` (from `abstract_train_state`), built directly in its shards."""
  init_boxed = _state_initializer(trainer.model.config, trainer.tx)
  # No ambient mesh here: flax's DenseGeneral would constrain its flat kernel with the names of
  # the reshaped one. The out_shardings alone place every shard.
  return jax.jit(lambda r: nn.unbox(init_boxed(r)), out_shardings=trainer.state_shardings)(rng)


@dataclasses.dataclass(frozen=True)
class Budget:
  """Static sizes of one step's sparse work, per group of rows (a batch shard; see `group_rows`).

  A padded batch sizes everything for its fullest row: logits at the largest row's target count
  in every row, and ResNet work for the image row's patch slots in every row. Counted per group
  instead, a text row's 511 targets and an image row's 456 patches are paid for once.

  Attributes:
    groups: G, groups of consecutive rows of a (micro)batch; one per batch shard.
    targets: K, logits computed per group (None: at every position); with `action_targets`,
      at the non-action targets only.
    patches: N, patches through the ResNet per group (None: every patch slot).
    action_targets: Ka, action targets per group whose logits cover the action ids alone
      (train.action_loss_vocab="actions"); None: actions are among `targets`.
  """

  groups: int
  targets: int | None = None
  patches: int | None = None
  action_targets: int | None = None

  def full_logits(self, vocab_size: int) -> float | None:
    """Logits per group in whole-vocabulary rows (what the output projection costs)."""
    if self.targets is None:
      return None
    return self.targets + (self.action_targets or 0) * (ACTION_IDS[1] - ACTION_IDS[0]) / vocab_size


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


def batch_loads(
  batch: Batch, groups: int, microbatches: int = 1, actions: bool | None = None
) -> tuple[int, int]:
  """(targets, patches): the most loss targets and real patches of any group of any microbatch
  of a host (numpy) batch, split as `split_microbatches` and `Budget` split it. `actions`
  counts the action targets only (True), the others (False) or all (None)."""
  batch = jax.tree.map(np.asarray, batch)
  rows = batch.tokens.shape[0]
  if rows % (microbatches * groups):
    raise ValueError(f"{microbatches} microbatches x {groups} groups do not divide {rows} rows")
  per_row = (
    np.asarray(target_mask(batch, actions)).sum(axis=1),
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
  action_targets: int | None = None,
) -> Budget:
  """The bucketed `Budget` for the loads `batch_loads` measured (the maximum over processes);
  `targets` None computes logits at every position; `action_targets` (not None) splits the
  action targets off `targets` (see `Budget`)."""
  cap = rows_per_group * seq_len
  return Budget(
    groups,
    # A batch without targets still computes a few logits: no zero-sized arrays in the loss
    # (split off, the action head keeps that floor and a control batch needs no text head).
    None if targets is None else bucket(targets if action_targets else max(targets, 1), cap),
    bucket(patches, rows_per_group * max_patches),
    None if action_targets is None else bucket(max(action_targets, 1), cap),
  )


def loss_and_metrics(
  params,
  batch: Batch,
  rng,
  model: Gato,
  train: bool,
  budget: Budget | None = None,
  action_vocab: str = "full",
):
  """(loss, metrics) of `batch`; `budget` bounds the logits and patches computed, `action_vocab`
  is the action targets' normaliser (`loss.ACTION_VOCABS`)."""
  dropout_rng, patch_rng = jax.random.split(rng)
  positions, patch_budget, action_positions = None, None, None
  if budget is not None:
    split = budget.action_targets is not None
    if split and action_vocab != "actions":
      raise ValueError("a budget with action_targets needs action_vocab='actions'")
    if budget.targets is not None:
      positions = target_positions(batch, budget.targets, budget.groups, False if split else None)
    if split:
      action_positions = target_positions(batch, budget.action_targets, budget.groups, True)
    if budget.patches is not None:
      patch_budget = (budget.groups, budget.patches)
  logits = model.apply(
    {"params": params},
    batch,
    train=train,
    positions=positions,
    patch_budget=patch_budget,
    action_positions=action_positions,
    rngs={"dropout": dropout_rng, "patch_positions": patch_rng},
  )
  if action_positions is None:
    return masked_next_token_loss(logits, batch, positions, action_vocab)
  logits, action_logits = logits
  return masked_next_token_loss(
    logits, batch, positions, action_vocab, action_logits, action_positions
  )


def compute_gradients(params, batch: Batch, rng, trainer: Trainer, budget: Budget | None = None):
  """(metrics, gradients) of the training loss, with the model's sharding rules in force."""
  with nn.logical_axis_rules(trainer.rules):
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(
      params, batch, rng, trainer.model, True, budget, trainer.action_loss_vocab
    )
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


def memory_mappings() -> tuple[int, int] | None:
  """(memory mappings this process holds, the kernel's limit per process); None off Linux."""
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      limit = int(f.read())
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f), limit
  except (OSError, ValueError):
    return None


def make_train_step(trainer: Trainer, example_batch: Batch, microbatches: int = 1):
  """`train_step` jitted with explicit shardings and the old state donated.

  `microbatches` (config `train.microbatches`) splits each global batch inside the step.

  Returns:
    step(state, batch, rng, budget=None) -> (state, metrics), compiled once per distinct
    budget (`host_budget` buckets them); without one, logits at every position and every patch
    slot through the ResNet. `step.programs` holds the live programs, newest use last.
  """
  # Each live XLA:CPU program holds thousands of memory mappings (its JIT-compiled code), and
  # a long run meets dozens of budgets: the generalist on two cores died at step ~340 when
  # LLVM could not map more (vm.max_map_count, 65,530). Before a new program, the least
  # recently used ones go while the process holds over half the limit; one needed again comes
  # back from the persistent compilation cache (gato_jax.launch), or compiles again.
  programs = collections.OrderedDict()

  def step(state, batch, rng, budget: Budget | None = None):
    if budget in programs:
      programs.move_to_end(budget)
    else:
      while programs and _over_mapping_budget():
        _, evicted = programs.popitem(last=False)
        evicted.clear_cache()
        del evicted
        gc.collect()  # Frees the program's code now, not at some later collection.
      programs[budget] = jit_train_step(trainer, example_batch, budget, microbatches)
    with jax.set_mesh(trainer.mesh):
      return programs[budget](state, batch, rng)

  step.programs = programs
  return step


def _over_mapping_budget() -> bool:
  mappings = memory_mappings()
  return mappings is not None and mappings[0] > mappings[1] // 2


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
  # With action targets scored over the action ids, their logits are cheap: a head of their own.
  split = targets_only and trainer.action_loss_vocab == "actions"
  measure = lambda actions: batch_loads(local_batch, groups // processes, microbatches, actions)
  if groups % processes:  # A group spans processes: a process's load times their number bounds it.
    measure = lambda actions: tuple(
      v * processes // groups for v in batch_loads(local_batch, 1, microbatches, actions)
    )
  targets, patches = measure(False if split else None)
  action_targets = measure(True)[0] if split else None
  if reduce_max is not None:
    targets, patches, action_targets = reduce_max((targets, patches, action_targets or 0))
    action_targets = action_targets if split else None
  rows_per_group = rows // microbatches // groups
  return step_budget(
    targets if targets_only else None,
    patches,
    groups,
    rows_per_group,
    seq_len,
    local_batch.patches.shape[1],
    action_targets,
  )


def abstract_param_count(model_config: ModelConfig) -> int:
  """Exact parameter count from shapes alone (no memory), via jax.eval_shape."""
  return count_params(nn.unbox(param_shapes(model_config)))
