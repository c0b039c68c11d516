"""Tasks that users register the plain SeqIO way join mixtures, or are refused in one line."""

import os
import pathlib
import sys

import numpy as np
import pytest

from gato_jax import pod, tf_compat
from gato_jax import tokenizer as T
from gato_jax.data import pipeline, presets, tasks
from gato_jax.sources import generation
from gato_jax.training import metrics_log

from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).parents[1]
LINES = ["the cat sat on the mat", "hello world, says python", "import this"]

# A T5-style text task over the user's text files, as a module named by data.imports.
USER_MODULE = """
import seqio
from gato_jax import tokenizer

seqio.TaskRegistry.add(
  "user_text",
  source=seqio.TextLineDataSource({{"train": {pattern!r}}}),
  preprocessors=[
    lambda lines: lines.map(lambda line: {{"targets": line}}),
    seqio.preprocessors.tokenize,
    seqio.preprocessors.append_eos,
  ],
  output_features={{"targets": seqio.Feature(tokenizer.seqio_vocabulary(), add_eos=True)}},
)
seqio.TaskRegistry.add(
  "user_bytes",
  source=seqio.TextLineDataSource({{"train": {pattern!r}}}),
  preprocessors=[
    lambda lines: lines.map(lambda line: {{"inputs": line, "targets": line}}),
    seqio.preprocessors.tokenize,
  ],
  output_features={{
    "inputs": seqio.Feature(seqio.ByteVocabulary()),
    "targets": seqio.Feature(tokenizer.seqio_vocabulary()),
  }},
)
"""
REFUSAL = (
  "seqio task 'user_bytes' has features [inputs (ByteVocabulary), targets"
  f" (SentencePieceVocabulary {T.DEFAULT_SPM_MODEL})]; accepted: {tasks.ACCEPTED_FEATURES}"
)


def _write_user_module(tmp_path) -> str:
  texts = tmp_path / "texts"
  texts.mkdir()
  (texts / "a.txt").write_text("\n".join(LINES[:2]) + "\n")
  (texts / "b.txt").write_text(LINES[2] + "\n")
  (tmp_path / "user_tasks.py").write_text(USER_MODULE.format(pattern=str(texts / "*.txt")))
  return str(texts)


