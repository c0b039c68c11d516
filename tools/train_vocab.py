r"""Trains gato_jax's default SentencePiece model from English text every CPython ships.

The corpus is the Python documentation that is available offline on any machine with Python:
the reference manual's topics (`pydoc_data.topics`) and the docstrings and comments of the
standard library (read with `ast`/`tokenize`, nothing imported), as built by
`gato_jax.sources.text_data.build_corpus`, which also makes the text dataset text/cpython_docs.
On CPython 3.11 that is 5.7 MB of English prose in 13,000 documents, enough for 32,000 BPE
pieces; a unigram model on it supports at most 20,978 pieces (SentencePiece refuses more: its
seed lexicon of frequent substrings runs out), which is why the default is BPE. For a general-domain vocabulary pass any T5/C4 `.model` file in config instead.

Usage:
  python tools/train_vocab.py --output=gato_jax/tokenizer/assets/gato_text_32k.model
"""

import os
import tempfile

from absl import app, flags, logging

from gato_jax.sources.text_data import build_corpus

_OUTPUT = flags.DEFINE_string(
  "output", "gato_jax/tokenizer/assets/gato_text_32k.model", "Where to write the .model file."
)
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 32000, "Number of pieces; at most 32000.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "bpe", ["bpe", "unigram"], "SentencePiece algorithm.")
_CORPUS_OUT = flags.DEFINE_string("corpus_out", None, "Optionally keep the corpus text here.")


def _without_local_paths(serialized: bytes) -> bytes:
  """Drops the temporary corpus path SentencePiece records, so reruns give identical bytes."""
  from sentencepiece import sentencepiece_model_pb2

  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(serialized)
  del model.trainer_spec.input[:]
  model.trainer_spec.input.append("cpython-stdlib-docs")
  model.trainer_spec.model_prefix = "gato_text_32k"
  return model.SerializeToString()


def train(output: str, vocab_size: int, model_type: str, corpus_out: str | None = None) -> None:
  import sentencepiece as spm

  if not 0 < vocab_size <= 32000:
    raise ValueError(
      f"vocab_size must be in (0, 32000] to fit Gato's text id range, got {vocab_size}"
    )
  documents = build_corpus()
  with tempfile.TemporaryDirectory() as tmp:
    corpus = corpus_out or os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
      for doc in documents:
        f.write(doc.replace("\r", "") + "\n")
    logging.info("corpus: %d documents, %d bytes", len(documents), os.path.getsize(corpus))
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
      input=corpus,
      model_prefix=prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      # T5/SeqIO conventions: pad 0, EOS 1, UNK 2, no BOS.
      pad_id=0,
      eos_id=1,
      unk_id=2,
      bos_id=-1,
      # Unseen characters become UTF-8 byte pieces instead of UNK: no text is lost.
      byte_fallback=True,
      character_coverage=0.9995,
      split_digits=True,
      input_sentence_size=0,
      max_sentence_length=16384,
      num_threads=1,  # One thread keeps training deterministic.
      minloglevel=1,
    )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(prefix + ".model", "rb") as f:
      model = _without_local_paths(f.read())
    with open(output, "wb") as f:
      f.write(model)
  logging.info("wrote %s (%d pieces, %s)", output, vocab_size, model_type)


def main(argv):
  del argv
  train(_OUTPUT.value, _VOCAB_SIZE.value, _MODEL_TYPE.value, _CORPUS_OUT.value)


if __name__ == "__main__":
  app.run(main)
