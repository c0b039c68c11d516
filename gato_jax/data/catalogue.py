"""The task catalogue: one name and one `TaskInfo` per task, and what a name refers to.

Every task has one name, used by configs, mixtures, logs, evaluation and reports: a built-in
task's is "<domain>/<task>" ("gymnax/CartPole-v1", "babyai/GoToRedBall"), as its environment or
example set is named; a task that user code registers keeps the name it was given. SeqIO forbids
'/' and '-' in its names, so `seqio_name` derives the name a task has in SeqIO's registry
("gato.gymnax.CartPole_v1"), and the derived store's folder, from it; that is the one conversion,
and `task_info` accepts either spelling (a mixture that user code registers the SeqIO way names
SeqIO tasks). `domain_of` is the one reading of a domain off a name.

`CATALOGUE` maps each registered task's name to its `TaskInfo` (domain, kind, source, statistics
task, and for built-in tasks the reader of its episodes): the one place that knows what a name
refers to. gato_jax.data.tasks fills it for tasks registered through its helpers,
gato_jax.sources.builtin for the built-in ones; a task that user code registers the plain SeqIO
way (`seqio.TaskRegistry.add` over any DataSource) gets its entry from its output features
(`seqio_task_info`): T5-style text over our SentencePiece vocabulary, or examples that already
have the TokenGroup fields; any other is refused in one line.

No TensorFlow, SeqIO or environment is imported here (SeqIO is consulted only once user code
has imported it).
"""

import dataclasses
import difflib
import functools
import glob
import hashlib
import json
import os
import re
import sys
from typing import Any, Callable, Iterator

from gato_jax.data import stats as stats_lib
from gato_jax.data import store as store_lib
from gato_jax.tokenizer.timestep import TokenGroup

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
FLOAT_FIELDS = ("patches", "patch_rows", "patch_cols")


def domain_of(name: str) -> str:
  """A task's domain, from its name alone: "babyai/GoToRedBall" -> "babyai"; a name without '/'
  (a task that user code registered, "public.arm") -> its first dotted part ("public").

  The one place that reads a domain off a name; `task_domain` prefers the catalogue's.
  """
  return name.split("/", 1)[0] if "/" in name else name.split(".", 1)[0]


def value_for(task: str, spec: str, default: Any, setting: str, parse, form: str) -> Any:
  """`spec`'s value for `task`, else for its domain, else `default`: the per-task form of a
  config's setting ("dm_control_pixels=10,gymnax/CartPole-v1=50").

  Args:
    parse: the text after "=" -> the value; raises ValueError for a bad one.
    form: what a value must be, for the error ("positive integer").

  Raises:
    ValueError: naming `setting` for an entry that is not <task or domain>=<form>.
  """
  values = {}
  for entry in filter(None, (e.strip() for e in spec.split(","))):
    name, _, text = entry.partition("=")
    try:
      values[name.strip()] = parse(text.strip())
    except ValueError:
      raise ValueError(f"{setting} entry {entry!r} must be <task or domain>=<{form}>") from None
  return values.get(task, values.get(domain_of(task), default))


