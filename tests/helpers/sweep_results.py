"""Sweep test material: a micro sweep, a trainer and an evaluator that stand in for the real ones
(on a local folder or a bucket), and a results.json with exact power-law loss curves."""

import json

from gato_jax import files
from gato_jax.configs import sweep as sweep_configs
from gato_jax.sweep import runner


def micro_sweep():
  """Two tiny runs of 4 steps of 2 x 16 tokens, evaluated at steps 2 and 4."""
  sweep = sweep_configs.get_config("cpu")
  sweep.sizes = ("tiny", "mini")
  sweep.base.train.batch_size = 2
  sweep.base.train.seq_len = 16
  sweep.base.optimizer.warmup_steps = 1
  sweep.tokens = 4 * 32
  sweep.eval_tokens = (64, 128)
  sweep.loss_window_steps = 2
  return sweep


class FakeTrainer:
  """Resumes from its newest checkpoint folder, logs loss 10/step each step, checkpoints at stop."""

  def __init__(self, crash_at: int | None = None):
    self.crash_at = crash_at
    self.calls = []

  def __call__(self, config, workdir):
    stop = config.train.stop_at_step or config.train.steps
    start = max(runner.checkpoint_steps(workdir), default=0)
    self.calls.append((workdir.rstrip("/").rsplit("/", 1)[-1], start, stop))
    if self.crash_at is not None and stop >= self.crash_at:
      raise KeyboardInterrupt("killed")
    lines = []
    for step in range(start + 1, stop + 1):
      # A domain's loss is logged only for steps whose batch had its rows: text on even steps.
      text = {"loss/text": 30.0 / step} if step % 2 == 0 else {}
      record = {"step": step, "loss": 10.0 / step, "loss/gymnax": 20.0 / step, **text}
      lines.append(json.dumps(record) + "\n")
    files.append_bytes(files.join(workdir, "metrics.jsonl"), "".join(lines).encode())
    # A bucket has no empty folders: the step's folder holds a file, as orbax's do.
    files.write_bytes(files.join(workdir, "checkpoints", str(stop), "done"), b"")


class FakeEvaluator:
  def __init__(self):
    self.calls = []

  def __call__(self, config, workdir, step):
    self.calls.append((workdir.rstrip("/").rsplit("/", 1)[-1], step))
    score = step / 10 + (0.1 if config.model.size == "mini" else 0.0)
    tasks = {
      "gymnax/CartPole-v1": {"return": 500 * score, "normalized_score": score},
      "babyai/GoToLocal": {"return": score, "normalized_score": score / 2},
    }
    return {
      "tasks": tasks,
      "domains": {"gymnax": {"mean": score}, "babyai": {"mean": score / 2}},
      "overall": {"mean": 0.75 * score, "mean_over_domains": 0.75 * score},
    }


def synthetic_results() -> dict:
  runs = []
  for i, (name, params) in enumerate((("size-tiny", 1e6), ("size-small", 4e6))):
    flops_per_token = 6 * params
    curve = [
      {
        "step": s,
        "tokens": 100 * s,
        "compute": 100 * s * flops_per_token,
        "loss": 2.0 * (100 * s * flops_per_token) ** -0.05,
      }
      for s in range(1, 101)
    ]
    points = [
      {
        "step": s,
        "tokens": 100 * s,
        "compute": 100 * s * flops_per_token,
        "loss": curve[s - 1]["loss"],
        "mean_score": 0.2 * (i + 1) * s / 100,
        "domains": {"gymnax": 0.2 * (i + 1) * s / 100},
        "domain_losses": {"gymnax": 1.0 / (i + 1)},
        "train_seconds": 60.0,
        "eval_seconds": 30.0,
      }
      for s in (50, 100)
    ]
    runs.append(
      {
        "name": name,
        "overrides": {"model.size": name[5:]},
        "size": name[5:],
        "params": params,
        "flops_per_token": flops_per_token,
        "tokens_per_step": 100,
        "steps": 100,
        "points": points,
        "curve": curve,
        "train_seconds": 120.0,
        "eval_seconds": 60.0,
      }
    )
  return {"ladder": "synthetic", "runs": runs, "missing": []}
