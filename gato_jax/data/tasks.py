"""The task catalogue: one SeqIO Task and one `TaskInfo` per task, and the derived stores.

Every task has one name, used by configs, mixtures, logs, evaluation and reports: a built-in
task's is "<domain>/<task>" ("gymnax/CartPole-v1", "babyai/GoToRedBall"), as its environment or
example set is named; a task that user code registers keeps the name it was given. SeqIO forbids
'/' and '-' in its names, so `seqio_name` derives the name a task has in SeqIO's registry
("gato.gymnax.CartPole_v1"), and the derived store's folder, from it; that is the one conversion,
and `task_info` accepts either spelling (a mixture that user code registers the SeqIO way names
SeqIO tasks).

Nothing is registered on import. `register_builtin_tasks(data_dir)` registers a Task for every
task of the built-in domains, reading the locally generated TFDS dataset under the run's data
directory, and the built-in mixtures over the tasks that have data (gato_jax.data.presets). `register_control_task` adds any
other RLDS/TFDS dataset (a public one by name, with a key map) in one call, e.g.

  tasks.register_control_task(
      "my_robot.pick", source="my_rlds_dataset", data_dir="/data/tfds",
      observation_spec={"state": ContinuousSpec((7,))},
      action_spec=ContinuousSpec((4,), mu_law=False),
      key_map={"steps/observation/state": "steps/observation/joint_pos"})

Each Task yields one example per (filtered) episode, with the fields of a TokenGroup. Training
does not read the Tasks directly: `open_store` tokenizes a task once, through its Task, into the
derived store (gato_jax.data.store) that the mixture samples windows from. Episodes below the
paper's 80%-of-expert bar are dropped where the task's statistics are known.

`CATALOGUE` maps each registered task's name to its `TaskInfo` (domain, kind, source, statistics
task): the one place that knows what a name refers to. A task that user code registers the plain
SeqIO way (`seqio.TaskRegistry.add` over any DataSource) gets its entry from its output features
(`seqio_task_info`): T5-style text over our SentencePiece vocabulary, or examples that already
have the TokenGroup fields; any other is refused in one line.
"""

import dataclasses
import difflib
import functools
import glob
import hashlib
import importlib
import os
import re
import sys
from typing import Any, Iterator, Mapping

from absl import logging
import numpy as np

from gato_jax import tf_compat
from gato_jax.data import episodes as episodes_lib
from gato_jax.data import rlds_io, store as store_lib
from gato_jax.envs import registry
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, VOCAB_SIZE, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, tokenize_episode, tokenize_timestep

