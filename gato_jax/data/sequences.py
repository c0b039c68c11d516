"""Tokenized data to training sequences: episode windows with prompts, text, image-text pairs.

docs/design.md, Training: a control sequence is a random window of an episode that fits the
context, cut at timestep boundaries; 25% of them get a prompt from another episode of the same
task, half taken from the end of that episode and half from a uniformly chosen point. Text rows
pack documents; vision-language sequences concatenate 5 (image, text) pairs. Everything here
is numpy over `TokenGroup`s and takes an explicit `numpy.random.Generator`, so a seeded pipeline
produces the same sequences on every run.

An episode, document or example is either a `TokenGroup` in memory or a lazily read item of the
derived store (`store.StoredEpisode`, which knows its tokens per timestep and reads a window of
timesteps on demand); both give the same sequences for the same draws.
"""

import dataclasses

import numpy as np

from gato_jax.tokenizer.constants import TokenKind
from gato_jax.tokenizer.timestep import TokenGroup, concat_token_groups


class WindowError(ValueError):
  """An episode has a timestep that no window of the context can hold."""


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  probability: float = 0.25  # Fraction of sequences that get a prompt.
  end_fraction: float = 0.5  # Of prompts: the share taken from the end of the prompt episode.
  max_tokens: int = 256  # Prompt budget (at most half the context); the window gets the rest.
  loss: bool = False  # Whether the prompt's text/action tokens are also training targets.

  def __post_init__(self):
    if not 0 <= self.probability <= 1 or not 0 <= self.end_fraction <= 1:
      raise ValueError("prompt probability and end_fraction must lie in [0, 1]")
    if self.max_tokens < 1:
      raise ValueError(f"prompt max_tokens must be positive, got {self.max_tokens}")


def timestep_offsets(group: TokenGroup) -> np.ndarray:
  """int64 [num_timesteps + 1]: token offset where each timestep starts, then the total length."""
  timesteps = np.asarray(group.timesteps)
  if timesteps.size and np.any(np.diff(timesteps) < 0):
    raise ValueError("token group timesteps must be non-decreasing")
  num = int(timesteps.max()) + 1 if timesteps.size else 0
  counts = np.bincount(timesteps, minlength=num)
  return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def step_offsets(episode) -> np.ndarray:
  """`timestep_offsets` of an in-memory TokenGroup or a stored episode (from its index)."""
  if isinstance(episode, TokenGroup):
    return timestep_offsets(episode)
  return np.concatenate([[0], np.cumsum(episode.step_tokens)]).astype(np.int64)


def read_timesteps(episode, start: int, stop: int) -> TokenGroup:
  """Timesteps [start, stop) of an in-memory TokenGroup or a stored episode, renumbered from 0."""
  if isinstance(episode, TokenGroup):
    return slice_timesteps(episode, start, stop)
  return episode.read(start, stop)


def as_group(episode) -> TokenGroup:
  """The whole of an in-memory TokenGroup or a stored episode, as a TokenGroup."""
  return episode if isinstance(episode, TokenGroup) else episode.read()


def slice_timesteps(group: TokenGroup, start: int, stop: int) -> TokenGroup:
  """Timesteps [start, stop) of an unbatched group, renumbered from 0, with their patches."""
  offsets = timestep_offsets(group)
  lo, hi = int(offsets[start]), int(offsets[stop])
  patch_counts = np.cumsum(np.concatenate([[0], np.asarray(group.kinds) == TokenKind.IMAGE_PATCH]))
  p_lo, p_hi = int(patch_counts[lo]), int(patch_counts[hi])
  take = lambda a: np.asarray(a)[lo:hi]
  return TokenGroup(
    tokens=take(group.tokens),
    kinds=take(group.kinds),
    local_positions=take(group.local_positions),
    loss_mask=take(group.loss_mask),
    timesteps=take(group.timesteps) - start,
    patches=np.asarray(group.patches)[p_lo:p_hi],
    patch_rows=np.asarray(group.patch_rows)[p_lo:p_hi],
    patch_cols=np.asarray(group.patch_cols)[p_lo:p_hi],
  )


def fitting_stop(offsets: np.ndarray, start: int, max_tokens: int) -> int:
  """The last timestep boundary reachable from `start` within `max_tokens` tokens."""
  return int(np.searchsorted(offsets, offsets[start] + max_tokens, side="right")) - 1


def check_windows_fit(offsets: np.ndarray, max_tokens: int, name: str = "episode") -> None:
  """Raises WindowError unless the episode of these `step_offsets` has a timestep and each of
  its timesteps fits in `max_tokens`."""
  lengths = np.diff(offsets)
  if lengths.size == 0:
    raise WindowError(f"{name} has no timesteps")
  if lengths.max() > max_tokens:
    raise WindowError(
      f"{name} has a timestep of {int(lengths.max())} tokens; a window holds only {max_tokens}."
      " Raise the context length or shrink the observation (fewer image patches)."
    )


