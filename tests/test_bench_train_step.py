"""The train-step benchmark's cases run on CPU: ours, the minimal reference decoder, and the
learning run that compares the action-loss normalisers at equal tokens."""

import json
import math
import os

from gato_jax import pod
from gato_jax.training.loss import ACTION_IDS
from gato_jax.tokenizer.constants import VOCAB_SIZE

from helpers.scripts import run_python


def test_cases_run_on_cpu_and_learn_at_equal_tokens(data_dir):
  learn_steps, batch_size, seq_len = 2, 4, 160
  out = run_python(
    "tools/bench/train_step.py",
    "--config=experiments/configs/gato.py:tiny,smoke",  # Trains with action_loss_vocab "full".
    f"--config.data.data_dir={data_dir}",
    f"--config.train.batch_size={batch_size}",
    f"--config.train.seq_len={seq_len}",  # One 154-token BabyAI timestep, no prompt.
    "--config.data.prompt_probability=0",
    "--config.mesh.shape=1,1,1",
    "--batches=data",
    "--num_batches=1",
    "--seconds=0",
    "--cases=reference,gato_padded,gato_actions",
    "--phases",
    f"--learn_steps={learn_steps}",
    "--held_out_batches=1",
    env={"XLA_FLAGS": pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None)},
  ).stdout
  rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  assert [r["case"] for r in rows] == ["reference", "gato_padded", "gato_actions"]
  for row in rows:
    assert row["tokens_per_second"] > 0 and row["batch_size"] == 4 and row["seq_len"] == seq_len
    assert row["batches"] == "data" and row["device"] == "cpu"
    assert 0 < row["forward_ms"] and 0 < row["gradients_ms"]
  reference, full, actions = rows  # gato_padded trains with the config's "full" normaliser.
  # The reference and the padded step compute logits at the same targets: the same model FLOPs
  # per step; budgets per batch shard compute no more.
  assert reference["logits_per_row"] == full["logits_per_row"]
  assert actions["logits_per_row"] <= full["logits_per_row"]

  assert "learn_steps" not in reference
  for row in (full, actions):
    assert row["learn_steps"] == learn_steps
    assert row["learn_tokens"] == learn_steps * batch_size * seq_len
    assert row["learn_seconds"] > 0 and row["held_out_targets"] > 0
    losses = [row[f"held_out_{kind}loss_per_token"] for kind in ("", "text_", "action_")]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert min(losses[1:]) <= losses[0] <= max(losses[1:])  # The mean over both kinds.
    # Two steps leave the model near uniform over each target's normaliser, whichever one the
    # case trained with: actions over the 1,025 action ids (ln 6.9), text over the whole
    # vocabulary (ln 10.4).
    assert losses[2] < (math.log(ACTION_IDS[1] - ACTION_IDS[0]) + math.log(VOCAB_SIZE)) / 2
    assert losses[1] > (math.log(ACTION_IDS[1] - ACTION_IDS[0]) + math.log(VOCAB_SIZE)) / 2
  # One metric for every case: the same parameters score the same before training.
  assert full["held_out_initial_loss_per_token"] == actions["held_out_initial_loss_per_token"]
  assert full["held_out_targets"] == actions["held_out_targets"]
  # Training over the action ids takes other steps than over the whole vocabulary.
  assert actions["held_out_loss_per_token"] != full["held_out_loss_per_token"]