DEFAULT_DATA_DIR = os.path.join("~", ".cache", "gato_jax")
TASK_PREFIX = "gato"
# name -> rank of each field a Task's examples carry (a TokenGroup, with bools as int32).
FIELDS = {
  "tokens": 1,
  "kinds": 1,
  "local_positions": 1,
  "loss_mask": 1,
  "timesteps": 1,
  "patches": 2,
  "patch_rows": 2,
  "patch_cols": 2,
}
_FLOAT_FIELDS = ("patches", "patch_rows", "patch_cols")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What the catalogue knows of one task.

  Attributes:
    name: the task's name ("gymnax/CartPole-v1"; see the module docstring).
    domain: "babyai", "text", ... (per-domain losses and reports group by it).
    kind: how the mixture builds its sequences, one of gato_jax.data.mixture.KINDS.
    source: the TFDS dataset directory or name the Task reads.
    data_dir: the TFDS data directory (also where generated statistics live), or None.
    stats_task: the "<domain>/<task>" whose statistics set the episode filter, or None.
    filter_fraction: the filter's fraction of the expert's margin over random; None: off.
    builtin: whether the task is one of this package's environments or example sets (so that
      evaluation can play or score it).
    from_seqio: whether user code registered the task the plain SeqIO way (`seqio_task_info`),
      so its examples come from its own DataSource and preprocessors.
  """

  name: str
  domain: str
  kind: str
  source: str
  data_dir: str | None = None
  stats_task: str | None = None
  filter_fraction: float | None = None
  builtin: bool = False
  from_seqio: bool = False

  @property
  def seqio_name(self) -> str:
    return seqio_name(self.name)

  def has_data(self) -> bool:
    """Whether the source exists (a TFDS name in data_dir, or a generated dataset directory)."""
    if os.path.isabs(os.path.expanduser(self.source)):
      return os.path.isfile(os.path.join(os.path.expanduser(self.source), "dataset_info.json"))
    return True  # A TFDS name: found (or not) when read.

  def fingerprint(self, split: str) -> str:
    """Changes when the source files or the filter's statistics change (the store is stale)."""
    if self.from_seqio:
      return _seqio_fingerprint(self, split)
    # The SeqIO name (one-to-one with the name) keeps stores built before tasks had their
    # "<domain>/<task>" names valid.
    parts: list[Any] = [self.seqio_name, split, self.kind, self.source, self.filter_fraction]
    source = os.path.expanduser(self.source)
    if os.path.isdir(source):
      parts.append(
        sorted((f, os.path.getsize(os.path.join(source, f))) for f in os.listdir(source))
      )
      info = os.path.join(source, "dataset_info.json")
      if os.path.isfile(info):
        with open(info, "rb") as f:
          parts.append(hashlib.sha256(f.read()).hexdigest())
    if self.stats_task and self.filter_fraction is not None:
      path = episodes_lib.stats_path(self.stats_data_dir, self.stats_task)
      if os.path.isfile(path):
        with open(path, "rb") as f:
          parts.append(hashlib.sha256(f.read()).hexdigest())
    return store_lib.fingerprint(*parts)

  @property
  def stats_data_dir(self) -> str:
    return os.path.expanduser(self.data_dir or DEFAULT_DATA_DIR)


# Task name -> its TaskInfo, for every task registered through this module.
CATALOGUE: dict[str, TaskInfo] = {}
# SeqIO registry name -> task name, where the two differ (built-in tasks).
_BY_SEQIO_NAME: dict[str, str] = {}


def task_info(name: str) -> TaskInfo:
  """The catalogue entry of a registered task, by its name or its SeqIO name; a clear error for
  anything else."""
  info = CATALOGUE.get(name) or CATALOGUE.get(_BY_SEQIO_NAME.get(name, "")) or seqio_task_info(name)
  if info is None:
    raise KeyError(
      f"task {name!r} is not in the gato_jax task catalogue; register it with"
      " gato_jax.data.tasks.register_control_task or register_example_task, or as a seqio.Task"
      " (built-in tasks: register_builtin_tasks(data_dir))"
    )
  return info


def user_task_info(name: str) -> TaskInfo | None:
  """The entry of a task that user code registered (through this module or the plain SeqIO
  way), by either spelling; None for built-in and unknown names.

  Raises:
    ValueError: for a SeqIO task whose features cannot be trained on (`seqio_task_info`).
  """
  name = canonical_name(name)
  if name in _BUILTIN:
    return None
  return CATALOGUE.get(name) or seqio_task_info(name)


# What a plain SeqIO task must output to be trained on, for the one-line refusal.
ACCEPTED_FEATURES = (
  "one 'targets' feature over the gato_jax SentencePiece vocabulary"
  " (gato_jax.tokenizer.text.seqio_vocabulary(); trained as text), or the TokenGroup fields"
  f" {sorted(FIELDS)} (tasks.output_features(); trained as episodes)"
)


