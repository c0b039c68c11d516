"""Prompts for evaluation: whole timesteps from the start or the end of a successful demonstration.

Gato is evaluated on control tasks with a prompt, a demonstration of the same task
(docs/design.md, Evaluation). A demonstration here is a stored expert episode of the task whose
return passes the data filter (at least 80% of the expert's margin over random,
`episodes.return_threshold`). The prompt is its first timesteps that fit the token budget (the
paper's default, with 1024 tokens), or its last: the end of a demonstration shows the goal being
reached, which is what a goal-conditioned task needs to see, and it is the half of the training
prompts drawn from episode ends.
"""

import os

import numpy as np

from gato_jax.data import sequences
from gato_jax.tokenizer.timestep import TokenGroup


def load_demonstrations(
  task: str,
  data_dir: str,
  max_episodes: int = 20,
  derived_dir: str = "",
  limit: int | None = None,
  action_noise: str = "",
) -> list[TokenGroup]:
  """Tokenized stored episodes of `task` that pass the filter (at most `max_episodes`).

  They are the first episodes of the built-in task's derived store, the one training read
  (built on first use; `derived_dir` as data.derived_dir, `limit` as `pipeline.episode_limit`,
  `action_noise` as data.action_noise: a task trained on noisy demonstrations is prompted with
  those of them that pass the filter, as its training prompts were).

  Raises:
    FileNotFoundError: if the task has no generated expert data.
  """
  from gato_jax.data import catalogue, pipeline

  pipeline.register_run_tasks(os.path.expanduser(data_dir), action_noise=action_noise)
  source = catalogue.task_info(task).source
  if not os.path.isfile(os.path.join(source, "dataset_info.json")):
    raise FileNotFoundError(
      f"no expert episodes of {task!r} to prompt with at {source}; generate them with"
      f" tools/generate_data.py --tasks=... --data_dir={data_dir}, or set eval.prompt_tokens=0"
      " for unprompted evaluation"
    )
  try:
    stored = pipeline.open_store(task, pipeline.store_root(data_dir, derived_dir), limit=limit)
  except ValueError as e:
    raise ValueError(
      f"no stored episode of {task!r} reaches the filter's return; there is no"
      f" successful demonstration to prompt with ({e})"
    ) from None
  return [stored.read(item, pixels=False) for item in range(min(max_episodes, len(stored)))]


# Where a prompt is cut from its demonstration (eval.prompt_from).
PROMPT_FROM = ("start", "end")


class PromptSampler:
  """`(episode seed) -> prompt`: a demonstration chosen by the seed, cut to `max_tokens`.

  Args:
    demonstrations: tokenized successful episodes of the task.
    max_tokens: the prompt budget in tokens; 0 gives no prompt.
    task: for error messages.
    prompt_from: "start" takes the demonstration's first whole timesteps that fit the budget,
      "end" its last.
  """

  def __init__(
    self,
    demonstrations: list[TokenGroup],
    max_tokens: int,
    task: str = "task",
    prompt_from: str = "end",
  ):
    if prompt_from not in PROMPT_FROM:
      raise ValueError(f"unknown eval.prompt_from {prompt_from!r}; choose from {PROMPT_FROM}")
    if max_tokens < 0:
      raise ValueError(f"prompt max_tokens must be >= 0, got {max_tokens}")
    if max_tokens and not demonstrations:
      raise ValueError(f"{task}: a prompt budget of {max_tokens} tokens needs demonstrations")
    self.demonstrations = demonstrations
    self.max_tokens = max_tokens
    self.task = task
    self.prompt_from = prompt_from

  def __call__(self, seed: int) -> TokenGroup | None:
    if not self.max_tokens:
      return None
    rng = np.random.default_rng(seed)
    demo = self.demonstrations[int(rng.integers(len(self.demonstrations)))]
    try:
      start, stop = sequences.window_bounds(
        demo, self.max_tokens, rng, anchor=self.prompt_from, name=f"{self.task} demonstration"
      )
    except sequences.WindowError as e:
      raise ValueError(
        f"prompt budget eval.prompt_tokens={self.max_tokens} holds no whole timestep: {e}"
      ) from None
    prompt = sequences.slice_timesteps(demo, start, stop)
    return prompt.replace(loss_mask=np.zeros_like(prompt.loss_mask))
