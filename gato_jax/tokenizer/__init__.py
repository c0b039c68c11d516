"""Gato's tokenizer: text, discrete and continuous values, image patches and the separator.

Pure functions over numpy (host pipeline, with value checks) or jax arrays (under jit/vmap).
See docs/design.md, section Tokens, for the scheme this implements.
"""

from gato_jax.tokenizer.constants import (
  MU_LAW_M,
  MU_LAW_MU,
  NO_LOCAL_POSITION,
  NUM_BINS,
  NUM_LOCAL_POSITIONS,
  PATCH_SIZE,
  SEPARATOR_ID,
  TEXT_VOCAB_SIZE,
  VALUE_OFFSET,
  VOCAB_SIZE,
  TokenKind,
  padded_vocab_size,
)
from gato_jax.tokenizer.images import image_to_patches, num_patches, patch_intervals
from gato_jax.tokenizer.specs import (
  ContinuousSpec,
  DiscreteSpec,
  ImageSpec,
  TextSpec,
  action_token_id_ranges,
  num_action_tokens,
)
from gato_jax.tokenizer.text import DEFAULT_SPM_MODEL, TextTokenizer, seqio_vocabulary
from gato_jax.tokenizer.timestep import (
  TokenGroup,
  concat_token_groups,
  detokenize_action,
  tokenize_episode,
  tokenize_timestep,
)
from gato_jax.tokenizer.values import (
  detokenize_continuous,
  detokenize_discrete,
  discretize,
  mu_law_decode,
  mu_law_encode,
  tokenize_continuous,
  tokenize_discrete,
  undiscretize,
)
