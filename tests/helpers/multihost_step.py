"""The bare multi-host training-step check of tests/test_multihost.py: three steps of the tiny
model on a (2, 2, 2) mesh, each process feeding only its rows of the batch.

Each process of the two-process job (tests/helpers/multihost_train.py) calls `train_steps` once it
has joined the job; the test calls it in its own process of 8 devices for the one-process answer.
"""


def train_steps(process_id: int, num_processes: int) -> dict:
  """Runs three steps with this process's rows; returns the losses, process and device counts."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from gato_jax import sharding  # pylint: disable=g-import-not-at-top
  from gato_jax.model import ModelConfig  # pylint: disable=g-import-not-at-top
  from gato_jax.model.gato import dummy_batch  # pylint: disable=g-import-not-at-top
  from gato_jax.training.optimizer import OptimizerConfig  # pylint: disable=g-import-not-at-top
  from gato_jax.training.step import (  # pylint: disable=g-import-not-at-top
    create_train_state,
    make_train_step,
  )

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
    tokens=rng.integers(32000, 33024, (8, 24)).astype(np.int32),
    loss_mask=rng.random((8, 24)) < 0.5,
  )
  rows = 8 // num_processes
  local = jax.tree.map(lambda x: x[process_id * rows : (process_id + 1) * rows], full)
  batch = sharding.global_batch(local, mesh, trainer.rules)
  step = make_train_step(trainer, full)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return {"losses": losses, "processes": jax.process_count(), "devices": jax.device_count()}
