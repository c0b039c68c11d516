"""The Gato network: embeddings, causal decoder, shared output projection."""

from gato_jax.model.config import NOMINAL_PARAMS, SIZES, ModelConfig
from gato_jax.model.gato import (
  Gato,
  abstract_params,
  count_params,
  dummy_batch,
  init_variables,
  param_shapes,
)
from gato_jax.model.inputs import Batch, batch_from_token_groups
