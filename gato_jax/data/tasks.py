"""SeqIO Tasks, one per control task: stored RLDS episodes -> tokenized episodes.

Importing this module registers a Task for every task of the built-in domains, named
"gato.<domain>.<task>" (e.g. "gato.babyai.GoToRedBall"), reading the locally generated TFDS
dataset under the default data directory. `register_control_task` adds any other RLDS/TFDS
dataset (a public one by name, with a key map) in one call, e.g.

  tasks.register_control_task(
      "my_robot.pick", source="my_rlds_dataset", data_dir="/data/tfds",
      observation_spec={"state": ContinuousSpec((7,))},
      action_spec=ContinuousSpec((4,), mu_law=False),
      key_map={"steps/observation/state": "steps/observation/joint_pos"})

Each Task yields one example per (filtered) episode, with the fields of a TokenGroup; the
training mixture (gato_jax.data.mixture) windows, prompts and packs them. Episodes below the
paper's 80%-of-expert bar are dropped where the task's statistics are known.
"""

import difflib
import functools
import glob
import os
import re
from typing import Any, Mapping

from absl import logging
import numpy as np

from gato_jax import tf_compat
from gato_jax.data import episodes as episodes_lib
from gato_jax.data import rlds_io
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.constants import NO_LOCAL_POSITION, VOCAB_SIZE, TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, tokenize_episode, tokenize_timestep

DEFAULT_DATA_DIR = os.path.join("~", ".cache", "gato_jax")
TASK_PREFIX = "gato"
# name -> rank of each field a Task's examples carry (a TokenGroup, with bools as int32).
FIELDS = {"tokens": 1, "kinds": 1, "local_positions": 1, "loss_mask": 1, "timesteps": 1,
          "patches": 2, "patch_rows": 2, "patch_cols": 2}
_FLOAT_FIELDS = ("patches", "patch_rows", "patch_cols")


def task_name(task: str) -> str:
  """"dm_control/cartpole-swingup" -> "gato.dm_control.cartpole_swingup".

  SeqIO names allow only word characters, dots, colons and '#'.
  """
  safe = re.sub(r"[^\w.:#]", "_", task.replace("/", "."))
  return f"{TASK_PREFIX}.{safe}"


