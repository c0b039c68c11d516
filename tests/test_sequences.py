"""Episode windows and prompts: timestep alignment, context limits, prompt sources, masks."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import sequences

SPEC = {"camera": T.ImageSpec(), "proprio": T.ContinuousSpec((3,))}
ACT = T.DiscreteSpec((), num_values=5)


def _episode(num_steps, seed=0, with_image=True):
  rng = np.random.default_rng(seed)
  spec = SPEC if with_image else {"proprio": SPEC["proprio"]}
  obs = {"proprio": rng.standard_normal((num_steps, 3)).astype(np.float32)}
  if with_image:
    obs["camera"] = rng.integers(0, 256, (num_steps, 16, 32, 3), dtype=np.uint8)
  act = np.arange(num_steps, dtype=np.int32) % 5
  return T.tokenize_episode(obs, act, spec, ACT)  # 2 patches + 3 + | + 1 = 7 tokens a step


def test_windows_are_whole_timesteps_within_context():
  episode = _episode(50)
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(300):
    window = sequences.random_window(episode, 40, rng)
    assert window.num_tokens == 35  # 5 whole timesteps of 7 tokens; a 6th would not fit.
    assert (
      window.tokens[0] == 0 and window.kinds[0] == T.TokenKind.IMAGE_PATCH
    )  # Starts a timestep.
    assert window.kinds[-1] == T.TokenKind.VALUE and window.loss_mask[-1]  # Ends with an action.
    np.testing.assert_array_equal(window.timesteps, np.repeat(np.arange(5), 7))
    assert window.patches.shape == (10, 768)
    starts.add(int(window.tokens[-1]) - 32000)
  assert starts == set(range(5))  # Windows start anywhere (action = step % 5).


def test_window_matches_the_source_tokens():
  episode = _episode(10)
  start, stop = sequences.window_bounds(episode, 21, np.random.default_rng(3))
  window = sequences.slice_timesteps(episode, start, stop)
  np.testing.assert_array_equal(window.tokens, episode.tokens[7 * start : 7 * stop])
  np.testing.assert_array_equal(window.patches, episode.patches[2 * start : 2 * stop])
  np.testing.assert_array_equal(window.patch_rows, episode.patch_rows[2 * start : 2 * stop])


def test_short_episode_is_taken_whole_and_late_starts_are_not_drawn():
  episode = _episode(3)
  window = sequences.random_window(episode, 1024, np.random.default_rng(0))
  assert window.num_tokens == episode.num_tokens
  rng = np.random.default_rng(1)
  # 10 steps in a 35-token window: starts 0..5 all give full windows; none start later.
  lengths = {sequences.random_window(_episode(10), 35, rng).num_tokens for _ in range(100)}
  assert lengths == {35}


def test_prompts_come_from_the_prompt_episode():
  episode, other = _episode(30, seed=0, with_image=False), _episode(30, seed=1, with_image=False)
  config = sequences.PromptConfig(probability=1.0, end_fraction=1.0, max_tokens=20)
  sequence = sequences.make_sequence(episode, 60, np.random.default_rng(0), other, config)
  # 5 tokens a step: the prompt is the last 4 timesteps of `other`, then an 8-step window.
  np.testing.assert_array_equal(sequence.tokens[:20], other.tokens[-20:])
  assert not sequence.loss_mask[:20].any()
  assert sequence.num_tokens == 60 and sequence.loss_mask[20:].sum() == 8
  np.testing.assert_array_equal(sequence.timesteps, np.repeat(np.arange(12), 5))


def test_prompt_rate_and_sources():
  episode, other = _episode(30, 0, False), _episode(30, 1, False)
  config = sequences.PromptConfig(probability=0.25, end_fraction=0.5, max_tokens=20)
  rng = np.random.default_rng(0)
  prompted, from_end = 0, 0
  n = 2000
  for _ in range(n):
    sequence = sequences.make_sequence(episode, 60, rng, other, config)
    if not sequence.loss_mask[:5].any():  # A window starts with an observation then an action.
      prompted += 1
      from_end += np.array_equal(sequence.tokens[:20], other.tokens[-20:])
  assert abs(prompted / n - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
  # Half from the end; a uniform start also lands on the end sometimes (1 in 27).
  assert abs(from_end / prompted - (0.5 + 0.5 / 27)) < 0.07


def test_determinism_and_errors():
  episode = _episode(40)
  draw = lambda seed: sequences.random_window(episode, 50, np.random.default_rng(seed)).tokens
  np.testing.assert_array_equal(draw(5), draw(5))
  with pytest.raises(sequences.WindowError, match="task x has a timestep of 7 tokens"):
    sequences.random_window(episode, 6, np.random.default_rng(0), name="task x")
  with pytest.raises(ValueError, match="probability"):
    sequences.PromptConfig(probability=2.0)