@pytest.fixture
def user_tasks(tmp_path, monkeypatch):
  texts = _write_user_module(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  pipeline.register_run_tasks(str(tmp_path / "data"), imports="user_tasks")
  yield texts
  import seqio

  for name in ("user_text", "user_bytes", "user_fields"):
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
  del sys.modules["user_tasks"]  # The next test's module registers them again.


def test_text_task_builds_its_store_from_its_own_dataset(user_tasks, tmp_path):
  assert presets.resolve("user_text=1", {}) == {"user_text": 1.0}
  info = tasks.task_info("user_text")
  assert (info.kind, info.domain, info.builtin) == ("text", "user_text", False)
  store = pipeline.open_store("user_text", pipeline.store_root(str(tmp_path / "data")))
  assert store.directory == str(tmp_path / "data" / "derived" / "user_text" / "train")
  tokenizer = T.TextTokenizer()
  assert len(store) == 3
  for item, line in enumerate(LINES):
    group = store.read(item)
    np.testing.assert_array_equal(group.tokens, [*tokenizer.encode(line), tokenizer.eos_id])
    assert np.all(group.kinds == T.TokenKind.TEXT) and np.all(group.loss_mask)
    assert tokenizer.decode(group.tokens) == line

  # An edited file changes the fingerprint: the store is rebuilt.
  before = info.fingerprint("train")
  with open(os.path.join(user_tasks, "b.txt"), "a") as f:
    f.write("one more line\n")
  assert info.fingerprint("train") != before
  assert len(pipeline.open_store("user_text", pipeline.store_root(str(tmp_path / "data")))) == 4


def test_task_with_token_group_fields_trains_as_it_is(user_tasks, tmp_path):
  tf = tf_compat.import_tensorflow()
  import seqio

  spec = {"state": T.ContinuousSpec((2,))}
  groups = [
    T.tokenize_episode(
      {"state": np.arange(6 * n, dtype=np.float32).reshape(3 * n, 2) / 10},
      np.arange(3 * n, dtype=np.int32) % 3,
      spec,
      T.DiscreteSpec((), 3),
    )
    for n in (1, 2)
  ]

  features = tasks.output_features()

  def dataset(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    dtypes = {name: features[name].dtype for name in tasks.FIELDS}
    examples = lambda: (
      {name: np.asarray(getattr(g, name)).astype(dtypes[name].as_numpy_dtype) for name in dtypes}
      for g in groups
    )
    signature = {
      name: tf.TensorSpec([None] * rank, dtypes[name]) for name, rank in tasks.FIELDS.items()
    }
    return tf.data.Dataset.from_generator(examples, output_signature=signature)

  seqio.TaskRegistry.add(
    "user_fields",
    source=seqio.FunctionDataSource(dataset, splits=["train"]),
    preprocessors=[],
    output_features=features,
  )
  weights = presets.resolve("user_fields=3,user_text=1", {})
  assert weights == {"user_fields": 0.75, "user_text": 0.25}
  assert tasks.task_info("user_fields").kind == "control"
  store = pipeline.open_store("user_fields", pipeline.store_root(str(tmp_path / "data")))
  assert len(store) == 2
  for item, group in enumerate(groups):
    stored = store.read(item)
    for name in ("tokens", "kinds", "local_positions", "loss_mask", "timesteps"):
      np.testing.assert_array_equal(getattr(stored, name), getattr(group, name), err_msg=name)


def test_task_of_other_features_is_refused_naming_them(user_tasks):
  with pytest.raises(ValueError) as refused:
    presets.resolve("user_bytes=1,user_text=1", {})
  assert str(refused.value) == REFUSAL
  with pytest.raises(ValueError) as refused:
    presets.resolve("user_bytes", {})  # Named alone, as a registered task.
  assert str(refused.value) == REFUSAL


@pytest.fixture(scope="module")
def babyai_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("babyai_data"))
  generation.generate_task(
    "babyai/GoToRedBall",
    path,
    num_episodes=6,
    stats_episodes=4,
    shard_episodes=6,
    progress=lambda line: None,
  )
  return path


def _train(tmp_path, data_dir, mixture):
  return run_python(
    "experiments/train.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    f"--workdir={tmp_path / 'run'}",
    f"--config.data.data_dir={data_dir}",
    "--config.train.steps=1",
    "--config.mesh.shape=-1,1,1",
    "--config.mesh.rules=data_parallel",
    "--config.data.imports=user_tasks",
    f"--config.data.mixture={mixture}",
    # One device: the mixture, not the mesh, is under test, and one device compiles the step
    # fastest.
    env={
      "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
      "XLA_FLAGS": pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None),
    },
    check=False,
  )


def test_launcher_trains_a_user_text_task_in_a_weighted_mixture(babyai_dir, tmp_path):
  _write_user_module(tmp_path)
  out = _train(tmp_path, babyai_dir, "user_text=1,babyai/GoToRedBall=3")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "25.00%  user_text" in out.stderr
  (record,) = metrics_log.read_metrics(str(tmp_path / "run"))
  assert record["step"] == 1 and record["loss"] > 0
  assert record["loss/user_text"] > 0 and record["loss/babyai"] > 0
  # The smoke preset reads each task's first 8 items: a store of those alone (a user text task's
  # document count is not known before it is read).
  derived = os.path.join(babyai_dir, "derived")
  assert os.path.isdir(pipeline.store_dir(derived, "user_text", limit=8))


def test_launcher_refuses_a_task_of_other_features_in_one_line(babyai_dir, tmp_path):
  _write_user_module(tmp_path)
  out = _train(tmp_path, babyai_dir, "user_bytes=1,babyai/GoToRedBall=1")
  assert out.returncode == 1
  assert out.stderr.splitlines()[-1] == f"error: {REFUSAL}"
