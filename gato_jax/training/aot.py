"""Ahead-of-time compilation for a TPU slice that is not present: memory per chip, FLOPs, roofline.

libtpu describes any TPU topology (`jax.experimental.topologies.get_topology_desc`) from a CPU
host, and the real jitted train step (or the cached decode step) lowers and compiles for it with
the config's mesh, rules, remat policy and global batch, as MaxText's `train_compile.py` does.
The compiler reports memory per device; `memory_verdict` compares its total with the chip's
usable HBM (an out-of-memory compile is a result: `fits: False`, with the compiler's numbers).
FLOPs come from the model's own formula (`training.flops`): XLA's cost analysis counts a scanned
layer's body once. `step_estimate` adds the collectives the mesh implies (`step_collective_bytes`)
to a compute / HBM roofline. Needs libtpu (`pip install -e .[tpu]`) to compile; the verdict and
the cost model are pure functions of numbers. Nothing here is imported by `import gato_jax`.
"""

import dataclasses
import math
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gato_jax import sharding
from gato_jax.inference.decode import decode_tokens, init_cache
from gato_jax.model.config import ModelConfig
from gato_jax.model.gato import Gato
from gato_jax.model.inputs import Batch
from gato_jax.tokenizer.constants import padded_vocab_size
from gato_jax.training import flops
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import (
  abstract_param_count,
  abstract_train_state,
  jit_train_step,
  Budget,
  bucket,
  shard_groups,
)

GIB = 2.0**30
WHAT = ("train", "decode")
MEGACORE = ("v4", "v5p")


def topology_devices(topology: str) -> list:
  """The devices of a TPU topology such as "v5e:4x4" or "v4:2x2x1", present or not."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  # Compiling drives no TPU, so two compiling processes (or one beside a TPU job) may share
  # libtpu; without this the second fails on libtpu's lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

  # v4 and v5p chips hold two TensorCores that JAX drives as one device ("megacore").
  kwargs = {"chip_config_name": "megacore"} if topology.split(":")[0] in MEGACORE else {}
  try:
    return list(
      topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices
    )
  except Exception as e:  # libtpu missing, or a name it does not know.
    raise ValueError(
      f"could not describe TPU topology {topology!r} ({type(e).__name__}: {e}). It needs libtpu"
      " (pip install -e .[tpu]) and a name libtpu knows, e.g. v4:2x2x1, v5e:4x4, v5p:2x2x1"
    ) from e


def abstract_batch(
  model_config: ModelConfig, batch_size: int, seq_len: int, num_patches: int, batch_sharding
) -> Batch:
  """A global training Batch as ShapeDtypeStructs split as `act_batch` says (no memory)."""
  s = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(len(shape)))
  tokens = s((batch_size, seq_len), jnp.int32)
  patches = lambda last: s((batch_size, num_patches, last), jnp.float32)
  return Batch(
    tokens=tokens,
    kinds=tokens,
    local_positions=tokens,
    loss_mask=s((batch_size, seq_len), jnp.bool_),
    segment_ids=tokens,
    patches=patches(model_config.patch_dim),
    patch_rows=patches(2),
    patch_cols=patches(2),
  )


def per_device_bytes(tree) -> int:
  """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings."""

  def leaf(x):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    return int(np.prod(shape, dtype=np.int64)) * jnp.dtype(x.dtype).itemsize

  return sum(leaf(x) for x in jax.tree.leaves(tree))


def _oom_numbers(message: str) -> dict[str, float]:
  """GiB figures from XLA's out-of-memory message (temporaries, available HBM), where present."""
  units = {"K": 2.0**-20, "M": 2.0**-10, "G": 1.0, "T": 2.0**10}
  found = {}
  for key, pattern in (
    ("temp_gib", r"HLO temporaries \(([\d.]+)([KMGT])"),
    ("hbm_available_gib", r"available HBM \(([\d.]+)([KMGT])"),
    ("total_gib", r"[Uu]sed ([\d.]+)([KMGT]) of"),
  ):
    match = re.search(pattern, message)
    if match:
      found[key] = float(match.group(1)) * units[match.group(2)]
  return found


