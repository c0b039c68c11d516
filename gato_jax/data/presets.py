"""Mixtures: the built-in presets (plain data) and `name=weight` strings.

A mixture spec (`data.mixture`) is a preset name, the name of a `seqio.Mixture` or task that user
code registered, or a comma-separated list of `name=weight`, where a name is a task
("babyai/GoToRedBall", or its SeqIO name; or one that user code registered, through
gato_jax.data.tasks or as a plain `seqio.Task`) or a whole domain ("babyai", whose weight is split
evenly over its tasks that have data). Resolved mixtures name tasks by their one name
(`catalogue.task_info(...).name`).

The presets below ("quickstart", "control", "generalist", and "paper", Table 1 over our
domains) are plain data: `resolve` expands a preset's name from `PRESETS` directly. For SeqIO
users, `register_mixtures` also registers each as a `seqio.Mixture` over the tasks with data
(gato_jax.sources.builtin calls it), which this module never reads back. User code registers its
own mixtures the SeqIO way, in a module named by `data.imports` (imported after the built-in
tasks):

  seqio.MixtureRegistry.add(
      "my_mix", [(catalogue.seqio_name("babyai/GoToRedBall"), 2), ("my_robot.pick", 1)])

`resolve` turns a spec into {task: probability}, naming whatever it had to leave out.
"""

import sys
from typing import Mapping

from absl import logging

from gato_jax.data import catalogue, mixture

# Table 1 of the paper (docs/design.md, Data mixture), sampling weight in percent per family.
PAPER_TABLE1 = {
  "DM Lab": 9.35,
  "ALE Atari": 9.5,
  "ALE Atari Extended": 10.0,
  "Sokoban": 1.33,
  "BabyAI": 9.06,
  "DM Control": 4.62,
  "DM Control Pixels": 7.07,
  "DM Control Random Small": 3.04,
  "DM Control Random Large": 3.04,
  "Meta-World": 8.96,
  "Procgen": 5.34,
  "RGB Stacking sim": 1.33,
  "RGB Stacking real": 1.33,
  "Modular RL": 8.23,
  "DM Manipulation Playground": 1.68,
  "Playroom": 1.33,
  "MassiveText": 6.7,
  "M3W": 4.0,
  "ALIGN": 0.67,
  "MS-COCO Captions": 0.67,
  "Conceptual Captions": 0.67,
  "LTIP": 0.67,
  "OKVQA": 0.67,
  "VQAv2": 0.67,
}
# Our domain standing in for each paper family we can generate here; the families we cannot
# serve, and why, are listed in docs/data.md.
PAPER_TO_DOMAIN = {
  "BabyAI": "babyai",
  "DM Control": "dm_control",
  "DM Control Pixels": "dm_control_pixels",
  "Meta-World": "metaworld",
  "ALE Atari": "atari",
  "MassiveText": "text",
  "MS-COCO Captions": "vision_language",
  "VQAv2": "vision_language",
}

PRESETS = {
  # The CPU quickstart: control tasks whose experts train in seconds and whose imitation
  # reaches most of the expert's score within minutes on two cores.
  "quickstart": "gymnax/CartPole-v1=0.55,gymnax/Acrobot-v1=0.45",
  "control": "babyai=1,dm_control=1,gymnax=1",
  # One set of weights over four control domains (14 tasks) plus text and captions: the CPU
  # generalist (experiments/generalist.py). Every task weighs the same, so a domain weighs as many
  # tasks as it has. The order is the order in which its data is prepared. MinAtar is left out:
  # its four PPO experts take 10M steps each (hours apiece on two cores) and, in the 18-task run,
  # the six-hour budget left them under-fitted (docs/generalist.md); `control` and any user
  # mixture can still name them.
  "generalist": ",".join(
    f"{task}=1"
    for task in (
      "gymnax/CartPole-v1",
      "gymnax/Acrobot-v1",
      "gymnax/MountainCar-v0",
      "gymnax/Pendulum-v1",
      "babyai/GoToRedBall",
      "babyai/GoToLocal",
      "babyai/PickupLoc",
      "dm_control/cartpole-balance",
      "dm_control/cartpole-swingup",
      "dm_control/point_mass-easy",
      "dm_control/reacher-easy",
      "dm_control/walker-stand",
      "dm_control_pixels/cartpole-balance",
      "dm_control_pixels/walker-stand",
      "text/cpython_docs",
      "vision_language/shapes_captions",
    )
  ),
}


def preset_tasks(name: str) -> list[str]:
  """The tasks a preset names one by one (its domains left out), in order."""
  return [task for task in parse(name) if "/" in task]


def paper_weights() -> dict[str, float]:
  """Table 1 over our domains: families we stand in for keep their weight (summed per domain)."""
  weights: dict[str, float] = {}
  for family, weight in PAPER_TABLE1.items():
    domain = PAPER_TO_DOMAIN.get(family)
    if domain:
      weights[domain] = weights.get(domain, 0.0) + weight
  return weights


