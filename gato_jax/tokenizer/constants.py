"""Token-id layout shared by the tokenizer, the model and the data pipeline.

Ids [0, 32000) are SentencePiece text pieces, [32000, 33024) are the 1024 value bins (discrete
values and discretised continuous values share them, as in the paper), and 33024 is the `|`
separator between a timestep's observation and its action. The paper leaves discrete values
unshifted, which would collide with text ids; we shift them (docs/design.md, Tokens).
"""

import enum

TEXT_VOCAB_SIZE = 32000
NUM_BINS = 1024
VALUE_OFFSET = TEXT_VOCAB_SIZE
SEPARATOR_ID = VALUE_OFFSET + NUM_BINS  # 33024
VOCAB_SIZE = SEPARATOR_ID + 1  # 33025 ids in all.

# Continuous observations are mu-law companded before binning (docs/design.md, Tokens).
MU_LAW_MU = 100.0
MU_LAW_M = 256.0

# Local observation positions index a learned table of this many entries; action tokens and the
# separator carry NO_LOCAL_POSITION instead (paper, Figure 18).
NUM_LOCAL_POSITIONS = 512
NO_LOCAL_POSITION = -1

# Images are cut into non-overlapping square patches of this side, in pixels.
PATCH_SIZE = 16


class TokenKind(enum.IntEnum):
  """What a token slot holds; PAD marks slots that hold nothing (used by batching)."""

  PAD = 0
  TEXT = 1
  VALUE = 2
  IMAGE_PATCH = 3
  SEPARATOR = 4


def padded_vocab_size(multiple: int = 128) -> int:
  """The embedding table's rows: VOCAB_SIZE rounded up to `multiple` (docs/design.md, Tokens)."""
  if multiple <= 0:
    raise ValueError(f"multiple must be positive, got {multiple}")
  return -(-VOCAB_SIZE // multiple) * multiple
