"""Device mesh, logical-axis rules and shardings derived from abstract state.

Model code names axes logically (weights: embed, mlp, heads, kv, vocab, layers; activations:
act_batch, act_len, act_embed, act_heads, act_mlp). A rules table, chosen in config, maps them
to the mesh axes `data`, `fsdp` and `tensor`, as MaxText and t5x do. Nothing here builds a
full model on one device: shardings come from `jax.eval_shape` results.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Rule presets: logical name -> mesh axis (or axes, or None for replicated).
RULES: dict[str, tuple[tuple[str, Any], ...]] = {
  # Parameters replicated; the batch split over every device.
  "data_parallel": (("act_batch", ("data", "fsdp")),),
  # ZeRO-3 style: parameters and optimizer state split over `fsdp`, gathered per layer.
  "fsdp": (
    ("act_batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", None),
  ),
  # FSDP plus Megatron-style tensor parallelism over `tensor`.
  "fsdp_tensor": (
    ("act_batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
  ),
}


def axis_rules(preset_or_rules) -> tuple[tuple[str, Any], ...]:
  """A rules table from a preset name or an explicit sequence of (logical, mesh) pairs."""
  if isinstance(preset_or_rules, str):
    if preset_or_rules not in RULES:
      raise ValueError(f"unknown sharding rules {preset_or_rules!r}; presets: {sorted(RULES)}")
    return RULES[preset_or_rules]
  rules = tuple((str(name), axes) for name, axes in preset_or_rules)
  for name, axes in rules:
    for axis in axes if isinstance(axes, (tuple, list)) else [axes]:
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"rule {name!r} -> {axes!r} names an unknown mesh axis; use {MESH_AXES}")
  return rules


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 with what the other axes leave; checks the product is the device count."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape}: sizes must be positive, with at most one -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh shape {shape} does not divide the {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if int(np.prod(shape)) != num_devices:
    raise ValueError(
      f"mesh shape {shape} needs {int(np.prod(shape))} devices, but {num_devices} are available"
    )
  return shape


def create_mesh(shape: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  if len(devices) > 1 and devices[0].platform != "cpu":
    from jax.experimental import mesh_utils  # Topology-aware placement on TPU/GPU pods.

    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_shardings(abstract_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a (boxed) abstract tree; un-annotated leaves are replicated."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, axis_rules(rules))


def sharded_abstract(abstract_tree, mesh: Mesh, rules) -> tuple[Any, Any]:
  """(The tree as ShapeDtypeStructs carrying their NamedShardings, those shardings).

  `abstract_tree` is a boxed `jax.eval_shape` result (e.g. of a model's initialiser): a restore
  or an ahead-of-time compile takes the first, `jax.jit(out_shardings=...)` the second, and
  nothing is ever built.
  """
  shardings = logical_shardings(abstract_tree, mesh, rules)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    nn.unbox(abstract_tree),
    shardings,
  )
  return abstract, shardings


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dimension split as the rules split `act_batch`, the rest replicated."""
  spec = nn.logical_to_mesh_axes(("act_batch",) + (None,) * (ndim - 1), axis_rules(rules))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def maybe_initialize_distributed(
  multi_host: bool,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  cpu_collectives: str | None = None,
) -> None:
  """Joins a multi-host job; on one host (the default) it does nothing.

  On TPU pods and SLURM/GPU clusters `jax.distributed.initialize()` finds its peers from the
  environment; elsewhere (e.g. CPU processes on localhost) pass the coordinator explicitly, and
  `cpu_collectives="gloo"` so that CPU devices of different processes can talk. Must run before
  anything touches `jax.devices()`.
  """
  if not multi_host:
    return
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = {}
  if coordinator_address:
    kwargs = dict(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
  jax.distributed.initialize(**kwargs)


def require_one_host(what: str) -> None:
  """Refuses, in one line, to run `what` (which needs one host) in a multi-host job.

  Evaluation steps environments on the host and reads whole model outputs there, which the
  processes of a pod cannot do together; it runs on one host instead (orbax restores a
  checkpoint a pod wrote onto that host's devices).
  """
  if jax.process_count() > 1:
    raise ValueError(
      f"{what} runs on one host, not on the {jax.process_count()} processes of this job:"
      " evaluate on one worker with experiments/eval.py --config.mesh.multi_host=false"
      " (and a mesh of that host's devices)"
    )


def initialize_from_config(config) -> None:
  """Joins the multi-host job `config.mesh` describes (`mesh.multi_host`); else does nothing.

  Every launcher calls this before any JAX computation (JAX refuses to join a job after one);
  calling it again once joined does nothing, so library entry points call it too.
  """
  mesh = config.mesh
  if not mesh.multi_host or jax.distributed.is_initialized():
    return
  maybe_initialize_distributed(
    True,
    coordinator_address=mesh.coordinator_address or None,
    num_processes=mesh.num_processes or None,
    process_id=mesh.process_id if mesh.process_id >= 0 else None,
    cpu_collectives=mesh.cpu_collectives or None,
  )


def global_batch(local_batch, mesh: Mesh, rules) -> Any:
  """Assembles each process's rows into global arrays split as `act_batch` says.

  Every process passes only the rows it read (its data shard, in process order); the result is a
  tree of global `jax.Array`s whose leading dimension is the sum over processes. On one process
  this is a plain sharded `device_put`.
  """

  def assemble(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x)

  return jax.tree.map(assemble, local_batch)
