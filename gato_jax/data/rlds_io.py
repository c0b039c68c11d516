"""RLDS episodes stored as local TFDS datasets, and read back (ours or public) as numpy trees.

Writing uses TFDS's ad-hoc builder (`tfds.dataset_builders.store_as_tfds_dataset`): one dataset
per domain and source ("gato_babyai"), one config per task ("goto_red_ball"), laid out as
<data_dir>/<name>/<config>/<version>/, so `tfds.load("gato_babyai/goto_red_ball",
data_dir=...)`, `tfds.builder_from_directory` and `seqio.TfdsDataSource` all read it without a
registered builder class. Features follow the RLDS convention: `steps` is a nested
`tfds.features.Dataset`, next to `episode_metadata`.

Public RLDS datasets (RL Unplugged, Open X-Embodiment) name their keys differently; a key map
`{our path: their path}` renames them on read, e.g.
  {"steps/observation/state": "steps/observation/joint_pos", "steps/action": "steps/act"}.

TensorFlow is imported through gato_jax.tf_compat only, and only when a function here runs.
"""

import contextlib
import glob
import io
import os
import shutil
from typing import Any, Callable, Iterable, Iterator, Mapping

from absl import logging
import numpy as np

from gato_jax import tf_compat, workdir_lock

VERSION = "1.0.0"
REQUIRED_STEP_KEYS = ("observation", "action", "reward", "is_first", "is_last")
STEP_CHUNK = 1024  # Steps read per tf.data batch (episode_to_numpy).


def import_tfds():
  tf_compat.import_tensorflow()  # First, so that TensorFlow never claims an accelerator.
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()  # Progress is ours to print (generation.print_progress).
  return tfds


def store_dataset(
  name: str,
  config: str | None,
  version: str,
  features,
  split_datasets: dict,
  data_dir: str,
  description: str,
) -> None:
  """TFDS's ad-hoc builder, keeping generation order, with its console banner sent to the log.

  TFDS prints "Downloading and preparing dataset ... (download: Unknown size)" and "downloaded
  and prepared" for every build, even of data made here, where nothing is downloaded.
  """
  banner = io.StringIO()
  # TFDS writes into <config>/incomplete.*/ and renames it when done. Only the holder of this
  # lock writes there, so such a folder found while holding it is a dead writer's: remove it.
  config_dir = os.path.join(os.path.expanduser(data_dir), name, *([config] if config else []))
  with workdir_lock.WorkdirLock(config_dir), contextlib.redirect_stdout(banner):
    _remove_incomplete(config_dir)
    try:
      import_tfds().dataset_builders.store_as_tfds_dataset(
        name=name,
        version=version,
        features=features,
        split_datasets=split_datasets,
        config=config,
        data_dir=os.path.expanduser(data_dir),
        description=description,
        # Keep generation order: reads are then deterministic and match what was written.
        disable_shuffling=True,
      )
    except BaseException:  # Interrupted too: the half-written folder is of no use to anyone.
      _remove_incomplete(config_dir)
      raise
  logging.info("TFDS: %s", " ".join(banner.getvalue().split()), extra={"console": False})


def config_name(task: str) -> str:
  """A TFDS config name for a task: "babyai/GoToRedBall" -> "go_to_red_ball"."""
  out, prev_lower = [], False
  for ch in task.split("/", 1)[-1]:
    if ch.isupper() and prev_lower:
      out.append("_")
    out.append(ch.lower() if ch.isalnum() else "_")
    prev_lower = ch.islower() or ch.isdigit()
  return "".join(out).strip("_")


def dataset_dir(data_dir: str, name: str, config: str, version: str = VERSION) -> str:
  return os.path.join(os.path.expanduser(data_dir), name, config, version)


def _feature_for(value, path: str):
  """A TFDS feature for one leaf; `value` is the [T, ...] step array or a metadata scalar."""
  tfds = import_tfds()
  value = np.asarray(value)
  if value.dtype.kind in "OUS":
    return tfds.features.Text()
  if value.dtype.kind not in "biuf":
    raise TypeError(f"cannot store leaf {path!r} of dtype {value.dtype}")
  return value.dtype.type


def episode_features(episode: Mapping[str, Any]):
  """The FeaturesDict of an RLDS episode tree, inferred from one example episode."""
  tfds = import_tfds()

  def build(tree, path, per_step):
    if isinstance(tree, Mapping):
      return tfds.features.FeaturesDict(
        {k: build(v, f"{path}/{k}", per_step) for k, v in tree.items()}
      )
    leaf = _feature_for(tree, path)
    if not isinstance(leaf, type):
      return leaf  # Text.
    shape = np.shape(tree)[1:] if per_step else np.shape(tree)
    if shape:
      return tfds.features.Tensor(shape=shape, dtype=leaf)
    return tfds.features.Scalar(dtype=leaf)

  if "steps" not in episode:
    raise KeyError(f"an RLDS episode has a 'steps' entry; got keys {sorted(episode)}")
  features = {"steps": tfds.features.Dataset(build(episode["steps"], "steps", True))}
  for key, value in episode.items():
    if key != "steps":
      features[key] = build(value, key, False)
  return tfds.features.FeaturesDict(features)


