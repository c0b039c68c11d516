"""The CPython documentation corpus, its splits and TFDS storage, and TFDS text sets by name."""

import importlib.util
import os
import random

import pytest

from gato_jax import tokenizer as T
from gato_jax.data import rlds_io
from gato_jax.sources import example_sets, text_data

from helpers.scripts import run_python

_SOURCES = {
  "pkg/alpha.py": '"""Alpha module docstring."""\n\n# A prose comment with enough words.\n'
  'def f():\n  """Return one."""\n  return 1  # short one\n',
  "pkg/beta.py": 'class B:\n  """Beta class docstring."""\n',
  "pkg/broken.py": "def (:\n",  # Deliberately malformed, as some stdlib test files are.
  "site-packages/skip.py": '"""Not the standard library."""\n',
}


@pytest.fixture
def source_tree(tmp_path):
  for relative, text in _SOURCES.items():
    path = tmp_path / "lib" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(tmp_path / "lib")


def test_corpus_reads_docstrings_and_prose_comments_in_a_fixed_order(source_tree):
  documents = text_data.build_corpus(source_tree, with_topics=False)
  assert documents == [
    "Alpha module docstring.",
    "Return one.",
    "A prose comment with enough words.",
    "Beta class docstring.",
  ]
  assert text_data.build_corpus(source_tree, with_topics=False) == documents
  import pydoc_data.topics

  topics = pydoc_data.topics.topics
  assert text_data.build_corpus(source_tree) == [topics[k] for k in sorted(topics)] + documents


def test_train_vocab_uses_the_library_corpus():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "train_vocab.py")
  spec = importlib.util.spec_from_file_location("train_vocab_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.build_corpus is text_data.build_corpus


def test_splits_are_deterministic_deduped_and_order_free():
  documents = [f"document number {i}" for i in range(3000)] + ["document number 5", " "]
  splits = text_data.split_documents(documents, seed=0)
  assert splits == text_data.split_documents(documents, seed=0)
  assert not set(splits["train"]) & set(splits["validation"])
  assert len(splits["train"]) + len(splits["validation"]) == 3000  # Duplicate and blank gone.
  assert 30 <= len(splits["validation"]) <= 90  # 2% of 3000 is 60.
  assert splits["train"] == sorted(splits["train"], key=lambda d: int(d.split()[-1]))
  shuffled = list(documents)
  random.Random(0).shuffle(shuffled)
  again = text_data.split_documents(shuffled, seed=0)
  assert set(again["validation"]) == set(splits["validation"])
  assert set(text_data.split_documents(documents, seed=1)["validation"]) != set(
    splits["validation"]
  )


def test_cpython_docs_generation_round_trips(tmp_path, source_tree, monkeypatch):
  small = text_data.build_corpus(source_tree)  # Topics and the small tree: fast.
  monkeypatch.setattr(text_data, "build_corpus", lambda: small)
  text_data._cpython_splits.cache_clear()
  try:
    kwargs = dict(num_items=1, seed=0, shard_items=25, progress=lambda line: None)
    summary = example_sets.generate_task("text/cpython_docs", str(tmp_path), **kwargs)
    expected = text_data.split_documents(small, seed=0)
    assert summary.status == "generated" and summary.dataset_dir == str(
      tmp_path / "gato_text" / "cpython_docs" / "1.0.0"
    )
    assert summary.episodes == summary.steps == sum(map(len, expected.values()))
    tok = T.TextTokenizer()
    assert summary.tokens == sum(len(tok.encode(d)) for docs in expected.values() for d in docs)
    for split in ("train", "validation"):
      stored = list(text_data.read_text("gato_text/cpython_docs", split, data_dir=str(tmp_path)))
      assert stored == expected[split]
    again = example_sets.generate_task("text/cpython_docs", str(tmp_path), **kwargs)
    assert again.status == "existing" and again.tokens == summary.tokens
  finally:
    text_data._cpython_splits.cache_clear()


def test_lm1b_and_c4_load_by_name(tmp_path):
  tfds = rlds_io.import_tfds()
  text = tfds.features.Text()
  # TFDS lm1b 1.1.0: {"text"}, splits train/test; c4/en 3.1.0: {"text", "url", ...}.
  example_sets.write_examples(
    {
      "train": [{"text": "The cat sat."}, {"text": "On the mat."}],
      "test": [{"text": "A held-out sentence."}],
    },
    {"text": text},
    str(tmp_path),
    "lm1b",
    None,
    version="1.1.0",
  )
  c4_keys = ("text", "url", "content-type", "content-length", "timestamp")
  pages = [
    {
      "text": f"Page {i} of the web.",
      "url": f"https://example.com/{i}",
      "content-type": "text/plain",
      "content-length": "20",
      "timestamp": "2019-04-25T12:57:54Z",
    }
    for i in range(3)
  ]
  example_sets.write_examples(
    {"validation": pages}, {k: text for k in c4_keys}, str(tmp_path), "c4", "en", version="3.1.0"
  )
  assert list(text_data.read_text("lm1b", "train", data_dir=str(tmp_path))) == [
    "The cat sat.",
    "On the mat.",
  ]
  assert list(text_data.read_text("lm1b", "test", data_dir=str(tmp_path))) == [
    "A held-out sentence."
  ]
  assert list(text_data.read_text("c4/en", "validation", data_dir=str(tmp_path), limit=2)) == [
    "Page 0 of the web.",
    "Page 1 of the web.",
  ]
  by_path = text_data.read_text(str(tmp_path / "c4" / "en" / "3.1.0"), "validation")
  assert next(by_path) == "Page 0 of the web."


def test_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no TFDS dataset"):
    next(text_data.read_text("no_such_corpus", data_dir=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="not prepared"):
    next(text_data.read_text("lm1b", data_dir=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="no dataset directory"):
    next(text_data.read_text(str(tmp_path / "missing")))
  with pytest.raises(FileNotFoundError, match="no directory of Python sources"):
    text_data.build_corpus(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="unknown text task"):
    example_sets.make_task("text/wikipedia")
  with pytest.raises(ValueError, match="validation_fraction"):
    text_data.split_documents(["a"], validation_fraction=1.0)
  tfds = rlds_io.import_tfds()
  example_sets.write_examples(
    {"train": [{"body": "x"}]}, {"body": tfds.features.Text()}, str(tmp_path), "bodies", None
  )
  with pytest.raises(KeyError, match="no text feature 'text'"):
    next(text_data.read_text("bodies", data_dir=str(tmp_path)))
  assert next(text_data.read_text("bodies", data_dir=str(tmp_path), text_key="body")) == "x"
  with pytest.raises(ValueError, match="no split"):
    next(text_data.read_text("bodies", "validation", data_dir=str(tmp_path)))
  with pytest.raises(FileExistsError):
    example_sets.write_examples(
      {"train": [{"body": "y"}]}, {"body": tfds.features.Text()}, str(tmp_path), "bodies", None
    )


def test_importing_the_text_and_vision_language_modules_does_not_import_tensorflow():
  code = (
    "import sys; import gato_jax.sources.text_data, gato_jax.sources.vision_language,"
    " gato_jax.sources.example_sets, gato_jax.sources.shape_scenes;"
    " assert 'tensorflow' not in sys.modules, 'TF imported'"
  )
  run_python("-c", code)
