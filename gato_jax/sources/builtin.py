"""The built-in tasks: every task of every domain, registered over the data generated here.

`register_builtin_tasks(data_dir)` adds a catalogue entry and a SeqIO Task for each task of the
environment domains (gato_jax.envs.registry) and of the example sets, reading the locally
generated TFDS datasets under `data_dir` (`tools/generate_data.py` makes them), then registers the
presets (gato_jax.data.presets) as seqio Mixtures over the tasks with data, for SeqIO users.
Nothing is registered on import; gato_jax.data.pipeline calls this for a run's config.

A built-in task's derived store is built straight from its episodes with the numpy tokenizer
(its `TaskInfo.reader`); its SeqIO Task gives the same examples through TensorFlow.
"""

import functools
import os
import sys

from absl import logging

from gato_jax.data import catalogue, presets, rlds_io, tasks
from gato_jax.data import stats as stats_lib
from gato_jax.envs import noise, registry
from gato_jax.sources import example_sets, generation

# The example tasks that train, and how their examples read.
EXAMPLE_KINDS = {
  "text/cpython_docs": "text",
  "vision_language/shapes_captions": "captioning",
  "vision_language/shapes_vqa": "vqa",
}


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


def env_specs(task: str) -> tuple:
  """`_specs_of`, or an ImportError naming the task whose environment's packages are missing.

  Looked up when a task is first read: at registration it would build every environment of
  every domain, which is slow and, for JAX-native environments, starts the XLA backend before a
  multi-host job could call jax.distributed.initialize().
  """
  specs = _specs_of(task)
  if specs is None:
    raise ImportError(f"task {task}: the packages of environment {task!r} are not installed")
  return specs


def _builtin_tokenize_preprocessor(dataset, task: str):
  """tokenize_preprocessor with the specs of a built-in environment (its SeqIO Task's)."""
  return tasks.tokenize_preprocessor(dataset, *env_specs(task), task=task)


def _read_control(
  split: str, limit: int | None = None, *, task: str, source: str, data_dir: str, filter_fraction
):
  observation_spec, action_spec = env_specs(task)
  return tasks.read_episode_groups(
    source,
    split,
    observation_spec,
    action_spec,
    task,
    data_dir,
    stats_task=task,
    filter_fraction=filter_fraction,
    limit=limit,
  )


def register_builtin_tasks(
  data_dir: str = catalogue.DEFAULT_DATA_DIR,
  policy: str = "expert",
  seqio_tasks: bool = True,
  action_noise: str = "",
) -> list[str]:
  """Registers "<domain>/<task>" for every task of every registered domain, reading the
  datasets under `data_dir`, then the presets as seqio Mixtures over the tasks with data.

  `policy` picks whose generated episodes the control tasks read: "expert" (filtered at 80% of
  the expert's margin over random) or "random" (unfiltered; for tests and benchmarks).
  `action_noise` ("dm_control=0.3,...", per task or domain; config.data.action_noise) makes a
  named control task read the expert's demonstrations executed with that noise
  (gato_jax.envs.noise), generated into a dataset of their own, filtered the same way.
  `seqio_tasks=False` adds only the catalogue entries, whose stores are built without SeqIO:
  importing TensorFlow and SeqIO costs a process about 10 CPU-seconds, which a run that names
  no SeqIO code (no `data.imports`) and finds its stores built need not pay. Once seqio is
  imported the SeqIO Tasks are registered anyway.
  """
  if action_noise.strip() and policy != "expert":
    raise ValueError(
      f"action noise {action_noise!r} names noisy expert demonstrations; policy {policy!r}"
      " episodes have none (set one or the other)"
    )
  seqio_tasks = seqio_tasks or "seqio" in sys.modules
  expanded = os.path.expanduser(data_dir)
  for name in catalogue.builtin_tasks():  # Those of an earlier data directory or policy.
    del catalogue.CATALOGUE[name]
  fraction = stats_lib.DEFAULT_FILTER_FRACTION if policy == "expert" else None
  names = []
  for domain in registry.domains():
    try:
      domain_tasks = registry.list_tasks(domain)
    except ImportError as e:  # An optional domain whose packages are not installed.
      logging.info("SeqIO tasks of domain %s not registered: %s", domain, e)
      continue
    for task in domain_tasks:
      scale = noise.scale_for(task, action_noise)
      source = rlds_io.dataset_dir(
        expanded, generation.dataset_name(domain, policy, scale), rlds_io.config_name(task)
      )
      names.append(task)
      tasks.add_control_task(
        task,
        source,
        functools.partial(_builtin_tokenize_preprocessor, task=task),
        data_dir,
        None,
        task,
        fraction,
        ("train",),
        domain,
        builtin=True,
        reader=functools.partial(
          _read_control, task=task, source=source, data_dir=data_dir, filter_fraction=fraction
        ),
        seqio_task=seqio_tasks,
      )
  for domain in example_sets.domains():
    for task in example_sets.list_tasks(domain):
      kind = EXAMPLE_KINDS.get(task)
      if kind is None:
        continue
      source = rlds_io.dataset_dir(
        expanded, example_sets.make_task(task).dataset, rlds_io.config_name(task)
      )
      names.append(task)
      tasks.register_example_task(
        task,
        kind,
        source,
        domain=domain,
        builtin=True,
        reader=functools.partial(_read_examples, kind=kind, source=source),
        seqio_task=seqio_tasks,
      )
  if seqio_tasks:
    presets.register_mixtures(catalogue.available_builtin_tasks())
  return names


def _read_examples(split: str, limit: int | None = None, *, kind: str, source: str):
  return tasks.read_example_groups(kind, source, split, limit=limit)