def seqio_task_info(name: str) -> TaskInfo | None:
  """The entry of a task registered the plain SeqIO way (`seqio.TaskRegistry.add` over any
  DataSource), outside this module; None if SeqIO has no task of that name.

  A task with one "targets" feature over our SentencePiece vocabulary (T5-style text) is
  trained as text, one document per example; a task that outputs the TokenGroup fields
  (`output_features()`) is trained on its examples as they are, as episodes. Its domain is the
  one its name implies.

  Raises:
    ValueError: for any other task, naming its features and the ones accepted.
  """
  seqio = sys.modules.get("seqio")
  if seqio is None or name in CATALOGUE or name not in seqio.TaskRegistry.names():
    return None  # No task can have been registered the SeqIO way without importing seqio.
  task = seqio.TaskRegistry.get(name)
  features = task.output_features
  if set(FIELDS) <= set(features):
    kind = "control"
  elif set(features) == {"targets"} and _is_text_feature(features["targets"]):
    kind = "text"
  else:
    have = [
      f"{key} ({type(f.vocabulary).__name__}"
      + (f" {f.vocabulary.sentencepiece_model_file}" if hasattr(f.vocabulary, "sp_model") else "")
      + ")"
      for key, f in sorted(features.items())
    ]
    raise ValueError(
      f"seqio task {name!r} has features [{', '.join(have)}]; accepted: {ACCEPTED_FEATURES}"
    )
  return TaskInfo(name, registry.domain_of(name), kind, f"seqio:{name}", from_seqio=True)


def _is_text_feature(feature) -> bool:
  from gato_jax.tokenizer import text

  tf = tf_compat.import_tensorflow()
  return (
    feature.rank == 1 and feature.dtype == tf.int32 and text.is_seqio_vocabulary(feature.vocabulary)
  )


