"""Ahead-of-time compilation for a TPU slice that is not present: memory per chip, FLOPs, roofline.

libtpu describes any TPU topology (`jax.experimental.topologies.get_topology_desc`) from a CPU
host, and the real jitted train step (or the cached decode step) lowers and compiles for it with
the config's mesh, rules, remat policy and global batch, as MaxText's `train_compile.py` does.
The compiler reports memory per device; an out-of-memory compile is a result (`fits: False`, with
the compiler's numbers). FLOPs come from the model's own formula (`training.flops`): XLA's cost
analysis counts a scanned layer's body once. Needs libtpu (`pip install -e .[tpu]`); nothing here
is imported by `import gato_jax`.
"""

import dataclasses
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
  """Compiles; returns memory per device in GiB and whether it fits (the compiler's verdict)."""
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
      "fits": False,
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
      "fits": True,
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


def roofline(flops_per_device: float, memory: dict[str, Any], device_kind: str) -> dict[str, Any]:
  """An estimate, not a measurement: max(compute time at peak, HBM traffic at full bandwidth).

  Traffic counts arguments read, outputs written and every temporary written and read once;
  collectives, overlap and kernel efficiency are ignored, so real steps are slower.
  """
  peak = flops.PEAK_FLOPS.get(device_kind)
  bandwidth = flops.TPU_HBM_BANDWIDTH.get(device_kind)
  if not peak or not bandwidth or memory["temp_gib"] is None:
    return {"est_step_seconds": None, "est_mfu": None}
  traffic = GIB * (memory["argument_gib"] + (memory["output_gib"] or 0) + 2 * memory["temp_gib"])
  compute_s, memory_s = flops_per_device / peak, traffic / bandwidth
  step = max(compute_s, memory_s)
  return {"est_step_seconds": step, "est_mfu": compute_s / step}


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
    model_config, OptimizerConfig.from_dict(config.optimizer), mesh, config.mesh.rules
  )
  return _Target(config, model_config, topology, devices, mesh, state, trainer)


def _case(
  target: _Target,
  what: str,
  global_batch: int,
  memory: dict,
  flops_per_device: float,
  **extra,
) -> dict[str, Any]:
  config, model_config, topology = target.config, target.model_config, target.topology
  devices, mesh = target.devices, target.mesh
  kind = devices[0].device_kind
  hbm = flops.TPU_HBM_BYTES.get(kind)
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
    "hbm_gib": hbm / GIB if hbm else None,
    "flops_per_device": flops_per_device,
    **roofline(flops_per_device, memory, kind),
  }
  return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}


def compile_train(
  config: ml_collections.ConfigDict, topology: str, targets_per_row: int | None = None
) -> dict[str, Any]:
  """Compiles the config's train step for `topology`; one result row (see tools/aot_compile.py).

  Args:
    config: a Gato config (experiments/configs/gato.py); its mesh, rules, remat policy, global
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
  return _case(
    target,
    "train",
    batch_size,
    memory,
    step_flops / len(target.devices),
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
  return _case(
    target,
    "decode",
    batch_size,
    memory,
    token_flops * batch_size / len(target.devices),
    params=num_params,
    cache_length=model_config.max_decode_length,
  )


def compile_case(config: ml_collections.ConfigDict, topology: str, what: str, **kwargs):
  if what not in WHAT:
    raise ValueError(f"unknown --what {what!r}; choose from {WHAT}")
  return (compile_train if what == "train" else compile_decode)(config, topology, **kwargs)
