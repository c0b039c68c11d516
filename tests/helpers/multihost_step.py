"""One process of a multi-host training-step check: run by tests/test_multihost.py.

Usage: python multihost_step.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON
Each process owns 8 / NUM_PROCESSES fake CPU devices and feeds only its rows of the batch.
"""

import json
import os
import sys

process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // num_processes}"
os.environ["JAX_PLATFORMS"] = "cpu"

from gato_jax import sharding  # noqa: E402

sharding.maybe_initialize_distributed(
  num_processes > 1,
  coordinator_address=f"127.0.0.1:{port}",
  num_processes=num_processes,
  process_id=process_id,
  cpu_collectives="gloo",
)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gato_jax.model import ModelConfig  # noqa: E402
from gato_jax.model.gato import dummy_batch  # noqa: E402
from gato_jax.training.optimizer import OptimizerConfig  # noqa: E402
from gato_jax.training.step import create_train_state, make_train_step  # noqa: E402

cfg = ModelConfig.from_size("tiny", stochastic_depth=0.0)
mesh = sharding.create_mesh((2, 2, 2))
state, trainer = create_train_state(
  cfg,
  OptimizerConfig(peak_learning_rate=1e-2, warmup_steps=1, decay_steps=10),
  mesh,
  "fsdp_tensor",
  jax.random.key(0),
)
rng = np.random.default_rng(0)
full = dummy_batch(8, 24, 0, cfg).replace(
  tokens=rng.integers(32000, 33024, (8, 24)).astype(np.int32), loss_mask=rng.random((8, 24)) < 0.5
)
rows = 8 // num_processes
local = jax.tree.map(lambda x: x[process_id * rows : (process_id + 1) * rows], full)
batch = sharding.global_batch(local, mesh, trainer.rules)
step = make_train_step(trainer, full)
losses = []
for _ in range(3):
  state, metrics = step(state, batch, jax.random.key(1))
  losses.append(float(metrics["loss"]))
if process_id == 0:
  with open(out, "w") as f:
    json.dump(
      {"losses": losses, "processes": jax.process_count(), "devices": jax.device_count()}, f
    )