def write_episodes(
  episodes: Iterable[dict], data_dir: str, name: str, config: str, description: str = ""
) -> str:
  """Stores RLDS episode trees as split "train" of TFDS dataset `name/config`, in order.

  Args:
    episodes: RLDS episode trees (gato_jax.sources.episodes), all with the same leaf shapes.
    data_dir: TFDS data directory.
    name: the dataset name, e.g. "gato_babyai".
    config: the config (task) name, e.g. "goto_red_ball".
    description: stored in dataset_info.json.

  Returns:
    The dataset's directory, <data_dir>/<name>/<config>/<version>.
  """
  target = dataset_dir(data_dir, name, config)
  if os.path.exists(os.path.join(target, "dataset_info.json")):
    raise FileExistsError(f"a TFDS dataset already exists at {target}; delete it to rewrite it")
  iterator = iter(episodes)
  try:
    first = next(iterator)
  except StopIteration:
    raise ValueError(f"write_episodes got no episodes for {name}/{config}") from None

  def examples():
    yield 0, first
    for index, episode in enumerate(iterator, start=1):
      yield index, episode

  store_dataset(
    name,
    config,
    VERSION,
    episode_features(first),
    {"train": examples()},
    data_dir,
    description or f"RLDS episodes of {name}/{config}, generated by gato_jax.",
  )
  return target


def _remove_incomplete(config_dir: str) -> None:
  for path in glob.glob(os.path.join(config_dir, "incomplete.*")):
    logging.warning("removing %s, left by an interrupted write", path)
    shutil.rmtree(path, ignore_errors=True)