def output_features():
  tf = tf_compat.import_tensorflow()
  import seqio

  vocabulary = seqio.PassThroughVocabulary(VOCAB_SIZE)
  return {
      name: seqio.Feature(vocabulary, add_eos=False, required=True, rank=rank,
                          dtype=tf.float32 if name in _FLOAT_FIELDS else tf.int32)
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
    return ([leaf(steps["observation"], p) for p in obs_paths]
            + [leaf(steps["action"], p) for p in act_paths] + [steps["is_last"]])

  return _map_to_fields(dataset, inputs,
                        functools.partial(_tokenize_numpy, observation_spec, action_spec))


def _map_to_fields(dataset, inputs_fn, numpy_fn):
  """Maps each element through `numpy_fn(*inputs_fn(element))`, which returns FIELDS in order."""
  tf = tf_compat.import_tensorflow()

  def tokenize(element):
    outputs = tf.numpy_function(
        numpy_fn, inputs_fn(element),
        [tf.float32 if name in _FLOAT_FIELDS else tf.int32 for name in FIELDS], stateful=False)
    fields = {}
    for name, value in zip(FIELDS, outputs):
      value.set_shape([None] if FIELDS[name] == 1 else [None, None])
      fields[name] = value
    return fields

  return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _episode_source(source: str, data_dir: str | None, key_map, stats_task: str | None,
                    filter_fraction: float | None, split: str, shuffle_files: bool, seed=None):
  del shuffle_files, seed  # Stored order is kept: the mixture does its own seeded sampling.
  tf = tf_compat.import_tensorflow()
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  dataset = rlds_io.load_dataset(source, split, data_dir, key_map).map(_flat_episode)
  if filter_fraction is not None and stats_task is not None:
    stats = episodes_lib.load_stats(data_dir or os.path.expanduser(DEFAULT_DATA_DIR), stats_task)
    threshold = episodes_lib.return_threshold(stats, filter_fraction)
    dataset = dataset.filter(
        lambda episode: tf.cast(episode["episode_metadata"]["return"], tf.float64) >= threshold)
  return dataset


def register_control_task(name: str, source: str, observation_spec: Any, action_spec: Any,
                          data_dir: str | None = None, key_map: Mapping[str, str] | None = None,
                          stats_task: str | None = None,
                          filter_fraction: float | None = episodes_lib.DEFAULT_FILTER_FRACTION,
                          splits=("train",)):
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
  preprocessor = functools.partial(tokenize_preprocessor, observation_spec=observation_spec,
                                   action_spec=action_spec, task=name)
  return _add_control_task(name, source, preprocessor, data_dir, key_map, stats_task,
                           filter_fraction, splits)


def _add_control_task(name: str, source: str, preprocessor, data_dir: str | None, key_map,
                      stats_task: str | None, filter_fraction: float | None, splits):
  tf_compat.import_tensorflow()
  import seqio

  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  TASK_KINDS[name] = "control"
  dataset_fn = functools.partial(_episode_source, source, data_dir, key_map, stats_task,
                                 filter_fraction)
  return seqio.TaskRegistry.add(
      name,
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


# SeqIO name -> "control" | "text" | "vision_language": how the mixture builds its sequences.
TASK_KINDS: dict[str, str] = {}
EXAMPLE_KINDS = {"text": "text", "captioning": "vision_language", "vqa": "vision_language"}
_VL_SPEC = {"image": token_specs.ImageSpec(), "text": token_specs.TextSpec()}


def _example_source(kind: str, source: str, data_dir: str | None, text_key: str, split: str,
                    shuffle_files: bool, seed=None):
  """Examples of a text or vision-language set as {"text"} or {"image", "text"}."""
  del shuffle_files, seed
  tf = tf_compat.import_tensorflow()
  from gato_jax.data import example_sets, vision_language

  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if kind == "text":
    dataset = example_sets.load_split(source, split, data_dir)
    if text_key not in dataset.element_spec:
      raise KeyError(f"{source!r} has no text feature {text_key!r}; it has"
                     f" {sorted(dataset.element_spec)}")
    return dataset.map(lambda example: {"text": example[text_key]})
  if kind == "captioning":
    return vision_language.load_captioning(source, split, data_dir).map(
        lambda example: {"image": example["image"], "text": example["caption"]})
  return vision_language.load_vqa(source, split, data_dir).map(
      lambda example: {"image": example["image"],
                       "text": tf.strings.join([example["question"], example["answer"]], " ")})


def _tokenize_example_numpy(kind: str, text, image=None) -> tuple:
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  if kind == "text":
    tokenizer = _text_tokenizer()
    # EOS closes each document, so the model learns where documents end.
    ids = np.concatenate([tokenizer.encode(text), [tokenizer.eos_id]]).astype(np.int32)
    n = ids.size
    group = TokenGroup(tokens=ids, kinds=np.full(n, TokenKind.TEXT, np.int32),
                       local_positions=np.full(n, NO_LOCAL_POSITION, np.int32),
                       loss_mask=np.ones(n, bool),
                       timesteps=np.zeros(n, np.int32), patches=np.zeros((0, 0), np.float32),
                       patch_rows=np.zeros((0, 2), np.float32),
                       patch_cols=np.zeros((0, 2), np.float32))
  else:
    group = tokenize_timestep({"image": image, "text": text}, None, _VL_SPEC, separator=False)
  return tuple(np.asarray(getattr(group, name)).astype(
      np.float32 if name in _FLOAT_FIELDS else np.int32) for name in FIELDS)


@functools.cache
def _text_tokenizer():
  from gato_jax.tokenizer.text import TextTokenizer

  return TextTokenizer()


def _tokenize_examples(dataset, kind: str):
  inputs = lambda example: [example["text"]] + ([example["image"]] if "image" in example else [])
  return _map_to_fields(dataset, inputs, functools.partial(_tokenize_example_numpy, kind))


def register_example_task(name: str, kind: str, source: str, data_dir: str | None = None,
                          text_key: str = "text", splits=("train", "validation")):
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
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  TASK_KINDS[name] = EXAMPLE_KINDS[kind]
  dataset_fn = functools.partial(_example_source, kind, source, data_dir, text_key)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
      preprocessors=[functools.partial(_tokenize_examples, kind=kind)],
      output_features=output_features())


# SeqIO name -> (domain, dataset directory) of the built-in tasks as last registered.
BUILTIN_SOURCES: dict[str, tuple[str, str]] = {}
# The data directory they were last registered with (expanded).
BUILTIN_DATA_DIR: list[str] = [os.path.expanduser(DEFAULT_DATA_DIR)]


def task_domain(name: str) -> str:
  """A task's domain: its built-in domain, else the part of its name before the task.

  "gato.<domain>.<task>" names follow the built-ins; others ("public.arm") use their first part.
  """
  if name in BUILTIN_SOURCES:
    return BUILTIN_SOURCES[name][0]
  parts = name.split(".")
  return parts[1] if parts[0] == TASK_PREFIX and len(parts) > 2 else parts[0]


def available_builtin_tasks() -> dict[str, list[str]]:
  """domain -> built-in SeqIO task names whose dataset exists on disk."""
  available: dict[str, list[str]] = {}
  for name, (domain, source) in sorted(BUILTIN_SOURCES.items()):
    if os.path.isfile(os.path.join(source, "dataset_info.json")):
      available.setdefault(domain, []).append(name)
  return available


def register_builtin_tasks(data_dir: str = DEFAULT_DATA_DIR, policy: str = "expert") -> list[str]:
  """Registers "gato.<domain>.<task>" for every task of every registered domain."""
  from gato_jax.data import generation
  from gato_jax.envs import registry

  BUILTIN_DATA_DIR[0] = os.path.expanduser(data_dir)
  names = []
  for domain in registry.domains():
    try:
      domain_tasks = registry.list_tasks(domain)
    except ImportError as e:  # An optional domain whose packages are not installed.
      logging.info("SeqIO tasks of domain %s not registered: %s", domain, e)
      continue
    for task in domain_tasks:
      source = rlds_io.dataset_dir(os.path.expanduser(data_dir),
                                   generation.dataset_name(domain, policy), rlds_io.config_name(task))
      names.append(task_name(task))
      BUILTIN_SOURCES[names[-1]] = (domain, source)
      preprocessor = functools.partial(_builtin_tokenize_preprocessor, env_task=task,
                                       task=names[-1])
      _add_control_task(names[-1], source, preprocessor, data_dir, None, task,
                        episodes_lib.DEFAULT_FILTER_FRACTION, ("train",))
  from gato_jax.data import example_sets

  example_kinds = {"text/cpython_docs": "text", "vision_language/shapes_captions": "captioning",
                   "vision_language/shapes_vqa": "vqa"}
  for domain in example_sets.domains():
    for task in example_sets.list_tasks(domain):
      kind = example_kinds.get(task)
      if kind is None:
        continue
      source = rlds_io.dataset_dir(os.path.expanduser(data_dir), example_sets.make_task(task).dataset,
                                   rlds_io.config_name(task))
      names.append(task_name(task))
      BUILTIN_SOURCES[names[-1]] = (domain, source)
      register_example_task(names[-1], kind, source)
  return names


def missing_data_reason(name: str) -> str:
  """Why built-in task or domain `name` has no data, in words that point at the fix."""
  data_dir = BUILTIN_DATA_DIR[0]
  if not os.path.isdir(data_dir):
    return f"the data directory {data_dir} does not exist (config.data.data_dir)"
  if name in {domain for domain, _ in BUILTIN_SOURCES.values()}:
    return f"domain {name!r} has no generated data in {data_dir}; generate it with" \
           " tools/generate_data.py"
  if name not in BUILTIN_SOURCES:
    close = difflib.get_close_matches(name, BUILTIN_SOURCES, n=1)
    return f"unknown task {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
  source = BUILTIN_SOURCES[name][1]
  interrupted = glob.glob(os.path.join(os.path.dirname(source), "incomplete.*"))
  if interrupted:
    return (f"task {name!r} has no data: its generation was interrupted (left {interrupted[0]});"
            " run tools/generate_data.py again")
  return f"task {name!r} has no data: no dataset at {source}; generate it with" \
         " tools/generate_data.py"


@functools.cache
def _specs_of(task: str):
  """(observation_spec, action_spec) of a registered environment task, or None if unavailable."""
  from gato_jax.envs import registry

  try:
    env = registry.make_env(task)
  except ImportError:  # An optional domain whose package is not installed.
    return None
  specs = (env.observation_spec, env.action_spec)
  env.close()
  return specs


def load_token_groups(name: str, split: str = "train", limit: int | None = None,
                      shard: tuple[int, int] | None = None) -> list[TokenGroup]:
  """A SeqIO Task's examples as TokenGroups (the mixture's episode pool for that task).

  `shard=(index, count)` reads only that shard (seqio.ShardInfo: whole files when the dataset has
  enough of them, otherwise every count-th example); `limit` then applies within the shard.
  """
  tf_compat.import_tensorflow()
  import seqio

  shard_info = None
  if shard is not None:
    index, count = shard
    if not 0 <= index < count:
      raise ValueError(f"shard index {index} is outside [0, {count}) for task {name!r}")
    shard_info = seqio.ShardInfo(index=index, num_shards=count)
  dataset = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False, use_cached=False, shard_info=shard_info)
  if limit is not None:
    dataset = dataset.take(limit)
  groups = []
  tf = tf_compat.import_tensorflow()
  try:
    for example in dataset.as_numpy_iterator():
      fields = {k: example[k] for k in FIELDS}
      fields["loss_mask"] = fields["loss_mask"].astype(bool)
      groups.append(TokenGroup(**fields))
  except tf.errors.InvalidArgumentError as e:
    # The tokenizer's own error, raised inside tf.numpy_function, comes back wrapped in graph
    # noise; its last "XError: message" line is what the user needs.
    causes = re.findall(r"^\w*Error: (.+)$", e.message, re.M)
    if not causes:
      raise
    raise ValueError(f"task {name!r}: its stored episodes do not fit its specs: {causes[-1]}"
                     ) from None
  if not groups:
    where = f" shard {shard[0]} of {shard[1]}" if shard else ""
    raise ValueError(f"task {name!r} has no episodes in split {split!r}{where} (after filtering)")
  return groups


# Importing this module is how users get the built-in tasks (as with t5.data.tasks).
BUILTIN_TASKS = register_builtin_tasks()