def _seqio_fingerprint(info: TaskInfo, split: str) -> str:
  """A plain SeqIO task's store fingerprint: its name, kind and, for a file source (text
  lines, TFRecords), the contents of its files; other sources change it only by name (rebuild
  their stores with tools/build_store.py --rebuild)."""
  import seqio

  source = seqio.get_mixture_or_task(info.name).source
  parts: list[Any] = [info.name, split, info.kind, type(source).__name__]
  shards = source.list_shards(split)
  for shard in shards:
    parts.append(shard)
    if isinstance(source, seqio.FileDataSource) and os.path.isfile(shard):
      digest = hashlib.sha256()
      with open(shard, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
          digest.update(block)
      parts.append(digest.hexdigest())
  return store_lib.fingerprint(*parts)


def canonical_name(name: str) -> str:
  """A registered task's name, given either spelling; any other name is returned as it is."""
  return name if name in CATALOGUE else _BY_SEQIO_NAME.get(name, name)


def seqio_name(name: str) -> str:
  """ "dm_control/cartpole-swingup" -> "gato.dm_control.cartpole_swingup"; a name without '/'
  (a task user code registered) is its own SeqIO name.

  SeqIO names allow only word characters, dots, colons and '#'.
  """
  if "/" not in name:
    return name
  safe = re.sub(r"[^\w.:#]", "_", name.replace("/", "."))
  return f"{TASK_PREFIX}.{safe}"


def _register_info(info: TaskInfo) -> str:
  """Adds `info` to the catalogue, removing a SeqIO task of the same name; its SeqIO name."""
  import seqio

  registered = info.seqio_name
  if registered in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(registered)
  CATALOGUE[info.name] = info
  if registered != info.name:
    _BY_SEQIO_NAME[registered] = info.name
  return registered


def output_features():
  tf = tf_compat.import_tensorflow()
  import seqio

  vocabulary = seqio.PassThroughVocabulary(VOCAB_SIZE)
  return {
    name: seqio.Feature(
      vocabulary,
      add_eos=False,
      required=True,
      rank=rank,
      dtype=tf.float32 if name in _FLOAT_FIELDS else tf.int32,
    )
    for name, rank in FIELDS.items()
  }


def _flat_episode(episode: Mapping[str, Any]):
  """RLDS element -> the same with `steps` as tensors [T+1, ...] instead of a nested dataset."""
  steps = episode["steps"].batch(np.iinfo(np.int32).max).get_single_element()
  return {**{k: v for k, v in episode.items() if k != "steps"}, "steps": steps}


def _tokenize_numpy(observation_spec, action_spec, *leaves) -> tuple:
  """numpy leaves (observation leaves, action leaves, is_last) -> TokenGroup fields."""
  num_obs = len(token_specs.leaf_specs(observation_spec))
  keep = ~leaves[-1].astype(bool)  # RLDS's last step holds only the final observation.
  select = lambda x: x[keep]
  observations = token_specs.unflatten(observation_spec, [select(x) for x in leaves[:num_obs]])
  actions = token_specs.unflatten(action_spec, [select(x) for x in leaves[num_obs:-1]])
  group = tokenize_episode(observations, actions, observation_spec, action_spec)
  out = []
  for name in FIELDS:
    value = np.asarray(getattr(group, name))
    out.append(value.astype(np.float32 if name in _FLOAT_FIELDS else np.int32))
  return tuple(out)


def tokenize_preprocessor(dataset, observation_spec: Any, action_spec: Any, task: str):
  """SeqIO preprocessor: flat RLDS episodes -> TokenGroup-field examples."""
  obs_paths = [p for p, _ in token_specs.leaf_specs(observation_spec)]
  act_paths = [p for p, _ in token_specs.action_leaf_specs(action_spec)]

  def leaf(tree, path):
    if path == "<root>":
      return tree
    for key in path.split("/"):
      if key not in tree:
        raise KeyError(f"task {task}: episode steps lack {path!r} (have {sorted(tree)})")
      tree = tree[key]
    return tree

  def inputs(episode):
    steps = episode["steps"]
    return (
      [leaf(steps["observation"], p) for p in obs_paths]
      + [leaf(steps["action"], p) for p in act_paths]
      + [steps["is_last"]]
    )

  return _map_to_fields(
    dataset, inputs, functools.partial(_tokenize_numpy, observation_spec, action_spec)
  )


def _map_to_fields(dataset, inputs_fn, numpy_fn):
  """Maps each element through `numpy_fn(*inputs_fn(element))`, which returns FIELDS in order."""
  tf = tf_compat.import_tensorflow()

  def tokenize(element):
    outputs = tf.numpy_function(
      numpy_fn,
      inputs_fn(element),
      [tf.float32 if name in _FLOAT_FIELDS else tf.int32 for name in FIELDS],
      stateful=False,
    )
    fields = {}
    for name, value in zip(FIELDS, outputs):
      value.set_shape([None] if FIELDS[name] == 1 else [None, None])
      fields[name] = value
    return fields

  return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _episode_source(
  source: str,
  data_dir: str | None,
  key_map,
  stats_task: str | None,
  filter_fraction: float | None,
  split: str,
  shuffle_files: bool,
  seed=None,
):
  del shuffle_files, seed  # Stored order is kept: the mixture does its own seeded sampling.
  tf = tf_compat.import_tensorflow()
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  dataset = rlds_io.load_dataset(source, split, data_dir, key_map).map(_flat_episode)
  if filter_fraction is not None and stats_task is not None:
    stats = episodes_lib.load_stats(data_dir or os.path.expanduser(DEFAULT_DATA_DIR), stats_task)
    threshold = episodes_lib.return_threshold(stats, filter_fraction)
    dataset = dataset.filter(
      lambda episode: tf.cast(episode["episode_metadata"]["return"], tf.float64) >= threshold
    )
  return dataset


def register_control_task(
  name: str,
  source: str,
  observation_spec: Any,
  action_spec: Any,
  data_dir: str | None = None,
  key_map: Mapping[str, str] | None = None,
  stats_task: str | None = None,
  filter_fraction: float | None = episodes_lib.DEFAULT_FILTER_FRACTION,
  splits=("train",),
):
  """Registers (or replaces) a SeqIO Task reading RLDS episodes of one control task.

  Args:
    name: the SeqIO task name.
    source: a TFDS dataset name (looked up in `data_dir`) or a dataset directory.
    observation_spec, action_spec: tokenizer specs of the (key-mapped) steps.
    data_dir: TFDS data directory (also where generated statistics live).
    key_map: {our path: their path} for datasets with other key names (rlds_io.apply_key_map).
    stats_task: the "<domain>/<task>" whose statistics set the 80%-of-expert filter; None
      (e.g. public data without statistics) keeps every episode.
    filter_fraction: the filter's fraction of the expert's margin over random; None disables.
    splits: the splits the source has.

  Returns:
    The registered seqio.Task.
  """
  token_specs.action_leaf_specs(action_spec)  # Fails early on non-value action specs.
  token_specs.leaf_specs(observation_spec)
  preprocessor = functools.partial(
    tokenize_preprocessor, observation_spec=observation_spec, action_spec=action_spec, task=name
  )
  return _add_control_task(
    name, source, preprocessor, data_dir, key_map, stats_task, filter_fraction, splits
  )


def _add_control_task(
  name: str,
  source: str,
  preprocessor,
  data_dir: str | None,
  key_map,
  stats_task: str | None,
  filter_fraction: float | None,
  splits,
  domain: str | None = None,
  builtin: bool = False,
):
  tf_compat.import_tensorflow()
  import seqio

  registered = _register_info(
    TaskInfo(
      name,
      domain or registry.domain_of(name),
      "control",
      source,
      data_dir,
      stats_task if filter_fraction is not None else None,
      filter_fraction if stats_task is not None else None,
      builtin,
    )
  )
  dataset_fn = functools.partial(
    _episode_source, source, data_dir, key_map, stats_task, filter_fraction
  )
  return seqio.TaskRegistry.add(
    registered,
    source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
    preprocessors=[preprocessor],
    output_features=output_features(),
  )


def _builtin_tokenize_preprocessor(dataset, env_task: str, task: str):
  """tokenize_preprocessor with the specs of a built-in environment, looked up when first read.

  Looking them up at registration would build every environment of every domain on import,
  which is slow and, for JAX-native environments, starts the XLA backend before a multi-host
  job could call jax.distributed.initialize().
  """
  specs = _specs_of(env_task)
  if specs is None:
    raise ImportError(f"task {task}: the packages of environment {env_task!r} are not installed")
  return tokenize_preprocessor(dataset, *specs, task=task)


EXAMPLE_KINDS = {"text": "text", "captioning": "vision_language", "vqa": "vision_language"}
_VL_SPEC = {"image": token_specs.ImageSpec(), "text": token_specs.TextSpec()}


def _example_source(
  kind: str,
  source: str,
  data_dir: str | None,
  text_key: str,
  split: str,
  shuffle_files: bool,
  seed=None,
):
  """Examples of a text or vision-language set as {"text"} or {"image", "text"}."""
  del shuffle_files, seed
  tf = tf_compat.import_tensorflow()
  from gato_jax.data import example_sets, vision_language

  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if kind == "text":
    dataset = example_sets.load_split(source, split, data_dir)
    if text_key not in dataset.element_spec:
      raise KeyError(
        f"{source!r} has no text feature {text_key!r}; it has {sorted(dataset.element_spec)}"
      )
    return dataset.map(lambda example: {"text": example[text_key]})
  if kind == "captioning":
    return vision_language.load_captioning(source, split, data_dir).map(
      lambda example: {"image": example["image"], "text": example["caption"]}
    )
  return vision_language.load_vqa(source, split, data_dir).map(
    lambda example: {
      "image": example["image"],
      "text": tf.strings.join([example["question"], example["answer"]], " "),
    }
  )


def _tokenize_example_numpy(kind: str, text, image=None) -> tuple:
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  if kind == "text":
    tokenizer = _text_tokenizer()
    # EOS closes each document, so the model learns where documents end.
    group = text_token_group(np.concatenate([tokenizer.encode(text), [tokenizer.eos_id]]))
  else:
    group = tokenize_timestep({"image": image, "text": text}, None, _VL_SPEC, separator=False)
  return tuple(
    np.asarray(getattr(group, name)).astype(np.float32 if name in _FLOAT_FIELDS else np.int32)
    for name in FIELDS
  )


def text_token_group(ids) -> TokenGroup:
  """One document's text ids as a TokenGroup: every token a target, no timesteps or images."""
  ids = np.asarray(ids, np.int32)
  n = ids.size
  return TokenGroup(
    tokens=ids,
    kinds=np.full(n, TokenKind.TEXT, np.int32),
    local_positions=np.full(n, NO_LOCAL_POSITION, np.int32),
    loss_mask=np.ones(n, bool),
    timesteps=np.zeros(n, np.int32),
    patches=np.zeros((0, 0), np.float32),
    patch_rows=np.zeros((0, 2), np.float32),
    patch_cols=np.zeros((0, 2), np.float32),
  )


@functools.cache
def _text_tokenizer():
  from gato_jax.tokenizer.text import TextTokenizer

  return TextTokenizer()


def _tokenize_examples(dataset, kind: str):
  inputs = lambda example: [example["text"]] + ([example["image"]] if "image" in example else [])
  return _map_to_fields(dataset, inputs, functools.partial(_tokenize_example_numpy, kind))


def register_example_task(
  name: str,
  kind: str,
  source: str,
  data_dir: str | None = None,
  text_key: str = "text",
  splits=("train", "validation"),
  domain: str | None = None,
  builtin: bool = False,
):
  """Registers a SeqIO Task over a text ("text"), captioning or VQA set.

  Args:
    name: the SeqIO task name.
    kind: "text" (documents; e.g. our CPython docs, lm1b, c4), "captioning" (ours or TFDS
      coco_captions) or "vqa" (ours).
    source: a TFDS name looked up in `data_dir`, or a dataset directory.
    text_key: the text feature of a text set.
    splits: the splits the source has.
  """
  tf_compat.import_tensorflow()
  import seqio

  if kind not in EXAMPLE_KINDS:
    raise ValueError(f"unknown example kind {kind!r}; kinds: {sorted(EXAMPLE_KINDS)}")
  registered = _register_info(
    TaskInfo(
      name,
      domain or registry.domain_of(name),
      EXAMPLE_KINDS[kind],
      source,
      data_dir,
      builtin=builtin,
    )
  )
  dataset_fn = functools.partial(_example_source, kind, source, data_dir, text_key)
  return seqio.TaskRegistry.add(
    registered,
    source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
    preprocessors=[functools.partial(_tokenize_examples, kind=kind)],
    output_features=output_features(),
  )


def task_domain(name: str) -> str:
  """A task's domain: its catalogue entry's, else the one its name implies (registry.domain_of)."""
  name = canonical_name(name)
  return CATALOGUE[name].domain if name in CATALOGUE else registry.domain_of(name)


_BUILTIN: set[str] = set()  # Names that register_builtin_tasks registered.
# The data directory they were last registered with (expanded).
_BUILTIN_DATA_DIR: list[str] = [os.path.expanduser(DEFAULT_DATA_DIR)]


def available_builtin_tasks() -> dict[str, list[str]]:
  """domain -> built-in task names whose dataset exists on disk."""
  available: dict[str, list[str]] = {}
  for name in sorted(_BUILTIN):
    info = CATALOGUE[name]
    if info.has_data():
      available.setdefault(info.domain, []).append(name)
  return available


def register_builtin_tasks(data_dir: str = DEFAULT_DATA_DIR, policy: str = "expert") -> list[str]:
  """Registers "<domain>/<task>" for every task of every registered domain, reading the
  datasets under `data_dir`, then the built-in mixtures over the tasks with data.

  `policy` picks whose generated episodes the control tasks read: "expert" (filtered at 80% of
  the expert's margin over random) or "random" (unfiltered; for tests and benchmarks).
  """
  from gato_jax.data import generation

  _BUILTIN_DATA_DIR[0] = os.path.expanduser(data_dir)
  names = []
  for domain in registry.domains():
    try:
      domain_tasks = registry.list_tasks(domain)
    except ImportError as e:  # An optional domain whose packages are not installed.
      logging.info("SeqIO tasks of domain %s not registered: %s", domain, e)
      continue
    for task in domain_tasks:
      source = rlds_io.dataset_dir(
        os.path.expanduser(data_dir),
        generation.dataset_name(domain, policy),
        rlds_io.config_name(task),
      )
      names.append(task)
      preprocessor = functools.partial(_builtin_tokenize_preprocessor, env_task=task, task=task)
      _add_control_task(
        names[-1],
        source,
        preprocessor,
        data_dir,
        None,
        task,
        episodes_lib.DEFAULT_FILTER_FRACTION if policy == "expert" else None,
        ("train",),
        domain,
        builtin=True,
      )
  from gato_jax.data import example_sets

  example_kinds = {
    "text/cpython_docs": "text",
    "vision_language/shapes_captions": "captioning",
    "vision_language/shapes_vqa": "vqa",
  }
  for domain in example_sets.domains():
    for task in example_sets.list_tasks(domain):
      kind = example_kinds.get(task)
      if kind is None:
        continue
      source = rlds_io.dataset_dir(
        os.path.expanduser(data_dir),
        example_sets.make_task(task).dataset,
        rlds_io.config_name(task),
      )
      names.append(task)
      register_example_task(task, kind, source, domain=domain, builtin=True)
  _BUILTIN.clear()
  _BUILTIN.update(names)
  from gato_jax.data import presets

  presets.register_mixtures(available_builtin_tasks())
  return names


def missing_data_reason(name: str) -> str:
  """Why built-in task or domain `name` has no data, in words that point at the fix."""
  name = canonical_name(name)
  data_dir = _BUILTIN_DATA_DIR[0]
  if not os.path.isdir(data_dir):
    return f"the data directory {data_dir} does not exist (config.data.data_dir)"
  if name in {CATALOGUE[task].domain for task in _BUILTIN}:
    return (
      f"domain {name!r} has no generated data in {data_dir}; generate it with"
      " tools/generate_data.py"
    )
  if name not in _BUILTIN:
    close = difflib.get_close_matches(name, sorted(_BUILTIN), n=1)
    return f"unknown task {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
  source = CATALOGUE[name].source
  interrupted = glob.glob(os.path.join(os.path.dirname(source), "incomplete.*"))
  if interrupted:
    return (
      f"task {name!r} has no data: its generation was interrupted (left {interrupted[0]});"
      " run tools/generate_data.py again"
    )
  return (
    f"task {name!r} has no data: no dataset at {source}; generate it with tools/generate_data.py"
  )


@functools.cache
def _specs_of(task: str):
  """(observation_spec, action_spec) of a registered environment task, or None if unavailable."""
  try:
    env = registry.make_env(task)
  except ImportError:  # An optional domain whose package is not installed.
    return None
  specs = (env.observation_spec, env.action_spec)
  env.close()
  return specs


def iter_token_groups(
  name: str, split: str = "train", shard: tuple[int, int] | None = None
) -> Iterator[TokenGroup]:
  """A SeqIO Task's examples as TokenGroups, one at a time (the source of a derived store).

  `shard=(index, count)` reads only that shard (seqio.ShardInfo: whole files when the dataset has
  enough of them, otherwise every count-th example).
  """
  tf_compat.import_tensorflow()
  import seqio

  shard_info = None
  if shard is not None:
    index, count = shard
    if not 0 <= index < count:
      raise ValueError(f"shard index {index} is outside [0, {count}) for task {name!r}")
    shard_info = seqio.ShardInfo(index=index, num_shards=count)
  dataset = seqio.get_mixture_or_task(seqio_name(canonical_name(name))).get_dataset(
    sequence_length=None, split=split, shuffle=False, use_cached=False, shard_info=shard_info
  )
  tf = tf_compat.import_tensorflow()
  text = task_info(name).kind == "text" and "targets" in dataset.element_spec
  try:
    for example in dataset.as_numpy_iterator():
      if text:  # A plain SeqIO text task's document (seqio_task_info).
        if example["targets"].size:  # A blank line is no document.
          yield text_token_group(example["targets"])
        continue
      fields = {k: example[k] for k in FIELDS}
      fields["loss_mask"] = fields["loss_mask"].astype(bool)
      yield TokenGroup(**fields)
  except tf.errors.InvalidArgumentError as e:
    # The tokenizer's own error, raised inside tf.numpy_function, comes back wrapped in graph
    # noise; its last "XError: message" line is what the user needs.
    causes = re.findall(r"^\w*Error: (.+)$", e.message, re.M)
    if not causes:
      raise
    raise ValueError(
      f"task {name!r}: its stored episodes do not fit its specs: {causes[-1]}"
    ) from None


def load_token_groups(
  name: str, split: str = "train", limit: int | None = None, shard: tuple[int, int] | None = None
) -> list[TokenGroup]:
  """`iter_token_groups` as a list of at most `limit` (within the shard); none is an error."""
  groups = []
  for group in iter_token_groups(name, split, shard):
    if limit is not None and len(groups) >= limit:
      break
    groups.append(group)
  if not groups:
    where = f" shard {shard[0]} of {shard[1]}" if shard else ""
    raise ValueError(f"task {name!r} has no episodes in split {split!r}{where} (after filtering)")
  return groups


def register_run_tasks(data_dir: str, policy: str = "expert", imports: str = "") -> None:
  """What a run's config registers: the built-in tasks and mixtures for `data_dir`, then the
  modules of `imports` (comma-separated; data.imports), which may add tasks and mixtures."""
  register_builtin_tasks(data_dir, policy)
  for module in filter(None, (m.strip() for m in imports.split(","))):
    importlib.import_module(module)


def store_root(data_dir: str, derived_dir: str = "") -> str:
  """Where the derived stores of a data directory go (data.derived_dir; default DATA_DIR/derived)."""
  return os.path.expanduser(derived_dir or os.path.join(os.path.expanduser(data_dir), "derived"))


def store_dir(derived_dir: str, name: str, split: str = "train") -> str:
  """Where a task's derived store lives, in a folder named by its file-safe SeqIO name."""
  return os.path.join(os.path.expanduser(derived_dir), seqio_name(canonical_name(name)), split)


def open_store(
  name: str, derived_dir: str, split: str = "train", rebuild: bool = False
) -> store_lib.TaskStore:
  """A task's derived store, built first if it is missing, stale or `rebuild` is set.

  Raises:
    store_lib.StoreError: naming the task and the file, if a store's files are corrupt.
    KeyError: if the task is not in the catalogue.
  """
  info = task_info(name)
  name = info.name
  directory = store_dir(derived_dir, name, split)
  fingerprint = info.fingerprint(split)
  meta = store_lib.read_meta(directory)
  if rebuild or meta is None or meta.get("fingerprint") != fingerprint:
    if not info.has_data():
      raise FileNotFoundError(
        f"task {name}: no dataset at {info.source} to build its store from;"
        " generate it with tools/generate_data.py"
      )
    logging.info("building the derived store of %s (%s) at %s", name, split, directory)
    return store_lib.build(
      name, iter_token_groups(name, split), directory, fingerprint, repair=rebuild
    )
  return store_lib.TaskStore(directory, name)
