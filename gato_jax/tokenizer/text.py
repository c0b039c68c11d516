"""Text to ids with SentencePiece; the same model file serves SeqIO as a `seqio.Vocabulary`.

The package ships a 32,000-piece model trained by `tools/train_vocab.py` on English text that
every CPython installation carries; any other SentencePiece model (the T5/C4 32k vocabulary is
the usual choice) loads by path. Text ids must stay below TEXT_VOCAB_SIZE so that they never
collide with value ids, so larger models are refused.
"""

import functools
import os
import pathlib
from typing import Sequence

import numpy as np

from gato_jax.tokenizer.constants import TEXT_VOCAB_SIZE

DEFAULT_SPM_MODEL = str(pathlib.Path(__file__).parent / "assets" / "gato_text_32k.model")


class TextTokenizer:
  """SentencePiece text tokenizer producing ids in [0, TEXT_VOCAB_SIZE).

  Args:
    model_path: a SentencePiece `.model` file; None selects the packaged default.
  """

  def __init__(self, model_path: str | os.PathLike | None = None):
    import sentencepiece  # Local: only text users pay for it.

    self.model_path = str(model_path) if model_path is not None else DEFAULT_SPM_MODEL
    if not os.path.isfile(self.model_path):
      raise FileNotFoundError(
        f"SentencePiece model file not found: {self.model_path!r}. Pass the path of a"
        " `.model` file (train one with tools/train_vocab.py), or None for the packaged one."
      )
    with open(self.model_path, "rb") as f:
      self._proto = f.read()
    self._processor = sentencepiece.SentencePieceProcessor()
    try:
      self._processor.LoadFromSerializedProto(self._proto)
    except Exception as e:  # sentencepiece raises bare RuntimeError/OSError with terse text.
      raise ValueError(f"{self.model_path!r} is not a valid SentencePiece model: {e}") from e
    if self.vocab_size > TEXT_VOCAB_SIZE:
      raise ValueError(
        f"SentencePiece model {self.model_path!r} has {self.vocab_size} pieces; Gato reserves"
        f" only [0, {TEXT_VOCAB_SIZE}) for text (ids above belong to values and the separator)"
      )

  @property
  def vocab_size(self) -> int:
    return self._processor.GetPieceSize()

  @property
  def pad_id(self) -> int:
    return self._processor.pad_id()

  @property
  def eos_id(self) -> int:
    return self._processor.eos_id()

  @property
  def unk_id(self) -> int:
    return self._processor.unk_id()

  def encode(self, text: str | bytes) -> np.ndarray:
    """One string -> int32 ids [num_pieces] (no EOS appended)."""
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    if not isinstance(text, str):
      raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    return np.asarray(self._processor.EncodeAsIds(text), dtype=np.int32)

  def encode_batch(self, texts: Sequence[str | bytes]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    """Ids -> string; pad and EOS ids are dropped, ids outside the text range are an error."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"decode expects a 1-D integer array, got {ids.dtype}{list(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ValueError(
        f"text ids must lie in [0, {self.vocab_size}); got min {ids.min()}, max {ids.max()}"
      )
    keep = (ids != self.pad_id) & (ids != self.eos_id)
    return self._processor.DecodeIds(ids[keep].tolist())

  def id_to_piece(self, token_id: int) -> str:
    return self._processor.IdToPiece(int(token_id))

  @functools.cached_property
  def seqio_vocabulary(self):
    """The same model as a `seqio.SentencePieceVocabulary` (imports TensorFlow and SeqIO)."""
    return seqio_vocabulary(self.model_path)


def seqio_vocabulary(model_path: str | os.PathLike | None = None):
  """A `seqio.SentencePieceVocabulary` over `model_path` (default: the packaged model).

  No extra ids are added: seqio's default of 100 sentinel ids would push text past 32,000.
  """
  from gato_jax import tf_compat

  tf_compat.import_tensorflow()
  import seqio

  path = str(model_path) if model_path is not None else DEFAULT_SPM_MODEL
  TextTokenizer(path)  # Validates existence, format and size with our error messages.
  return seqio.SentencePieceVocabulary(path, extra_ids=0)


def is_seqio_vocabulary(vocabulary, model_path: str | os.PathLike | None = None) -> bool:
  """Whether `vocabulary` encodes text as `seqio_vocabulary(model_path)` does: the same
  SentencePiece model (a copy of the file counts) and no extra ids, so its ids are Gato's."""
  from gato_jax import tf_compat

  tf_compat.import_tensorflow()
  import seqio

  if not isinstance(vocabulary, seqio.SentencePieceVocabulary) or vocabulary.extra_ids:
    return False
  return vocabulary.sp_model == seqio_vocabulary(model_path).sp_model
