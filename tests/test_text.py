"""Text tokenizer: the packaged SentencePiece model, user models, SeqIO, and bad files."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from gato_jax import tokenizer as T


def test_packaged_model_round_trips_english():
  tok = T.TextTokenizer()
  assert tok.vocab_size == T.TEXT_VOCAB_SIZE == 32000
  assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  text = "Pick up the red ball next to the green door, then open it."
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 32000
  assert len(ids) < len(text.split()) * 2  # Mostly whole words: a real English vocabulary.
  assert tok.decode(ids) == text
  assert tok.decode(np.concatenate([ids, [tok.eos_id, tok.pad_id]])) == text
  assert tok.encode(text.encode()).tolist() == ids.tolist()
  # Unseen characters fall back to bytes rather than UNK: nothing is lost.
  assert tok.decode(tok.encode("naïve — 東京 🙂")) == "naïve — 東京 🙂"


def test_user_model_by_path(tmp_path):
  path = tmp_path / "copy.model"
  shutil.copy(T.DEFAULT_SPM_MODEL, path)
  assert (
    T.TextTokenizer(path).encode("hello").tolist() == T.TextTokenizer().encode("hello").tolist()
  )


def test_small_user_model_and_oversized_model(tmp_path):
  import sentencepiece as spm

  corpus = tmp_path / "corpus.txt"
  corpus.write_text(
    "\n".join(f"the agent number {i} picks up a ball and opens door {i % 7}" for i in range(300))
  )
  spm.SentencePieceTrainer.train(
    input=str(corpus),
    model_prefix=str(tmp_path / "small"),
    vocab_size=60,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    minloglevel=2,
  )
  small = T.TextTokenizer(tmp_path / "small.model")
  assert small.vocab_size == 60
  assert small.decode(small.encode("the agent picks up a ball")) == "the agent picks up a ball"


def test_bad_model_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such.model"):
    T.TextTokenizer(tmp_path / "no_such.model")
  corrupt = tmp_path / "corrupt.model"
  corrupt.write_bytes(b"this is not a sentencepiece model")
  with pytest.raises(ValueError, match="not a valid SentencePiece model"):
    T.TextTokenizer(corrupt)
  tok = T.TextTokenizer()
  with pytest.raises(ValueError, match=r"\[0, 32000\)"):
    tok.decode(np.array([5, 32000]))
  with pytest.raises(TypeError, match="str or bytes"):
    tok.encode(5)


def test_oversized_vocabulary_is_refused(tmp_path, monkeypatch):
  # Building a >32,000-piece model takes too long for a unit test; fake the piece count.
  monkeypatch.setattr(T.TextTokenizer, "vocab_size", property(lambda self: 32100))
  with pytest.raises(ValueError, match="32100 pieces"):
    T.TextTokenizer()


def test_seqio_vocabulary_matches():
  vocab = T.seqio_vocabulary()
  tok = T.TextTokenizer()
  text = "The agent opens the yellow door."
  assert vocab.vocab_size == 32000
  assert list(vocab.encode(text)) == tok.encode(text).tolist()
  assert vocab.decode(tok.encode(text).tolist()) == text
  assert tok.seqio_vocabulary.encode(text) == vocab.encode(text)
  import tensorflow as tf

  assert tf.config.get_visible_devices("GPU") == []  # JAX owns the accelerators.
  np.testing.assert_array_equal(vocab.encode_tf(tf.constant(text)).numpy(), tok.encode(text))


def test_vocabulary_script_is_deterministic(tmp_path):
  """Retraining from the CPython corpus reproduces the shipped model's pieces."""
  import sentencepiece as spm

  out = tmp_path / "retrained.model"
  subprocess.run(
    [sys.executable, "tools/train_vocab.py", f"--output={out}"],
    check=True,
    capture_output=True,
    cwd=str(__import__("pathlib").Path(__file__).parents[1]),
  )
  if out.read_bytes() != open(T.DEFAULT_SPM_MODEL, "rb").read():
    # Other CPython patch releases ship slightly different docs; the scheme must still hold.
    model = spm.SentencePieceProcessor(model_file=str(out))
    assert model.vocab_size() == 32000
    pytest.skip(
      f"CPython {sys.version.split()[0]} docs differ from those the shipped model was built from"
    )
