"""Text for Gato: CPython's own documentation as an offline corpus, and TFDS text sets by name.

The default corpus is the English every CPython carries: the reference manual's topics
(`pydoc_data.topics`) and the docstrings and prose comments of the standard library (read with
`ast`/`tokenize`, nothing imported). On CPython 3.11 that is 5.7 MB in 13,000 documents; the
same function feeds tools/train_vocab.py, so the vocabulary and the text data agree.

`split_documents` dedupes the documents and assigns each to "train" or "validation" by a hash of
its text (and the seed): deterministic, independent of document order, and a repeated document
never lands in both splits. The task `text/cpython_docs` stores both splits as the TFDS dataset
gato_text/cpython_docs with one feature, `text`, the layout of TFDS's `lm1b` and (plus metadata)
`c4`; `read_text` reads any of them:

  read_text("gato_text/cpython_docs", "validation", data_dir="~/.cache/gato_jax")
  read_text("lm1b", "test", data_dir="~/tensorflow_datasets")
  read_text("c4/en", "validation", data_dir="gs://my-bucket/tfds")
"""

import ast
import functools
import io
import pathlib
import sysconfig
import tokenize
import zlib
from typing import Iterator

from gato_jax.data import examples
from gato_jax.sources import example_sets

VALIDATION_FRACTION = 0.02


def _docstrings(tree: ast.AST):
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node)
      if doc:
        yield doc


def _comment_lines(source: str):
  """Prose comments (at least four words), which are English more often than short ones."""
  try:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
      if token.type == tokenize.COMMENT:
        text = token.string.lstrip("#").strip()
        if len(text.split()) >= 4:
          yield text
  except (tokenize.TokenError, SyntaxError):
    return


def build_corpus(stdlib_dir: str | None = None, with_topics: bool = True) -> list[str]:
  """CPython's documentation as documents, in a fixed order (same Python, same corpus).

  Args:
    stdlib_dir: the directory of .py files to read docstrings and comments from; the running
      interpreter's standard library when None (about 25 s on one core).
    with_topics: whether to start with the reference manual's topics (pydoc_data).

  Returns:
    The documents: topics sorted by name, then per file (sorted by path) its docstrings and
    its prose comments joined by newlines.
  """
  documents = []
  if with_topics:
    import pydoc_data.topics

    documents = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
  stdlib = pathlib.Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
  if not stdlib.is_dir():
    raise FileNotFoundError(f"no directory of Python sources at {stdlib}")
  for path in sorted(stdlib.rglob("*.py")):
    if "site-packages" in path.parts:
      continue
    try:
      source = path.read_text(encoding="utf-8")
      tree = ast.parse(source)
    except (UnicodeDecodeError, SyntaxError, ValueError):
      continue  # A few stdlib test files are deliberately malformed.
    documents.extend(_docstrings(tree))
    comments = list(_comment_lines(source))
    if comments:
      documents.append("\n".join(comments))
  return documents


def split_of(document: str, seed: int = 0, validation_fraction: float = VALIDATION_FRACTION) -> str:
  """ "train" or "validation" for one document: a hash of its text and the seed."""
  bucket = zlib.crc32(f"{seed}\x00{document}".encode("utf-8")) % 100_000
  return "validation" if bucket < validation_fraction * 100_000 else "train"


def split_documents(
  documents: list[str], seed: int = 0, validation_fraction: float = VALIDATION_FRACTION
) -> dict[str, list[str]]:
  """Deduped documents by split, each split in corpus order.

  Args:
    documents: the corpus.
    seed: changes which documents are held out.
    validation_fraction: the expected share of documents in "validation".

  Returns:
    {"train": [...], "validation": [...]}.
  """
  if not 0 <= validation_fraction < 1:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
  splits = {"train": [], "validation": []}
  seen = set()
  for document in documents:
    text = document.replace("\r", "").strip()
    if not text or text in seen:
      continue  # Stdlib docstrings repeat ("Return repr(self)."); one copy is enough.
    seen.add(text)
    splits[split_of(text, seed, validation_fraction)].append(text)
  return splits


@functools.cache
def _cpython_splits(seed: int) -> dict[str, list[str]]:
  return split_documents(build_corpus(), seed)


class CPythonDocs(example_sets.ExampleTask):
  """The CPython documentation corpus, one example {"text": document} per document."""

  name = "text/cpython_docs"
  dataset = "gato_text"
  source = "cpython"

  def features(self, tfds) -> dict:
    return {"text": tfds.features.Text()}

  def split_sizes(self, num_items: int, seed: int) -> dict[str, int]:
    del num_items  # The corpus decides.
    return {split: len(docs) for split, docs in _cpython_splits(seed).items()}

  def examples(self, split: str, index: int, seed: int) -> list[dict]:
    return [{"text": _cpython_splits(seed)[split][index]}]

  def num_tokens(self, example: dict) -> int:
    return len(_text_tokenizer().encode(example["text"]))


@functools.cache
def _text_tokenizer():
  from gato_jax.tokenizer import text as text_tokenizer

  return text_tokenizer.TextTokenizer()


TASKS = {"cpython_docs": CPythonDocs}


def read_text(
  source: str,
  split: str = "train",
  data_dir: str | None = None,
  text_key: str = "text",
  limit: int | None = None,
) -> Iterator[str]:
  """Yields the documents of a TFDS text set, in stored order.

  Args:
    source: "gato_text/cpython_docs" (ours), a public TFDS name such as "lm1b" or "c4/en", or a
      dataset directory.
    split: e.g. "train", "validation" ("test" for lm1b).
    data_dir: where to look up names.
    text_key: the feature holding the text ("text" in lm1b, c4 and ours).
    limit: stop after this many documents.
  """
  ds = examples.load_split(source, split, data_dir)
  if text_key not in ds.element_spec:
    raise KeyError(
      f"{source!r} has no text feature {text_key!r}; it has"
      f" {sorted(ds.element_spec)}; pass text_key"
    )
  ds = ds.map(lambda example: example[text_key])
  if limit is not None:
    ds = ds.take(limit)
  for text in ds.as_numpy_iterator():
    yield text.decode("utf-8")