def _positive_int(text: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise ValueError(text)
  return int(text)


def count_for(task: str, spec: str, default: int, setting: str) -> int:
  """`value_for` a positive count ("dm_control_pixels=10,gymnax/CartPole-v1=50")."""
  return value_for(task, spec, default, setting, _positive_int, "positive integer")


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
    reader: `(split, limit) -> TokenGroups` read straight from the source with the numpy
      tokenizer (the built-in tasks), from the first `limit` stored items alone (counted before
      the filter; None: all); None: through the task's SeqIO Task (gato_jax.data.tasks).
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
  reader: Callable[[str, int | None], Iterator[TokenGroup]] | None = dataclasses.field(
    default=None, compare=False, repr=False
  )

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
      path = stats_lib.stats_path(self.stats_data_dir, self.stats_task)
      if os.path.isfile(path):
        with open(path, "rb") as f:
          parts.append(hashlib.sha256(f.read()).hexdigest())
    return store_lib.fingerprint(*parts)

  def stored_items(self, split: str) -> int | None:
    """Items (episodes, examples) in `split` of a generated dataset directory; None: unknown."""
    info = os.path.join(os.path.expanduser(self.source), "dataset_info.json")
    if not os.path.isfile(info):
      return None
    with open(info) as f:
      splits = {s.get("name"): s for s in json.load(f).get("splits", [])}
    if split not in splits:
      return None
    return sum(int(n) for n in splits[split].get("shardLengths", []))

  @property
  def stats_data_dir(self) -> str:
    return os.path.expanduser(self.data_dir or DEFAULT_DATA_DIR)


# Task name -> its TaskInfo, for every task registered through gato_jax.
CATALOGUE: dict[str, TaskInfo] = {}
# SeqIO registry name -> task name, where the two differ (built-in tasks).
_BY_SEQIO_NAME: dict[str, str] = {}


def add(info: TaskInfo) -> str:
  """Adds (or replaces) `info` in the catalogue; returns its SeqIO name."""
  registered = info.seqio_name
  CATALOGUE[info.name] = info
  if registered != info.name:
    _BY_SEQIO_NAME[registered] = info.name
  return registered


def task_info(name: str) -> TaskInfo:
  """The catalogue entry of a registered task, by its name or its SeqIO name; a clear error for
  anything else."""
  info = CATALOGUE.get(name) or CATALOGUE.get(_BY_SEQIO_NAME.get(name, "")) or seqio_task_info(name)
  if info is None:
    raise KeyError(
      f"task {name!r} is not in the gato_jax task catalogue; register it with"
      " gato_jax.data.tasks.register_control_task or register_example_task, or as a seqio.Task"
      " (built-in tasks: gato_jax.sources.builtin.register_builtin_tasks(data_dir))"
    )
  return info


def user_task_info(name: str) -> TaskInfo | None:
  """The entry of a task that user code registered (through gato_jax.data.tasks or the plain
  SeqIO way), by either spelling; None for built-in and unknown names.

  Raises:
    ValueError: for a SeqIO task whose features cannot be trained on (`seqio_task_info`).
  """
  info = CATALOGUE.get(canonical_name(name))
  if info is not None:
    return None if info.builtin else info
  return seqio_task_info(name)


# What a plain SeqIO task must output to be trained on, for the one-line refusal.
ACCEPTED_FEATURES = (
  "one 'targets' feature over the gato_jax SentencePiece vocabulary"
  " (gato_jax.tokenizer.text.seqio_vocabulary(); trained as text), or the TokenGroup fields"
  f" {sorted(FIELDS)} (tasks.output_features(); trained as episodes)"
)


def seqio_task_info(name: str) -> TaskInfo | None:
  """The entry of a task registered the plain SeqIO way (`seqio.TaskRegistry.add` over any
  DataSource), outside gato_jax; None if SeqIO has no task of that name.

  A task with one "targets" feature over our SentencePiece vocabulary (T5-style text) is
  trained as text, one document per example; a task that outputs the TokenGroup fields
  (`tasks.output_features()`) is trained on its examples as they are, as episodes. Its domain is
  the one its name implies.

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
  return TaskInfo(name, domain_of(name), kind, f"seqio:{name}", from_seqio=True)


def _is_text_feature(feature) -> bool:
  from gato_jax import tf_compat
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


def task_domain(name: str) -> str:
  """A task's domain: its catalogue entry's, else the one its name implies (`domain_of`)."""
  name = canonical_name(name)
  return CATALOGUE[name].domain if name in CATALOGUE else domain_of(name)


def builtin_tasks() -> list[str]:
  """The names of the built-in tasks registered (gato_jax.sources.builtin), sorted."""
  return sorted(name for name, info in CATALOGUE.items() if info.builtin)


def available_builtin_tasks() -> dict[str, list[str]]:
  """domain -> built-in task names whose dataset exists on disk."""
  available: dict[str, list[str]] = {}
  for name in builtin_tasks():
    info = CATALOGUE[name]
    if info.has_data():
      available.setdefault(info.domain, []).append(name)
  return available


def builtin_data_dir() -> str:
  """The data directory the built-in tasks were registered with (expanded; default if none)."""
  data_dirs = [CATALOGUE[name].data_dir for name in builtin_tasks() if CATALOGUE[name].data_dir]
  return os.path.expanduser(data_dirs[0] if data_dirs else DEFAULT_DATA_DIR)


def missing_data_reason(name: str) -> str:
  """Why built-in task or domain `name` has no data, in words that point at the fix."""
  name = canonical_name(name)
  data_dir = builtin_data_dir()
  builtin = builtin_tasks()
  if not os.path.isdir(data_dir):
    return f"the data directory {data_dir} does not exist (config.data.data_dir)"
  if name in {CATALOGUE[task].domain for task in builtin}:
    return (
      f"domain {name!r} has no generated data in {data_dir}; generate it with"
      " tools/generate_data.py"
    )
  if name not in builtin:
    close = difflib.get_close_matches(name, builtin, n=1)
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
