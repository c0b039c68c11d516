"""A run directory as the trainer leaves it, without training: a config's initial state saved."""

import jax

from gato_jax import checkpoint, sharding
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import TrainState, create_train_state


def save_initial_state(config, workdir, step: int) -> TrainState:
  """Saves `config`'s freshly initialised train state (seed 0, one device) as checkpoint `step`
  in `workdir/checkpoints`; returns the state."""
  mesh = sharding.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  state, _ = create_train_state(
    ModelConfig.from_dict(config.model),
    OptimizerConfig.from_dict(config.optimizer),
    mesh,
    "fsdp",
    jax.random.key(0),
  )
  saver = checkpoint.Checkpointer(f"{workdir}/checkpoints", async_save=False)
  saver.save(step, state)
  saver.close()
  return state
