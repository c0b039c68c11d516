"""The Gato network: embeddings, causal decoder, shared output projection."""

from gato_jax.model.config import NOMINAL_PARAMS, SIZES, ModelConfig
from gato_jax.model.gato import Gato, count_params, dummy_batch, init_variables
from gato_jax.model.inputs import Batch, batch_from_token_groups
