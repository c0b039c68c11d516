"""SeqIO Tasks of the catalogue's tasks: registering them, and reading them as TokenGroups.

User code adds any RLDS/TFDS dataset (a public one by name, with a key map) in one call, e.g.

  tasks.register_control_task(
      "my_robot.pick", source="my_rlds_dataset", data_dir="/data/tfds",
      observation_spec={"state": ContinuousSpec((7,))},
      action_spec=ContinuousSpec((4,), mu_law=False),
      key_map={"steps/observation/state": "steps/observation/joint_pos"})

and a text, captioning or VQA set with `register_example_task`; a Task registered the plain SeqIO
way (`seqio.TaskRegistry.add` over any DataSource) joins a mixture too (catalogue.seqio_task_info).
Each Task yields one example per (filtered) episode, with the fields of a TokenGroup
(`output_features`). Episodes below the paper's 80%-of-expert bar are dropped where the task's
statistics are known.

Training does not read the Tasks directly: gato_jax.data.pipeline tokenizes a task once into its
derived store (gato_jax.data.store), through `iter_token_groups`. The built-in tasks
(gato_jax.sources.builtin) are SeqIO Tasks as well, so that SeqIO users can read them, but their
stores are built straight from the episodes with the numpy tokenizer (`read_episode_groups`,
`read_example_groups`), with the same result and no round trip through TensorFlow ops.

The catalogue's names (task_info, canonical_name, seqio_name, CATALOGUE, TaskInfo, ...) are
importable from here as well, as user code has always imported them.
"""

import functools
import itertools
import os
import re
import sys
from typing import Any, Iterator, Mapping

import numpy as np

from gato_jax import tf_compat
from gato_jax.data import catalogue, examples, rlds_io
from gato_jax.data import stats as stats_lib
from gato_jax.data.catalogue import (  # noqa: F401  (the catalogue, where users import it)
  ACCEPTED_FEATURES,
  CATALOGUE,
  DEFAULT_DATA_DIR,
  FIELDS,
  FLOAT_FIELDS,
  TASK_PREFIX,
  TaskInfo,
  available_builtin_tasks,
  canonical_name,
  missing_data_reason,
  seqio_name,
  seqio_task_info,
  task_domain,
  task_info,
  user_task_info,
)
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, VOCAB_SIZE, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, tokenize_episode, tokenize_timestep


def _register_info(info: TaskInfo) -> str:
  """Adds `info` to the catalogue, removing a SeqIO task of the same name; its SeqIO name."""
  seqio = sys.modules.get("seqio")  # No SeqIO task can exist before seqio is imported.
  if seqio is not None and info.seqio_name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(info.seqio_name)
  return catalogue.add(info)


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
      dtype=tf.float32 if name in FLOAT_FIELDS else tf.int32,
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
    out.append(value.astype(np.float32 if name in FLOAT_FIELDS else np.int32))
  return tuple(out)


def _episode_inputs(observation_spec: Any, action_spec: Any, task: str):
  """flat RLDS episode -> [observation leaves, action leaves, is_last], as `_tokenize_numpy`
  takes them."""
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

  return inputs


def tokenize_preprocessor(dataset, observation_spec: Any, action_spec: Any, task: str):
  """SeqIO preprocessor: flat RLDS episodes -> TokenGroup-field examples."""
  return _map_to_fields(
    dataset,
    _episode_inputs(observation_spec, action_spec, task),
    functools.partial(_tokenize_numpy, observation_spec, action_spec),
  )


def _token_group(fields) -> TokenGroup:
  """FIELDS in order (bools as int32, as a Task's examples carry them) -> a TokenGroup."""
  group = dict(zip(FIELDS, fields))
  group["loss_mask"] = np.asarray(group["loss_mask"]).astype(bool)
  return TokenGroup(**group)