def load_builder(source: str, data_dir: str | None = None):
  """A TFDS builder from a dataset directory (holding dataset_info.json) or a registered name.

  Args:
    source: a directory such as <data_dir>/gato_babyai/goto_red_ball/1.0.0, or a name such as
      "gato_babyai/goto_red_ball" (ours, found in `data_dir`) or a public dataset's name.
    data_dir: where to look up names.
  """
  tfds = import_tfds()
  path = os.path.expanduser(source)
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
      raise FileNotFoundError(
        f"{path} is not a TFDS dataset directory (no dataset_info.json); point at"
        " <data_dir>/<name>/<config>/<version>"
      )
    return tfds.builder_from_directory(path)
  if os.path.isabs(path) or source.startswith((".", "~")):
    raise FileNotFoundError(f"no dataset directory at {path}")
  try:
    return tfds.builder(source, data_dir=os.path.expanduser(data_dir) if data_dir else None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise FileNotFoundError(
      f"no TFDS dataset {source!r} in data_dir={data_dir!r} (and it is not a directory);"
      f" generate it with tools/generate_data.py or check the name: {e}"
    ) from None


def _flatten(tree: Mapping, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def _remap(tree: Mapping, mapping: Mapping[str, str], where: str) -> dict:
  """Moves each source path (a leaf or a whole subtree) to its target path; others stay."""
  flat = _flatten(tree)
  moved = {}
  for target, source in mapping.items():
    keys = [k for k in flat if k == source or k.startswith(source + "/")]
    if not keys:
      raise KeyError(f"key map: {where} has no {source!r} (for {target!r}); it has {sorted(flat)}")
    for key in keys:
      moved[target + key[len(source) :]] = flat.pop(key)
  flat.update(moved)
  return _unflatten(flat)


def apply_key_map(episode: Mapping[str, Any], key_map: Mapping[str, str]) -> dict:
  """Renames keys of a tf.data episode element: {our path: their path}, "steps/..." per step."""
  step_map, episode_map = {}, {}
  for target, source in key_map.items():
    if target.startswith("steps/") != source.startswith("steps/"):
      raise ValueError(f"key map {target!r} <- {source!r}: step keys map only to step keys")
    if target.startswith("steps/"):
      step_map[target[len("steps/") :]] = source[len("steps/") :]
    else:
      episode_map[target] = source
  out = _remap({k: v for k, v in episode.items() if k != "steps"}, episode_map, "episode")
  steps = episode["steps"]
  if step_map:
    steps = steps.map(lambda step: _remap(step, step_map, "steps"))
  out["steps"] = steps
  return out


def load_dataset(
  source: str,
  split: str = "train",
  data_dir: str | None = None,
  key_map: Mapping[str, str] | None = None,
):
  """A tf.data.Dataset of RLDS episodes (`steps` a nested dataset), keys mapped to ours."""
  builder = load_builder(source, data_dir)
  if not builder.info.splits:  # A registered public builder whose data was never prepared.
    raise FileNotFoundError(
      f"TFDS dataset {source!r} is not prepared in data_dir={data_dir!r}; download and"
      f" prepare it first (e.g. `tfds build {source} --data_dir=DIR`)"
    )
  if split not in builder.info.splits:
    raise ValueError(f"{source!r} has no split {split!r}; it has {sorted(builder.info.splits)}")
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if key_map:
    _check_key_map(ds.element_spec, key_map)
    ds = ds.map(lambda episode: apply_key_map(episode, key_map))
  return ds


def _check_key_map(element_spec: Mapping[str, Any], key_map: Mapping[str, str]) -> None:
  """Raises now, on the dataset's structure, what mapping its elements would raise later.

  A missing key found while tf.data traces the nested per-step map can surface wrapped in a
  StagingError, depending on whether autograph converted the function.
  """
  episode_spec = {k: v for k, v in element_spec.items() if k != "steps"}
  step_spec = element_spec["steps"].element_spec
  for target, source in key_map.items():
    if target.startswith("steps/") != source.startswith("steps/"):
      raise ValueError(f"key map {target!r} <- {source!r}: step keys map only to step keys")
    if source.startswith("steps/"):
      _remap(step_spec, {target[len("steps/") :]: source[len("steps/") :]}, "steps")
    else:
      _remap(episode_spec, {target: source}, "episode")


def _to_numpy(value):
  array = value.numpy()
  if isinstance(array, bytes):  # A scalar tf.string.
    return array.decode("utf-8")
  if array.dtype.kind in "OS":  # tf.string -> Python str, as the tokenizer's text leaves.
    return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)
  return array


def episode_to_numpy(episode: Mapping[str, Any], task: str | None = None) -> dict:
  """A tf.data episode element -> an RLDS numpy tree (gato_jax.sources.episodes layout).

  Fills what public datasets may lack: `discount` (ones), `is_terminal` (False), and metadata
  `return` (the sum of rewards) and `task` (`task`, when given).
  """
  tf = tf_compat.import_tensorflow()
  # Chunks, concatenated: on steps with encoded image features (tfds.features.Image, as in RL
  # Unplugged Atari) one batch of the int32 maximum takes time in proportion to the batch size
  # (1.9 s at 2**20 for 84x84 PNG frames, so about an hour at 2**31).
  chunks = [tf.nest.map_structure(_to_numpy, chunk) for chunk in episode["steps"].batch(STEP_CHUNK)]
  if not chunks:
    raise ValueError("an RLDS episode has no steps")
  steps = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *chunks)
  missing = [k for k in REQUIRED_STEP_KEYS if k not in steps]
  if missing:
    raise KeyError(f"RLDS steps lack {missing} (they have {sorted(steps)}); pass a key_map")
  num_steps = len(steps["is_first"])
  steps.setdefault("discount", np.ones(num_steps, np.float32))
  steps.setdefault("is_terminal", np.zeros(num_steps, bool))
  out = {k: tf.nest.map_structure(_to_numpy, v) for k, v in episode.items() if k != "steps"}
  metadata = out.setdefault("episode_metadata", {})
  metadata.setdefault("return", np.float32(np.sum(steps["reward"], dtype=np.float64)))
  if task is not None:
    metadata.setdefault("task", task)
  out["steps"] = steps
  return out


def read_episodes(
  source: str,
  split: str = "train",
  data_dir: str | None = None,
  key_map: Mapping[str, str] | None = None,
  task: str | None = None,
  limit: int | None = None,
  keep: Callable[[dict], bool] | None = None,
) -> Iterator[dict]:
  """Yields stored episodes as numpy trees, in stored order.

  Args:
    source: a dataset directory or name (see `load_builder`).
    split: the TFDS split.
    data_dir: where to look up names.
    key_map: {our path: their path} for datasets with other key names.
    task: the task name to record where the dataset's metadata has none.
    limit: stop after this many episodes (counted before `keep`).
    keep: an optional predicate, e.g. `lambda ep: ep["episode_metadata"]["success"] == 1`.
  """
  ds = load_dataset(source, split, data_dir, key_map)
  if limit is not None:
    ds = ds.take(limit)
  for element in ds:
    episode = episode_to_numpy(element, task)
    if keep is None or keep(episode):
      yield episode
