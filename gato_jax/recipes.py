"""Recipes end to end: the experts and data a run needs, and its training.

The launchers (experiments/quickstart.py, experiments/generalist.py, the sweep) take their
configs from gato_jax.configs and share these steps:

1. `expert_recipe` / `ensure_expert`: a control task's expert recipe
   (gato_jax/configs/experts/<domain>.py) and its training, unless the expert is cached.
   gymnax tasks train PPO experts, DM Control tasks SAC experts (DM Control from pixels reuses
   the state task's); the other domains' experts are scripted (BabyAI's bot, Meta-World's).
2. `prepare_data`: the experts, then the episodes (or text and vision-language examples) of each
   task, generated resumably under the data directory.
3. `train`: training that resumes, setting aside a run whose data changed since it began (a
   retrained expert); `alone_config`: the same recipe on one task of a mixture, for the rows the
   mixture gave it (the single-task baseline a generalist is compared with).
"""

import copy
import functools
import importlib
import os
from typing import Mapping, Sequence

from gato_jax.envs import noise, registry

_say = functools.partial(print, flush=True)  # Console lines for people, shown as they happen.


def trains_expert(task: str) -> bool:
  """Whether `task`'s ("<domain>/<task>") expert is trained here (rather than scripted)."""
  return registry.trained_expert(task) is not None


def expert_recipe(task: str):
  """The expert recipe ConfigDict of "<domain>/<task>" (gymnax PPO or DM Control SAC).

  Raises:
    ValueError: for a task whose domain's experts are not trained here, or without a recipe.
  """
  trained = registry.trained_expert(task)
  if trained is None:
    raise ValueError(
      f"{task!r}: domain {registry.domain_of(task)!r} has no trained experts (recipes exist for"
      f" {', '.join(registry.trained_expert_domains())})"
    )
  recipes = importlib.import_module(f"gato_jax.configs.experts.{trained[1]}")
  return recipes.get_config(task.partition("/")[2])


def ensure_expert(task: str, workdir: str | None = None) -> dict | None:
  """Trains `task`'s expert unless it is cached (resuming a killed training); its summary.

  None for tasks whose expert needs no training (BabyAI's bot, Meta-World's scripts).
  """
  if not trains_expert(task):
    return None
  config = expert_recipe(task)
  experts = importlib.import_module(registry.trained_expert(task)[0])
  return experts.train_expert(config, workdir) if workdir else experts.train_expert(config)


# An expert below this share of its reference's margin over the random policy is reported as
# weak: its episodes would teach the generalist little more than random play.
WEAK_EXPERT_SHARE = 0.5


def expert_share(summary: dict) -> float:
  """(expert - random) / (reference - random) of an expert's summary: 1 at the reference."""
  margin = summary["reference_return"] - summary["random_return"]
  if margin <= 0:
    raise ValueError(
      f"reference {summary['reference_return']} is not above random {summary['random_return']}"
    )
  return (summary["expert_return"] - summary["random_return"]) / margin


def expert_line(task: str, summary: dict) -> str:
  """The data stage's console line for an expert, with a warning when it is weak."""
  share = expert_share(summary)
  line = (
    f"{task} expert: return {summary['expert_return']:.1f} (random {summary['random_return']:.1f},"
    f" reference {summary['reference_return']:.1f}: {share:.0%} of the way)"
  )
  if share < WEAK_EXPERT_SHARE:
    line += (
      f"\nWARNING: {task}'s expert is below {WEAK_EXPERT_SHARE:.0%} of the way from random to its"
      " reference, so its data teaches little; give its recipe (gato_jax/configs/experts/)"
      " more seeds (num_seeds) and a target_return, and run the data stage again (a retrained"
      " expert's data is made again)"
    )
  return line


def prepare_data(
  tasks: Sequence[str],
  data_dir: str,
  episodes: int | Mapping[str, int],
  scenes: int = 2000,
  print_fn=_say,
  action_noise: str = "",
  **generate_kwargs,
) -> list:
  """Each task's expert, then its data: `episodes` episodes of a control task (or
  `episodes[task]`), the examples of a text or vision-language task (`scenes` training scenes
  for vision-language). Resumable. `action_noise` (config.data.action_noise's form) names the
  control tasks whose expert acts with noise (`envs.noise`), and how much.

  Returns:
    The control tasks' generation summaries (generation.TaskSummary), in order.
  """
  from gato_jax.sources import example_sets, generation

  data_dir = os.path.expanduser(data_dir)
  rows = []
  for task in tasks:
    if registry.is_example_task(task):
      example_sets.generate_task(task, data_dir, scenes)
      continue
    summary = ensure_expert(task)
    if summary is not None:
      generation.end_progress()
      print_fn(expert_line(task, summary))
    count = episodes if isinstance(episodes, int) else episodes[task]
    scale = noise.scale_for(task, action_noise)
    rows.append(
      generation.generate_task(task, data_dir, count, action_noise=scale, **generate_kwargs)
    )
  if rows:
    generation.end_progress()
    print_fn(generation.format_table(rows))
  return rows


def alone_config(config, task: str, share: float):
  """`config` on `task` alone, for the rows a mixture gave it: `share` (its rate) of every batch.

  The baseline a generalist's text or caption score is set against: the same model, batch and
  peak learning rate, trained on that task only for the same number of its sequences (so the same
  tokens), with the warm-up scaled by `share` and the cosine decay ending at its last step.
  """
  if not 0 < share <= 1:
    raise ValueError(f"share of {task!r} must be in (0, 1], got {share}")
  alone = copy.deepcopy(config)
  steps = max(2, round(config.train.steps * share))  # Warm-up needs a step before the decay.
  alone.data.mixture = f"{task}=1"
  alone.eval.tasks = task
  alone.eval.every_steps = 0
  alone.train.steps = steps
  alone.train.stop_at_step = 0
  alone.optimizer.warmup_steps = min(
    steps - 1, max(1, round(config.optimizer.warmup_steps * share))
  )
  alone.optimizer.decay_steps = steps
  alone.checkpoint.every_steps = steps
  return alone


def train(config, workdir: str, print_fn=_say) -> None:
  """Trains, resuming from workdir's newest checkpoint; a run whose data changed since it began
  (a retrained expert regenerated its episodes) is set aside and trained anew."""
  from gato_jax import train as train_lib
  from gato_jax.data import mixture

  try:
    train_lib.train_and_evaluate(config, workdir)
  except mixture.DataChangedError as e:
    print_fn(f"{e}\nmoved the earlier run to {train_lib.set_aside(workdir)}; training anew")
    train_lib.train_and_evaluate(config, workdir)