def register_mixtures(available: Mapping[str, list[str]]) -> list[str]:
  """Registers (or replaces) a seqio.Mixture per preset over `available` tasks; returns names.

  A preset none of whose tasks has data is not registered (resolving it names the problem).
  """
  import seqio

  names = []
  for name in ("paper", *PRESETS):
    try:
      weights = expand(parse(name), available, quiet=True)
    except ValueError:
      weights = {}
    if name in seqio.MixtureRegistry.names():
      seqio.MixtureRegistry.remove(name)
    if weights:
      seqio.MixtureRegistry.add(
        name, [(catalogue.seqio_name(t), w) for t, w in sorted(weights.items())]
      )
      names.append(name)
  return names


def is_preset(spec: str) -> bool:
  return spec.strip() == "paper" or spec.strip() in PRESETS


def seqio_weights(name: str) -> dict[str, float] | None:
  """{task: rate} of a registered seqio Mixture or task (rate 1), or None if not registered.

  Tasks are named by their catalogue names where they have one.
  """
  if "=" in name or "," in name:
    return None
  seqio = sys.modules.get("seqio")  # Nothing can be registered with SeqIO before its import.
  if seqio is None:
    name = catalogue.canonical_name(name)
    return {name: 1.0} if name in catalogue.CATALOGUE else None
  if name in seqio.MixtureRegistry.names():
    mix = seqio.MixtureRegistry.get(name)
    return {catalogue.canonical_name(task.name): float(mix.get_rate(task)) for task in mix.tasks}
  if name in catalogue.CATALOGUE or name in seqio.TaskRegistry.names():
    return {catalogue.canonical_name(name): 1.0}
  return None


def parse(spec: str) -> dict[str, float]:
  """ "paper" / a preset / "a=1,b=2" -> {name: weight}."""
  spec = spec.strip()
  if spec == "paper":
    return paper_weights()
  if spec in PRESETS:
    spec = PRESETS[spec]
  weights = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, sep, weight = part.partition("=")
    if not sep:
      raise ValueError(
        f"mixture entry {part!r} must be name=weight; presets: paper, {', '.join(sorted(PRESETS))}"
      )
    try:
      weights[name.strip()] = float(weight)
    except ValueError:
      raise ValueError(f"mixture entry {part!r}: weight {weight!r} is not a number") from None
  if not weights:
    raise ValueError(f"empty mixture spec {spec!r}")
  return weights


def resolve(spec: str, available: Mapping[str, list[str]]) -> dict[str, float]:
  """A spec over available data: {task name: probability}.

  Args:
    spec: a preset, a seqio Mixture or Task name that user code registered, or see `parse`.
    available: domain -> built-in task names whose data exists.

  Raises:
    ValueError: if a named task has no data, or nothing named has any.
  """
  # A preset is read from PRESETS, never from the seqio.Mixture registered for it.
  registered = None if is_preset(spec) else seqio_weights(spec.strip())
  if registered is not None:
    logging.info("mixture %r: a registered SeqIO mixture or task", spec)
    for name in registered:
      # Refuses, at start, a SeqIO task whose features we cannot train on.
      catalogue.task_info(name)
    return mixture.normalize_weights(registered)
  return mixture.normalize_weights(expand(parse(spec), available))


def expand(
  named: Mapping[str, float], available: Mapping[str, list[str]], quiet: bool = False
) -> dict[str, float]:
  """{task or domain: weight} -> {task: weight} over tasks with data (see `resolve`); tasks that
  user code registered (through gato_jax.data.tasks or the plain SeqIO way) count as having data."""
  all_tasks = {task for domain_tasks in available.values() for task in domain_tasks}
  weights, missing = {}, []
  for name, weight in named.items():
    name = catalogue.canonical_name(name)
    if name in available and available[name]:
      for task in available[name]:
        weights[task] = weights.get(task, 0.0) + weight / len(available[name])
    elif name in all_tasks:
      weights[name] = weights.get(name, 0.0) + weight
    elif (info := catalogue.user_task_info(name)) is not None:
      weights[info.name] = weights.get(info.name, 0.0) + weight
    elif "/" in name or "." in name:
      raise ValueError(f"mixture task {name!r}: {catalogue.missing_data_reason(name)}")
    else:
      missing.append(name)
  if missing and not quiet:
    logging.warning(
      "mixture domains without data (their weight is renormalised over the rest): %s", missing
    )
  if not weights:
    reason = catalogue.missing_data_reason(missing[0]) if missing else "no data"
    spec = ",".join(f"{name}={weight:g}" for name, weight in named.items())
    raise ValueError(
      f"mixture {spec!r} names no task with data ({reason}); tasks with data: {sorted(all_tasks)}"
    )
  return weights
