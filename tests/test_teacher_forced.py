"""Teacher-forced action metrics: windows, previous-action bookkeeping, exact scores, the tool."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import sequences
from gato_jax.evaluation import teacher_forced as tf_lib
from gato_jax.model import ModelConfig, batch_from_token_groups, init_variables
from gato_jax.model.gato import Gato
from gato_jax.training.loss import masked_next_token_loss

from helpers.checkpoints import save_initial_state
from helpers.scripts import run_python

CFG = ModelConfig.from_size("tiny", max_decode_length=64)
OBS_SPEC = {"camera": T.ImageSpec(), "proprio": T.ContinuousSpec((3,))}
ACT_SPEC = {
  "button": T.DiscreteSpec((), num_values=4),
  "torque": T.ContinuousSpec((2,), mu_law=False),
}


def _episode(num_steps, buttons=None, seed=0):
  rng = np.random.default_rng(seed)
  obs = {
    "camera": rng.integers(0, 256, (num_steps, 16, 32, 3), dtype=np.uint8),
    "proprio": rng.standard_normal((num_steps, 3)).astype(np.float32),
  }
  act = {
    "button": (rng.integers(0, 4, num_steps) if buttons is None else np.asarray(buttons)).astype(
      np.int32
    ),
    "torque": rng.uniform(-1, 1, (num_steps, 2)).astype(np.float32),
  }
  return T.tokenize_episode(obs, act, OBS_SPEC, ACT_SPEC)


def test_windows_cover_the_episode_in_order_and_fit_the_context():
  episode = _episode(9)
  step_tokens = episode.num_tokens // 9  # 2 patches + 3 values + separator + 3 actions = 9.
  windows = tf_lib.episode_windows(episode, 4 * step_tokens + 3)
  assert [w.num_tokens for w in windows] == [4 * step_tokens] * 2 + [step_tokens]
  np.testing.assert_array_equal(np.concatenate([w.tokens for w in windows]), episode.tokens)
  np.testing.assert_array_equal(
    np.concatenate([w.patches for w in windows]), np.asarray(episode.patches)
  )
  assert all(int(w.timesteps[0]) == 0 for w in windows)
  with pytest.raises(sequences.WindowError, match="a window holds only 5"):
    tf_lib.episode_windows(episode, 5, name="fake task")


def test_previous_action_is_the_same_dimension_one_timestep_earlier():
  episode = _episode(3)
  positions, previous = tf_lib.previous_action_positions(episode)
  step_tokens = episode.num_tokens // 3
  first = positions[:3]  # Three action tokens per timestep: the button, then two torques.
  np.testing.assert_array_equal(
    positions, np.concatenate([first + k * step_tokens for k in range(3)])
  )
  np.testing.assert_array_equal(
    previous, np.concatenate([[tf_lib.NO_PREVIOUS] * 3, first, first + step_tokens])
  )


def test_summary_of_a_copier_and_of_a_follower():
  target = np.array([1, 1, 2, 2, 3])
  previous = np.array([tf_lib.NO_PREVIOUS, 1, 1, 2, 2])
  copier = tf_lib.ActionTargets(target, np.array([0, 1, 1, 2, 2]), np.zeros(5), previous)
  summary = tf_lib.summarize(copier)
  assert summary["action_tokens"] == 5
  assert summary["accuracy"] == pytest.approx(0.4)
  assert summary["target_repeat"] == pytest.approx(0.5)  # Of the 4 with a previous action.
  assert summary["prediction_repeat"] == 1.0
  assert summary["changes"] == 2
  assert summary["accuracy_on_changes"] == 0.0
  follower = tf_lib.summarize(tf_lib.ActionTargets(target, target, np.ones(5), previous))
  assert follower["accuracy"] == 1.0 and follower["accuracy_on_changes"] == 1.0
  assert follower["prediction_repeat"] == pytest.approx(0.5) and follower["nll"] == 1.0
  lone = tf_lib.summarize(tf_lib.ActionTargets(*(np.zeros(1, int) for _ in range(3)), previous[:1]))
  assert lone["target_repeat"] is None and lone["accuracy_on_changes"] is None


def test_scores_are_the_training_loss_at_each_action_token():
  params = nn.unbox(jax.jit(lambda r: init_variables(CFG, r))(jax.random.key(1)))["params"]
  windows = tf_lib.episode_windows(_episode(7, buttons=[0, 0, 1, 1, 1, 2, 3]), 27)
  assert [w.num_tokens for w in windows] == [27, 27, 9]  # 3 + 3 + 1 timesteps.
  scored = tf_lib.action_targets(CFG, params, windows, seq_len=27, batch_size=2)
  assert scored.target.size == 7 * 3
  # The loss of these rows is over exactly their action tokens, so its sum is the NLLs' sum.
  batch = batch_from_token_groups(windows, 27, 6, CFG.patch_dim)
  logits = Gato(CFG).apply({"params": params}, batch)
  _, metrics = masked_next_token_loss(logits, batch)
  np.testing.assert_allclose(np.sum(scored.nll), np.sum(metrics["row_loss_sum"]), rtol=1e-5)
  predictions = [
    np.argmax(logits[r, p - 1])
    for r, w in enumerate(windows)
    for p in np.flatnonzero(w.action_mask)
  ]
  np.testing.assert_array_equal(scored.prediction, predictions)
  # Buttons repeat where the episode repeats them; a window's first timestep has no previous.
  t, none = scored.target[::3], tf_lib.NO_PREVIOUS
  np.testing.assert_array_equal(
    scored.previous_target[::3], [none, t[0], t[1], none, t[3], t[4], none]
  )
  assert t[0] == t[1] != t[2]  # The buttons' tokens: 0, 0, 1 | 1, 1, 2 | 3.
  summary = tf_lib.summarize(scored)
  assert summary["action_tokens"] == 21 and 0 <= summary["accuracy"] <= 1


def test_the_tool_scores_stored_episodes_of_a_checkpoint(tmp_path):
  from gato_jax.sources import generation
  from gato_jax.configs import gato
  from gato_jax.data import pipeline
  from gato_jax.sources import builtin

  task = "babyai/GoToRedBall"
  generation.generate_task(
    task, str(tmp_path), 2, seed=1, stats_episodes=2, progress=lambda _: None
  )
  config = gato.get_config("tiny")
  # Windows of three BabyAI timesteps (~150 tokens each), so a window has repeats to count: the
  # forward pass runs on half the default context.
  config.train.seq_len = 512
  save_initial_state(config, tmp_path / "run", 5)
  out = tmp_path / "fidelity.json"
  tool = (
    "tools/action_fidelity.py",
    "--config=experiments/configs/gato.py:tiny",
    f"--config.train.seq_len={config.train.seq_len}",
  )
  run = run_python(
    *tool,
    f"--config.data.data_dir={tmp_path}",
    f"--workdir={tmp_path / 'run'}",
    f"--tasks={task}",
    "--episodes=2",
    f"--output={out}",
    check=False,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert "| babyai/GoToRedBall |" in run.stdout and "step 5" in run.stdout
  figures = json.loads(out.read_text())
  assert figures["step"] == 5
  row = figures["tasks"][task]
  # The data's own figures do not depend on the model: count them from the stored episodes.
  builtin.register_builtin_tasks(str(tmp_path))
  store = pipeline.open_store(task, pipeline.store_root(str(tmp_path)))
  actions = [np.asarray(store.read(i).tokens)[store.read(i).action_mask] for i in range(2)]
  assert row["action_tokens"] == sum(a.size for a in actions)
  windows = [tf_lib.episode_windows(store.read(i), config.train.seq_len) for i in range(2)]
  assert row["windows"] == sum(len(w) for w in windows)
  repeats = [
    w.tokens[w.action_mask][1:] == w.tokens[w.action_mask][:-1] for ws in windows for w in ws
  ]
  repeats = np.concatenate(repeats)
  assert repeats.size and row["target_repeat"] == pytest.approx(np.mean(repeats))

  bad = run_python(
    *tool,
    f"--config.data.data_dir={tmp_path}",
    f"--workdir={tmp_path / 'run'}",
    "--tasks=text/cpython_docs",
    check=False,
  )
  assert bad.returncode != 0 and "control tasks" in bad.stdout + bad.stderr