def read_episode_groups(
  source: str,
  split: str,
  observation_spec: Any,
  action_spec: Any,
  task: str,
  data_dir: str | None = None,
  key_map: Mapping[str, str] | None = None,
  stats_task: str | None = None,
  filter_fraction: float | None = None,
  limit: int | None = None,
) -> Iterator[TokenGroup]:
  """The (filtered) RLDS episodes of a control task as TokenGroups, tokenized by numpy as they
  are read: the same groups as its SeqIO Task's, without the round trip through TensorFlow
  ops (the built-in tasks' `TaskInfo.reader`). `limit`: of the first `limit` stored episodes
  alone, counted before the filter (None: all)."""
  tf = tf_compat.import_tensorflow()
  dataset = _episode_source(
    source, data_dir, key_map, stats_task, filter_fraction, split, False, limit=limit
  )
  inputs = _episode_inputs(observation_spec, action_spec, task)
  dataset = dataset.map(
    lambda episode: tuple(inputs(episode)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  for leaves in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    yield _token_group(_tokenize_numpy(observation_spec, action_spec, *leaves))


def _map_to_fields(dataset, inputs_fn, numpy_fn):
  """Maps each element through `numpy_fn(*inputs_fn(element))`, which returns FIELDS in order."""
  tf = tf_compat.import_tensorflow()

  def tokenize(element):
    outputs = tf.numpy_function(
      numpy_fn,
      inputs_fn(element),
      [tf.float32 if name in FLOAT_FIELDS else tf.int32 for name in FIELDS],
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
  limit: int | None = None,
):
  del shuffle_files, seed  # Stored order is kept: the mixture does its own seeded sampling.
  tf = tf_compat.import_tensorflow()
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  dataset = rlds_io.load_dataset(source, split, data_dir, key_map)
  if limit:
    # Before the filter: a stored set's first N episodes are the N a smaller --episodes run
    # generated (episode i's seed depends on i alone), so they pass or fail alike.
    dataset = dataset.take(limit)
  dataset = dataset.map(_flat_episode)
  if filter_fraction is not None and stats_task is not None:
    stats = stats_lib.load_stats(data_dir or os.path.expanduser(DEFAULT_DATA_DIR), stats_task)
    threshold = stats_lib.return_threshold(stats, filter_fraction)
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
  filter_fraction: float | None = stats_lib.DEFAULT_FILTER_FRACTION,
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
  return add_control_task(
    name, source, preprocessor, data_dir, key_map, stats_task, filter_fraction, splits
  )


def add_control_task(
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
  reader=None,
  seqio_task: bool = True,
):
  """`register_control_task` with the preprocessor given, for gato_jax.sources.builtin: the
  catalogue entry's `builtin` and `reader` (see TaskInfo) come from the caller. Without
  `seqio_task` (a task with a reader, for a run that names no SeqIO code) only the catalogue
  entry is added, and neither TensorFlow nor SeqIO is imported; the seqio.Task, or None."""
  registered = _register_info(
    TaskInfo(
      name,
      domain or catalogue.domain_of(name),
      "control",
      source,
      data_dir,
      stats_task if filter_fraction is not None else None,
      filter_fraction if stats_task is not None else None,
      builtin,
      reader=reader,
    )
  )
  if not seqio_task:
    return None
  tf_compat.import_tensorflow()
  import seqio

  dataset_fn = functools.partial(
    _episode_source, source, data_dir, key_map, stats_task, filter_fraction
  )
  return seqio.TaskRegistry.add(
    registered,
    source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
    preprocessors=[preprocessor],
    output_features=output_features(),
  )


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
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if kind == "text":
    dataset = examples.load_split(source, split, data_dir)
    if text_key not in dataset.element_spec:
      raise KeyError(
        f"{source!r} has no text feature {text_key!r}; it has {sorted(dataset.element_spec)}"
      )
    return dataset.map(lambda example: {"text": example[text_key]})
  if kind == "captioning":
    return examples.load_captioning(source, split, data_dir).map(
      lambda example: {"image": example["image"], "text": example["caption"]}
    )
  return examples.load_vqa(source, split, data_dir).map(
    lambda example: {
      "image": example["image"],
      "text": tf.strings.join([example["question"], example["answer"]], " "),
    }
  )


def read_example_groups(
  kind: str,
  source: str,
  split: str,
  data_dir: str | None = None,
  text_key: str = "text",
  limit: int | None = None,
) -> Iterator[TokenGroup]:
  """A text, captioning or VQA set's examples (the first `limit` alone; None: all) as
  TokenGroups, tokenized by numpy as they are read (see `read_episode_groups`)."""
  tf = tf_compat.import_tensorflow()
  dataset = _example_source(kind, source, data_dir, text_key, split, False)
  if limit:
    dataset = dataset.take(limit)
  for example in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    yield _token_group(_tokenize_example_numpy(kind, example["text"], example.get("image")))


def _tokenize_example_numpy(kind: str, text, image=None) -> tuple:
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  if kind == "text":
    tokenizer = _text_tokenizer()
    # EOS closes each document, so the model learns where documents end.
    group = text_token_group(np.concatenate([tokenizer.encode(text), [tokenizer.eos_id]]))
  else:
    group = tokenize_timestep({"image": image, "text": text}, None, _VL_SPEC, separator=False)
  return tuple(
    np.asarray(getattr(group, name)).astype(np.float32 if name in FLOAT_FIELDS else np.int32)
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
  reader=None,
  seqio_task: bool = True,
):
  """Registers a SeqIO Task over a text ("text"), captioning or VQA set.

  Args:
    name: the SeqIO task name.
    kind: "text" (documents; e.g. our CPython docs, lm1b, c4), "captioning" (ours or TFDS
      coco_captions) or "vqa" (ours).
    source: a TFDS name looked up in `data_dir`, or a dataset directory.
    text_key: the text feature of a text set.
    splits: the splits the source has.
    domain, builtin, reader: the catalogue entry's (TaskInfo); domain defaults to the one the
      name implies.
    seqio_task: False: only the catalogue entry (a task with a reader; see add_control_task).

  Returns:
    The seqio.Task, or None without `seqio_task`.
  """
  if kind not in EXAMPLE_KINDS:
    raise ValueError(f"unknown example kind {kind!r}; kinds: {sorted(EXAMPLE_KINDS)}")
  registered = _register_info(
    TaskInfo(
      name,
      domain or catalogue.domain_of(name),
      EXAMPLE_KINDS[kind],
      source,
      data_dir,
      builtin=builtin,
      reader=reader,
    )
  )
  if not seqio_task:
    return None
  tf_compat.import_tensorflow()
  import seqio

  dataset_fn = functools.partial(_example_source, kind, source, data_dir, text_key)
  return seqio.TaskRegistry.add(
    registered,
    source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
    preprocessors=[functools.partial(_tokenize_examples, kind=kind)],
    output_features=output_features(),
  )


def iter_token_groups(
  name: str,
  split: str = "train",
  shard: tuple[int, int] | None = None,
  limit: int | None = None,
) -> Iterator[TokenGroup]:
  """A SeqIO Task's examples as TokenGroups, one at a time (the source of a derived store).

  `shard=(index, count)` reads only that shard (seqio.ShardInfo: whole files when the dataset has
  enough of them, otherwise every count-th example). `limit` reads the task's first `limit`
  stored items alone (None: all): a built-in control task's first episodes, counted before its
  filter; another task's first examples.
  """
  info = task_info(name)
  if info.reader is not None and shard is None:
    yield from info.reader(split, limit)
    return
  if limit:
    yield from itertools.islice(iter_token_groups(name, split, shard), limit)
    return
  tf_compat.import_tensorflow()
  import seqio

  if seqio_name(info.name) not in seqio.TaskRegistry.names():
    raise ValueError(
      f"task {info.name!r} has no SeqIO Task to read through (registered with"
      " seqio_tasks=False); register it with gato_jax.sources.builtin.register_builtin_tasks"
    )
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
  text = info.kind == "text" and "targets" in dataset.element_spec
  try:
    for example in dataset.as_numpy_iterator():
      if text:  # A plain SeqIO text task's document (seqio_task_info).
        if example["targets"].size:  # A blank line is no document.
          yield text_token_group(example["targets"])
        continue
      yield _token_group(example[k] for k in FIELDS)
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