def _compile(lowered, arguments) -> dict[str, Any]:
  """Compiles; returns memory per device in GiB and whether the compiler ran out of memory."""
  start = time.perf_counter()
  try:
    stats = lowered.compile().memory_analysis()
  except Exception as e:  # XLA raises JaxRuntimeError (RESOURCE_EXHAUSTED) when it does not fit.
    if "RESOURCE_EXHAUSTED" not in str(e) and "Ran out of memory" not in str(e):
      raise
    out = {
      "argument_gib": per_device_bytes(arguments) / GIB,
      "output_gib": None,
      "alias_gib": None,
      "temp_gib": None,
      "compiler_oom": True,
      "compiler_message": str(e).strip().splitlines()[0][:400],
    }
    out.update(_oom_numbers(str(e)))
    if out["temp_gib"] is not None and "total_gib" not in out:
      out["total_gib"] = out["argument_gib"] + out["temp_gib"]
  else:
    out = {
      "argument_gib": stats.argument_size_in_bytes / GIB,
      "output_gib": stats.output_size_in_bytes / GIB,
      "alias_gib": stats.alias_size_in_bytes / GIB,
      "temp_gib": stats.temp_size_in_bytes / GIB,
      "compiler_oom": False,
    }
    # Donated state: outputs that alias arguments take no memory of their own.
    out["total_gib"] = (
      stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      - stats.alias_size_in_bytes
      + stats.temp_size_in_bytes
      + stats.generated_code_size_in_bytes
    ) / GIB
  out["compile_seconds"] = time.perf_counter() - start
  return out


def memory_verdict(
  memory: dict[str, Any], hbm_gib: float | None, usable_gib: float | None = None
) -> dict[str, Any]:
  """Whether a compiled step fits one chip, and why, from the compile's memory numbers alone.

  The limit is the least of the chip's HBM (`hbm_gib`, the spec sheet's), the part of it that
  programs may use (`usable_gib`, what libtpu's compiler reports as available) and the available
  HBM an out-of-memory message names (`memory["hbm_available_gib"]`). A step fits when the
  compiler did not run out of memory and its total (arguments, outputs not aliased to them,
  temporaries, code) is within that limit.

  Args:
    memory: per-device numbers of one compile (`_compile`'s, or a stored result line):
      `total_gib` (None where unknown), `compiler_oom` and, after an out-of-memory compile,
      `hbm_available_gib` and `compiler_message` where the message gave them.
    hbm_gib: the chip's HBM in GiB, None where unknown.
    usable_gib: the usable part of it in GiB, None where unknown.

  Returns:
    {"fits": True | False | None (no HBM size known), "why": one line, "hbm_usable_gib": the
    limit applied}.
  """
  limits = {
    "HBM": hbm_gib,
    "usable HBM": usable_gib,
    "available HBM (compiler)": memory.get("hbm_available_gib"),
  }
  known = {name: value for name, value in limits.items() if value is not None}
  total = memory.get("total_gib")
  if not known:
    return {"fits": None, "why": "no HBM size known for this chip", "hbm_usable_gib": None}
  name, limit = min(known.items(), key=lambda item: item[1])
  if memory.get("compiler_oom"):
    need = "" if total is None else f"total {total:.2f} GiB > "
    why = f"the compiler ran out of memory: {need}{limit:.2f} GiB {name}"
    return {"fits": False, "why": why, "hbm_usable_gib": limit}
  if total is None:
    raise ValueError("a compile that did not run out of memory must report total_gib")
  fits = total <= limit
  why = f"total {total:.2f} GiB {'<=' if fits else '>'} {limit:.2f} GiB {name}"
  return {"fits": fits, "why": why, "hbm_usable_gib": limit}