def window_bounds(
  group, max_tokens: int, rng: np.random.Generator, anchor: str = "uniform", name: str = "episode"
) -> tuple[int, int]:
  """Chooses timesteps [start, stop) holding at most `max_tokens` tokens.

  Args:
    anchor: "uniform" draws the start uniformly among starts whose window is as full as it can
      be (later starts would only give shorter windows); "end" takes the window ending at the
      episode's last timestep; "start" the window starting at its first.
    name: for the error message (e.g. the task).

  Raises:
    WindowError: if a single timestep is longer than `max_tokens`.
  """
  offsets = step_offsets(group)
  check_windows_fit(offsets, max_tokens, name)
  num_steps = len(offsets) - 1
  if anchor == "end":
    start = int(np.searchsorted(offsets, offsets[-1] - max_tokens, side="left"))
    return start, num_steps
  if anchor == "start":
    return 0, fitting_stop(offsets, 0, max_tokens)
  if anchor != "uniform":
    raise ValueError(f"anchor must be 'uniform', 'end' or 'start', got {anchor!r}")
  # The latest start whose window still reaches the episode's end: starts after it hold fewer
  # tokens, so they are not drawn.
  last_start = int(np.searchsorted(offsets, offsets[-1] - max_tokens, side="left"))
  start = int(rng.integers(0, last_start + 1))
  return start, fitting_stop(offsets, start, max_tokens)


def random_window(
  group, max_tokens: int, rng: np.random.Generator, name: str = "episode"
) -> TokenGroup:
  start, stop = window_bounds(group, max_tokens, rng, "uniform", name)
  return read_timesteps(group, start, stop)


def prompt_from(
  group, config: PromptConfig, rng: np.random.Generator, name: str = "episode"
) -> TokenGroup:
  """A prompt: whole timesteps of at most `config.max_tokens`, from the end or a uniform point."""
  anchor = "end" if rng.random() < config.end_fraction else "uniform"
  start, stop = window_bounds(group, config.max_tokens, rng, anchor, name)
  prompt = read_timesteps(group, start, stop)
  if not config.loss:
    prompt = prompt.replace(loss_mask=np.zeros_like(prompt.loss_mask))
  return prompt


def make_sequence(
  episode,
  context: int,
  rng: np.random.Generator,
  prompt_episode=None,
  prompt_config: PromptConfig | None = None,
  name: str = "episode",
) -> TokenGroup:
  """One training sequence: [prompt] + a random window, together at most `context` tokens.

  `prompt_episode` (another episode of the same task and source agent) is used with probability
  `prompt_config.probability`; the draw happens whether or not one is given, so the random stream
  does not depend on data availability.
  """
  prompt_config = prompt_config or PromptConfig(probability=0.0)
  use_prompt = rng.random() < prompt_config.probability
  if use_prompt and prompt_episode is not None:
    # At most half the context, so the window always keeps room for whole timesteps.
    budget = min(prompt_config.max_tokens, context // 2)
    prompt = prompt_from(
      prompt_episode, dataclasses.replace(prompt_config, max_tokens=budget), rng, name
    )
    window = random_window(episode, context - prompt.num_tokens, rng, name)
    return concat_token_groups([prompt, window])
  return random_window(episode, context, rng, name)


def token_slice(group: TokenGroup, start: int, stop: int) -> TokenGroup:
  """Tokens [start, stop) of a group without images (a text document)."""
  if group.patches.shape[0]:
    raise ValueError("token_slice cuts text only; image sequences are cut at timestep boundaries")
  take = lambda a: np.asarray(a)[start:stop]
  return group.replace(
    tokens=take(group.tokens),
    kinds=take(group.kinds),
    local_positions=take(group.local_positions),
    loss_mask=take(group.loss_mask),
    timesteps=take(group.timesteps),
  )


def text_row(
  documents, context: int, rng: np.random.Generator, name: str = "text"
) -> list[TokenGroup]:
  """Documents packed into one row: random documents until `context` tokens are filled.

  Each document is its own segment (attention stays inside it); one longer than the room left
  contributes a random window of exactly that many tokens.
  """
  row, used = [], 0
  while used < context:
    document = documents[int(rng.integers(len(documents)))]
    if document.num_tokens == 0:
      raise ValueError(f"{name} contains an empty document")
    room = context - used
    if document.num_tokens > room:
      start = int(rng.integers(document.num_tokens - room + 1))
      document = token_slice(as_group(document), start, start + room)
    row.append(as_group(document))
    used += document.num_tokens
  return row


# (image, text) examples per vision-language sequence (docs/design.md, Training).
VISION_LANGUAGE_PAIRS = 5


def vision_language_sequence(
  examples,
  context: int,
  rng: np.random.Generator,
  pairs: int = VISION_LANGUAGE_PAIRS,
  max_patches: int | None = None,
  name: str = "vision_language",
) -> TokenGroup:
  """`pairs` random (image, text) examples concatenated, cropped to whole examples that fit
  `context` tokens and `max_patches` patches.

  docs/design.md, Training: vision-language sequences are 5 (image, text) pairs, padded or cropped.
  """
  chosen = [as_group(examples[int(i)]) for i in rng.integers(len(examples), size=pairs)]
  sequence = concat_token_groups(chosen)
  stop = fitting_stop(timestep_offsets(sequence), 0, context)
  if max_patches is not None:
    patch_offsets = np.concatenate([[0], np.cumsum([g.patches.shape[0] for g in chosen])])
    stop = min(stop, int(np.searchsorted(patch_offsets, max_patches, side="right")) - 1)
  if stop == 0:
    raise WindowError(
      f"{name} has an example of {chosen[0].num_tokens} tokens; a sequence holds only {context}"
    )
  return slice_timesteps(sequence, 0, stop)
