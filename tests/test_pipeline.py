"""The data entry point (gato_jax.data.pipeline), the split of sources from the pipeline, and the
presets as plain data."""

import ast
import json
import pathlib
import re

import ml_collections
import numpy as np
import pytest

from gato_jax.data import catalogue, pipeline, presets, tasks
from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "gato_jax" / "data"


def _imports(path: pathlib.Path, top_level_only: bool = False) -> set[str]:
  """The gato_jax modules a file imports (`from gato_jax.data import x` counts as its module)."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else ast.walk(tree)
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {name for name in found if name.startswith("gato_jax")}


def test_the_data_package_imports_no_environment():
  for path in sorted(DATA.glob("*.py")):
    envs = sorted(m for m in _imports(path) if m.startswith("gato_jax.envs") or m.endswith("envs"))
    assert not envs, f"{path.name} imports {envs}"
    # Only the entry point reaches the sources, for the built-in tasks' registration.
    sources = sorted(m for m in _imports(path) if m.startswith("gato_jax.sources"))
    assert not sources or path.name == "pipeline.py", f"{path.name} imports {sources}"


def test_the_data_package_has_no_import_circle():
  modules = {path.stem for path in DATA.glob("*.py")} - {"__init__"}
  graph = {
    name: {
      m.rsplit(".", 1)[-1]
      for m in _imports(DATA / f"{name}.py", top_level_only=True)
      if m.startswith("gato_jax.data.") and m.rsplit(".", 1)[-1] in modules
    }
    - {name}
    for name in modules
  }
  assert "tasks" not in graph["presets"] and "presets" not in graph["catalogue"]

  def reaches(start, target, seen=()):
    return any(
      n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph[start]
    )

  circles = sorted(name for name in modules if reaches(name, name))
  assert not circles, f"import circle through {circles}: {graph}"


PAPER_AVAILABLE = {
  "atari": ["atari/Pong"],
  "babyai": ["babyai/GoToRedBall"],
  "dm_control": ["dm_control/cartpole-swingup"],
  "dm_control_pixels": ["dm_control_pixels/cartpole-swingup", "dm_control_pixels/walker-stand"],
  "gymnax": ["gymnax/CartPole-v1"],  # No paper family: no weight.
  "metaworld": ["metaworld/reach-v3"],
  "text": ["text/cpython_docs"],
  "vision_language": ["vision_language/shapes_captions"],
}


def test_the_paper_mixture_maps_every_family_a_domain_serves():
  weights = presets.resolve("paper", PAPER_AVAILABLE)
  total = 9.06 + 4.62 + 7.07 + 8.96 + 9.5 + 6.7 + 0.67 + 0.67
  assert weights["dm_control_pixels/cartpole-swingup"] == pytest.approx(7.07 / 2 / total)
  assert weights["dm_control_pixels/walker-stand"] == pytest.approx(7.07 / 2 / total)
  assert weights["dm_control/cartpole-swingup"] == pytest.approx(4.62 / total)
  assert weights["atari/Pong"] == pytest.approx(9.5 / total)
  assert weights["metaworld/reach-v3"] == pytest.approx(8.96 / total)
  assert weights["vision_language/shapes_captions"] == pytest.approx(1.34 / total)
  assert "gymnax/CartPole-v1" not in weights
  assert sum(weights.values()) == pytest.approx(1.0)

  from gato_jax.envs import registry

  domains = set(registry.domains()) | set(registry.example_domains())
  assert set(presets.PAPER_TO_DOMAIN.values()) <= domains
  # Every family we do not serve is named, with its weight, in the docs' table.
  docs = (ROOT / "docs" / "data.md").read_text()
  for family, weight in presets.PAPER_TABLE1.items():
    if family not in presets.PAPER_TO_DOMAIN:
      row = re.search(rf"^\| {re.escape(family)} \| ([\d.]+) \| (.+) \|$", docs, re.M)
      assert row and float(row.group(1)) == weight, family


def test_a_preset_is_read_from_the_presets_not_from_a_seqio_mixture():
  import seqio
  from gato_jax.tokenizer import ContinuousSpec

  tasks.register_control_task(
    "test.preset_shadow", "/nonexistent", {"state": ContinuousSpec((2,))}, ContinuousSpec((1,))
  )
  try:
    for name in ("quickstart", "test_user_mix"):
      if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
      seqio.MixtureRegistry.add(name, [("test.preset_shadow", 1.0)])
    available = {"gymnax": ["gymnax/CartPole-v1", "gymnax/Acrobot-v1"]}
    assert presets.resolve("quickstart", available) == {
      "gymnax/CartPole-v1": pytest.approx(0.55),
      "gymnax/Acrobot-v1": pytest.approx(0.45),
    }
    assert presets.resolve("test_user_mix", available) == {"test.preset_shadow": 1.0}
  finally:
    for name in ("quickstart", "test_user_mix"):
      seqio.MixtureRegistry.remove(name)
    seqio.TaskRegistry.remove("test.preset_shadow")
    del catalogue.CATALOGUE["test.preset_shadow"]


def test_mixture_weights_open_no_store_and_the_built_in_reader_matches_seqio(data_dir, tmp_path):
  import seqio  # noqa: F401  (with seqio in use, the built-in tasks get their SeqIO Tasks too)

  data = ml_collections.ConfigDict(
    {"data_dir": data_dir, "derived_dir": str(tmp_path / "derived"), "mixture": "babyai=1"}
  )
  try:
    assert pipeline.mixture_weights(data) == {
      "babyai/GoToLocal": 0.5,
      "babyai/GoToRedBall": 0.5,
    }
    assert not (tmp_path / "derived").exists()
    # The built-in tasks' stores are read straight from RLDS with numpy; the SeqIO Task (read
    # here through its one shard) gives the same groups, so stores built either way are equal.
    info = catalogue.task_info("babyai/GoToRedBall")
    direct = list(info.reader("train"))
    through_seqio = list(tasks.iter_token_groups("babyai/GoToRedBall", shard=(0, 1)))
    assert len(direct) == len(through_seqio) >= 1
    for a, b in zip(direct, through_seqio):
      for field in catalogue.FIELDS:
        x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), field
    store = pipeline.task_store("babyai/GoToRedBall", data)
    assert store.directory == pipeline.store_dir(str(tmp_path / "derived"), "babyai/GoToRedBall")
    assert len(store) == len(direct)
  finally:
    pipeline.register_run_tasks(catalogue.DEFAULT_DATA_DIR)  # Back to the default for others.


def test_a_run_reads_the_first_stored_episodes_of_a_larger_set(data_dir, tmp_path):
  from gato_jax.data import rlds_io, stats

  derived = str(tmp_path / "derived")
  data = ml_collections.ConfigDict(
    {
      "data_dir": data_dir,
      "derived_dir": derived,
      "mixture": "babyai=1",
      "max_episodes_per_task": 3,
      "task_max_episodes": "babyai/GoToLocal=9",
    }
  )
  task = "babyai/GoToRedBall"
  try:
    run = pipeline.open_run_data(data)
    assert pipeline.episode_limit(data, task) == 3
    assert pipeline.episode_limit(data, "babyai/GoToLocal") == 9
    info = catalogue.task_info(task)
    assert info.stored_items("train") == 6
    limited, whole = run.stores[task], pipeline.open_store(task, derived)
    assert pipeline.task_store(task, data).directory == limited.directory
    assert limited.directory == pipeline.store_dir(derived, task, limit=3)
    assert limited.directory.endswith("train-first3") and len(whole) > len(limited)
    # The first three stored episodes that pass the filter: the whole store's first items.
    threshold = stats.return_threshold(stats.load_stats(data_dir, task), info.filter_fraction)
    first = list(rlds_io.read_episodes(info.source))[:3]
    assert len(limited) == sum(float(e["episode_metadata"]["return"]) >= threshold for e in first)
    for item in range(len(limited)):
      assert np.array_equal(limited.read(item).tokens, whole.read(item).tokens)
    # A limit the stored set does not exceed reads the whole set's store.
    assert run.stores["babyai/GoToLocal"].directory == pipeline.store_dir(
      derived, "babyai/GoToLocal"
    )
    data.task_max_episodes = "babyai=x"
    with pytest.raises(ValueError, match="data.task_max_episodes entry 'babyai=x' must be"):
      pipeline.episode_limit(data, task)
  finally:
    pipeline.register_run_tasks(catalogue.DEFAULT_DATA_DIR)  # Back to the default for others.


# In a new process: open a run's data and report which of TensorFlow and SeqIO were imported.
OPEN = """
import json, sys
import ml_collections
from gato_jax.data import pipeline
data = pipeline.open_run_data(ml_collections.ConfigDict(json.loads(sys.argv[1])))
loaded = [m for m in ("tensorflow", "seqio") if m in sys.modules]
print(json.dumps({"weights": data.weights, "loaded": loaded, "stores": sorted(data.stores)}))
"""


def test_a_run_of_built_in_tasks_needs_no_seqio_and_once_built_no_tensorflow(data_dir, tmp_path):
  data = json.dumps(
    {"data_dir": data_dir, "derived_dir": str(tmp_path / "derived"), "mixture": "babyai=1"}
  )
  expected = {"babyai/GoToLocal": 0.5, "babyai/GoToRedBall": 0.5}
  built = json.loads(run_python("-c", OPEN, data).stdout.strip().splitlines()[-1])
  # Building the stores reads the episodes with tf.data, tokenized by numpy: no SeqIO.
  assert built == {"weights": expected, "loaded": ["tensorflow"], "stores": sorted(expected)}
  reopened = json.loads(run_python("-c", OPEN, data).stdout.strip().splitlines()[-1])
  assert reopened == {"weights": expected, "loaded": [], "stores": sorted(expected)}