def ring_bytes(op: str, array_bytes: float, chips: int) -> float:
  """Bytes each of `chips` chips sends in a ring collective over an array of `array_bytes`.

  all_gather and reduce_scatter move (n - 1) / n of the whole (gathered) array through every
  chip; all_reduce is a reduce-scatter then an all-gather, twice that.
  """
  if op not in ("all_gather", "reduce_scatter", "all_reduce"):
    raise ValueError(f"unknown collective {op!r}; choose all_gather, reduce_scatter, all_reduce")
  if chips <= 1:
    return 0.0
  share = (chips - 1) / chips * array_bytes
  return 2 * share if op == "all_reduce" else share


def parameter_collective_bytes(params, mesh_shape: dict[str, int]) -> dict[str, float]:
  """Per chip, the bytes of one FSDP all-gather of every parameter and one gradient all-reduce
  over the chips that hold the same shard, from the parameters' shardings.

  A parameter split over mesh axes other than `tensor` is gathered over them before use (its
  `tensor` split stays: tensor parallelism computes on the shard); its gradient is
  reduce-scattered back over the same chips (as many bytes as the gather) and all-reduced over
  the chips that hold the same shard (the data-parallel replicas).

  Args:
    params: a tree of ShapeDtypeStructs (or arrays) with `NamedSharding`s.
    mesh_shape: mesh axis name -> size.

  Returns:
    {"gather": bytes, "replica_all_reduce": bytes}, per chip.
  """
  chips = int(np.prod(list(mesh_shape.values())))
  out = {"gather": 0.0, "replica_all_reduce": 0.0}
  for leaf in jax.tree.leaves(params):
    axes = []
    for entry in leaf.sharding.spec:
      axes += [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
    tensor = int(np.prod([mesh_shape[a] for a in axes if a == "tensor"]))
    gathered = int(np.prod([mesh_shape[a] for a in axes if a != "tensor"]))
    nbytes = int(np.prod(leaf.shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    out["gather"] += ring_bytes("all_gather", nbytes / tensor, gathered)
    replicas = chips // (tensor * gathered)
    out["replica_all_reduce"] += ring_bytes("all_reduce", nbytes / tensor / gathered, replicas)
  return out


def step_collective_bytes(
  parameters: dict[str, float],
  *,
  train: bool,
  microbatches: int = 1,
  layers: int = 0,
  tensor: int = 1,
  activation_bytes: float = 0.0,
  remat_full: bool = False,
) -> dict[str, float]:
  """Per chip, the bytes one step sends over ICI, by cause.

  The count follows what XLA compiles for this model (the scanned layers' HLO, checked on a
  4-device CPU mesh): per microbatch, the forward gathers every layer's parameters and the
  backward gathers them again (with `remat_policy=full` the recomputed forward and the gradient
  share that second gather), and the gradients are reduce-scattered, then all-reduced over the
  data-parallel replicas. With a `tensor` axis, Megatron-style layers all-reduce the activations
  twice per layer forward (attention and feed-forward outputs), twice more backward, and twice
  more when full remat recomputes the forward.

  Args:
    parameters: `parameter_collective_bytes`'s numbers.
    train: a train step (else one decode step: one forward gather, no gradients).
    microbatches: gradient-accumulation slices; each gathers and reduces again.
    layers: transformer layers (for the tensor all-reduces).
    tensor: the mesh's `tensor` size.
    activation_bytes: one layer output's bytes on one chip, per microbatch ([rows, T, D]).
    remat_full: `remat_policy == "full"`.

  Returns:
    {"fsdp": all-gathers and reduce-scatters, "data": replica all-reduces, "tensor": activation
    all-reduces}, bytes per chip per step.
  """
  activation = ring_bytes("all_reduce", activation_bytes, tensor) * layers
  if not train:
    return {"fsdp": parameters["gather"], "data": 0.0, "tensor": 2 * activation}
  return {
    "fsdp": 3 * parameters["gather"] * microbatches,
    "data": parameters["replica_all_reduce"] * microbatches,
    "tensor": (6 if remat_full else 4) * activation * microbatches,
  }


def step_estimate(
  flops_per_device: float,
  memory: dict[str, Any],
  collective_bytes: dict[str, float],
  device_kind: str,
  recompute: float = 1.0,
) -> dict[str, Any]:
  """An estimate, not a measurement: step = max(compute, HBM traffic) + collectives.

  Compute is the FLOPs the chip executes (the model's, times `recompute`: 4/3 when full remat
  runs the forward twice) at peak; HBM traffic counts arguments read, outputs written and every
  temporary written and read once, at full bandwidth; collectives are the ICI bytes at the chip's
  ICI bandwidth and are counted as exposed (not hidden behind compute). XLA overlaps part of the
  collectives and no kernel runs at peak, so the two errors pull opposite ways.

  Returns:
    est_compute_seconds, est_hbm_seconds, est_collective_seconds, est_step_seconds (None where
    the chip's numbers or the compile's temporaries are unknown) and collective_gib per chip.
  """
  peak = flops.PEAK_FLOPS.get(device_kind)
  bandwidth = flops.TPU_HBM_BANDWIDTH.get(device_kind)
  ici = flops.TPU_ICI_BANDWIDTH.get(device_kind)
  collective = sum(collective_bytes.values())
  out = {
    "collective_gib": collective / GIB,
    "est_compute_seconds": flops_per_device * recompute / peak if peak else None,
    "est_hbm_seconds": None,
    "est_collective_seconds": collective / ici if ici else None,
    "est_step_seconds": None,
  }
  if bandwidth and memory.get("temp_gib") is not None:
    traffic = GIB * (memory["argument_gib"] + (memory["output_gib"] or 0) + 2 * memory["temp_gib"])
    out["est_hbm_seconds"] = traffic / bandwidth
  parts = [out["est_compute_seconds"], out["est_hbm_seconds"], out["est_collective_seconds"]]
  if None not in parts:
    out["est_step_seconds"] = max(parts[0], parts[1]) + parts[2]
  return out


def recompute_factor(remat_policy: str) -> float:
  """Executed over model FLOPs: full remat runs every layer's forward again (8 N, not 6 N)."""
  return 4 / 3 if remat_policy == "full" else 1.0


def train_collectives(
  model_config: ModelConfig,
  params,
  mesh_shape: dict[str, int],
  microbatches: int,
  tokens_per_chip: int,
) -> dict[str, float]:
  """`step_collective_bytes` of a train step; `tokens_per_chip`: one microbatch's on a chip."""
  itemsize = jnp.dtype(model_config.dtype).itemsize
  return step_collective_bytes(
    parameter_collective_bytes(params, mesh_shape),
    train=True,
    microbatches=microbatches,
    layers=model_config.num_layers,
    tensor=mesh_shape["tensor"],
    # One layer's output on one chip ([rows, T, D]): what a tensor axis all-reduces.
    activation_bytes=tokens_per_chip * model_config.width * itemsize,
    remat_full=model_config.remat_policy == "full",
  )


def judge(row: dict[str, Any]) -> dict[str, Any]:
  """A stored train result line judged again without compiling: `fits`, `why` and the step
  estimate by this version's rules, from its memory numbers, FLOPs, mesh and model.

  Lines written before `compiler_oom` existed carried the compiler's verdict in `fits`. The
  parameters' shardings come from an abstract mesh of the line's shape (no devices needed).
  """
  if row.get("what") != "train":
    raise ValueError(f"judge takes train result lines, not {row.get('what')!r}")
  memory = {"compiler_oom": not row["fits"], **row}
  model_config = ModelConfig.from_dict(
    {
      "size": row["size"],
      "remat_policy": row["remat_policy"],
      "mlp_activation": row["mlp_activation"],
    }
  )
  mesh = jax.sharding.AbstractMesh(tuple(row["mesh"].values()), tuple(row["mesh"]))
  state, _ = abstract_train_state(model_config, OptimizerConfig(), mesh, row["rules"])
  # Every rules preset splits the batch over data x fsdp (see step.shard_groups).
  rows = row["global_batch"] // row["microbatches"]
  rows_per_chip = rows // math.gcd(row["mesh"]["data"] * row["mesh"]["fsdp"], rows)
  collectives = train_collectives(
    model_config, state.params, row["mesh"], row["microbatches"], rows_per_chip * row["seq_len"]
  )
  assessment = assess(
    memory,
    row["device_kind"],
    row["flops_per_device"],
    collectives,
    recompute_factor(row["remat_policy"]),
  )
  return _rounded({**{k: v for k, v in memory.items() if k != "est_mfu"}, **assessment})


def assess(
  memory: dict[str, Any],
  device_kind: str,
  flops_per_device: float,
  collectives: dict[str, float],
  recompute: float = 1.0,
) -> dict[str, Any]:
  """The chip's HBM, `memory_verdict` and `step_estimate` of one compile's numbers."""
  hbm = flops.TPU_HBM_BYTES.get(device_kind)
  usable = flops.TPU_HBM_USABLE_BYTES.get(device_kind)
  return {
    "hbm_gib": hbm / GIB if hbm else None,
    **memory_verdict(memory, hbm / GIB if hbm else None, usable / GIB if usable else None),
    "flops_per_device": flops_per_device,
    **step_estimate(flops_per_device, memory, collectives, device_kind, recompute),
  }


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
  return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}


@dataclasses.dataclass(frozen=True)
class _Target:
  """What every compiled case shares: the config, the topology's devices, mesh and train state."""

  config: ml_collections.ConfigDict
  model_config: ModelConfig
  topology: str
  devices: list
  mesh: Any
  state: Any
  trainer: Any


def _target(config: ml_collections.ConfigDict, topology: str) -> _Target:
  devices = topology_devices(topology)
  model_config = ModelConfig.from_dict(config.model)
  mesh = sharding.create_mesh(config.mesh.shape, devices)
  state, trainer = abstract_train_state(
    model_config,
    OptimizerConfig.from_dict(config.optimizer),
    mesh,
    config.mesh.rules,
    config.train.get("action_loss_vocab", "full"),
  )
  return _Target(config, model_config, topology, devices, mesh, state, trainer)


def _case(
  target: _Target,
  what: str,
  global_batch: int,
  memory: dict,
  flops_per_device: float,
  collectives: dict[str, float],
  recompute: float = 1.0,
  **extra,
) -> dict[str, Any]:
  config, model_config, topology = target.config, target.model_config, target.topology
  devices, mesh = target.devices, target.mesh
  kind = devices[0].device_kind
  row = {
    "what": what,
    "size": config.model.size,
    "topology": topology,
    "device_kind": kind,
    "devices": len(devices),
    "mesh": dict(zip(mesh.axis_names, map(int, mesh.devices.shape))),
    "rules": config.mesh.rules,
    "remat_policy": model_config.remat_policy,
    "mlp_activation": model_config.mlp_activation,
    "global_batch": global_batch,
    **extra,
    **memory,
    **assess(memory, kind, flops_per_device, collectives, recompute),
  }
  return _rounded(row)


def compile_train(
  config: ml_collections.ConfigDict, topology: str, targets_per_row: int | None = None
) -> dict[str, Any]:
  """Compiles the config's train step for `topology`; one result row (see tools/aot_compile.py).

  Args:
    config: a Gato config (gato_jax/configs/gato.py); its mesh, rules, remat policy, global
      batch, sequence length, patch slots and `train.microbatches` are used as they are.
    topology: a TPU topology name libtpu knows.
    targets_per_row: loss targets per row when logits are computed at targets only (the
      trainer's bucket of it is compiled); default half the sequence.
  """
  target = _target(config, topology)
  model_config, mesh, state, trainer = (
    target.model_config,
    target.mesh,
    target.state,
    target.trainer,
  )
  batch_size, seq_len = config.train.batch_size, config.train.seq_len
  # Without data the trainer's derived budget (-1) is unknown; every token a patch bounds it
  # from above (an 80x80 Atari row needs 949 of 1024).
  max_patches = config.train.max_patches if config.train.max_patches >= 0 else seq_len
  batch = abstract_batch(
    model_config,
    batch_size,
    seq_len,
    max_patches,
    lambda ndim: sharding.batch_sharding(mesh, trainer.rules, ndim),
  )
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding.replicated(mesh))
  microbatches = config.train.microbatches
  groups = shard_groups(trainer, batch_size, microbatches)
  rows_per_group = batch_size // microbatches // groups
  logits = None  # Per row, as the FLOP count takes it.
  budget = Budget(groups)  # Every patch slot through the ResNet: the most memory.
  if config.train.logits_at_targets_only:
    per_group = (targets_per_row or seq_len // 2) * rows_per_group
    budget = Budget(groups, targets=bucket(per_group, rows_per_group * seq_len))
    logits = budget.targets / rows_per_group
  with jax.set_mesh(mesh):
    lowered = jit_train_step(trainer, batch, budget, microbatches).lower(state, batch, rng)
  memory = _compile(lowered, (state, batch))
  num_params = abstract_param_count(model_config)
  step_flops = flops.train_flops_per_token(model_config, num_params, seq_len, logits) * (
    batch_size * seq_len
  )
  collectives = train_collectives(
    model_config, state.params, dict(mesh.shape), microbatches, rows_per_group * seq_len
  )
  return _case(
    target,
    "train",
    batch_size,
    memory,
    step_flops / len(target.devices),
    collectives,
    recompute=recompute_factor(model_config.remat_policy),
    params=num_params,
    seq_len=seq_len,
    max_patches=max_patches,
    microbatches=config.train.microbatches,
    logits_per_row=logits or seq_len,
  )


def compile_decode(
  config: ml_collections.ConfigDict, topology: str, batch_size: int | None = None
) -> dict[str, Any]:
  """Compiles one cached decode step (one action token for `batch_size` rows, default
  `eval.batch_size`) with parameters sharded as in training; the cache is replicated."""
  target = _target(config, topology)
  model_config, mesh, state = target.model_config, target.mesh, target.state
  batch_size = batch_size or config.eval.batch_size
  replicated = sharding.replicated(mesh)
  with_sharding = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
  cache = jax.tree.map(with_sharding, jax.eval_shape(lambda: init_cache(model_config, batch_size)))
  vocab = padded_vocab_size(model_config.vocab_multiple)
  logits = jax.ShapeDtypeStruct((batch_size, vocab), jnp.float32, sharding=replicated)
  id_ranges = jax.ShapeDtypeStruct((1, 2), jnp.int32, sharding=replicated)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  with jax.set_mesh(mesh):
    lowered = decode_tokens.lower(
      state.params, cache, logits, id_ranges, rng, model=Gato(model_config), temperature=0.0
    )
  memory = _compile(lowered, (state.params, cache, logits))
  num_params = abstract_param_count(model_config)
  # A forward pass for one token per row, attending to the whole cache: a third of training's.
  token_flops = (
    flops.train_flops_per_token(model_config, num_params, model_config.max_decode_length) / 3
  )
  mesh_shape = dict(mesh.shape)
  collectives = step_collective_bytes(
    parameter_collective_bytes(state.params, mesh_shape),
    train=False,
    layers=model_config.num_layers,
    tensor=mesh_shape["tensor"],
    # The cache is replicated, so every chip holds all rows' one new token.
    activation_bytes=batch_size * model_config.width * jnp.dtype(model_config.dtype).itemsize,
  )
  return _case(
    target,
    "decode",
    batch_size,
    memory,
    token_flops * batch_size / len(target.devices),
    collectives,
    params=num_params,
    cache_length=model_config.max_decode_length,
  )


def compile_case(config: ml_collections.ConfigDict, topology: str, what: str, **kwargs):
  if what not in WHAT:
    raise ValueError(f"unknown --what {what!r}; choose from {WHAT}")
  return (compile_train if what == "train" else compile_decode)(config, topology, **kwargs)
