"""Scaling sweeps: ladder expansion, resumable runs, the power-law fit and the report."""

import json
import pathlib

import numpy as np
import pytest

from gato_jax.configs import sweep as sweep_configs
from gato_jax.sweep import plan, power_law, report, runner

from helpers.scripts import run_python
from helpers.sweep_results import (
  FakeEvaluator,
  FakeTrainer,
  micro_sweep,
  synthetic_results,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


# Ladder expansion.


def test_cpu_ladder_expands_to_three_sizes_with_one_recipe():
  runs = plan.plan(sweep_configs.get_config("cpu"))
  assert [r.name for r in runs] == ["size-tiny", "size-mini", "size-small"]
  assert [r.config.model.size for r in runs] == ["tiny", "mini", "small"]
  for run in runs:
    assert run.overrides == {"model.size": run.config.model.size}
    assert run.config.train.steps == 600 and run.config.optimizer.decay_steps == 600
    assert run.eval_steps == (200, 400, 600)
    assert run.tokens_per_step == 8 * 512
    assert run.config.model.dtype == "float32"
    assert run.config.data.mixture == "gymnax/CartPole-v1=1,gymnax/Acrobot-v1=1"
    # Everything but the size is the same recipe.
    other = runs[0].config.to_dict()
    mine = run.config.to_dict()
    other["model"].pop("size"), mine["model"].pop("size")
    assert mine == other


def test_paper_ladder_keeps_the_papers_recipe():
  runs = plan.plan(sweep_configs.get_config("paper"))
  assert [r.config.model.size for r in runs] == ["79m", "364m", "1.18b"]
  for run in runs:
    config = run.config
    assert (config.train.batch_size, config.train.seq_len) == (512, 1024)
    assert config.train.steps == 1_000_000
    assert config.optimizer.peak_learning_rate == 1e-4
    assert config.optimizer.warmup_steps == 15_000
    assert config.optimizer.decay_steps == 1_000_000
    assert config.optimizer.decay_factor == 10.0
    assert config.model.stochastic_depth == 0.1
    assert config.model.dtype == "bfloat16"
    assert config.data.mixture == "paper"
    assert run.eval_steps == tuple(range(100_000, 1_000_001, 100_000))


def test_generalist_ladder_sweeps_the_learning_rate_of_the_preset():
  runs = plan.plan(sweep_configs.get_config("generalist"))
  assert [r.overrides for r in runs] == [
    {"optimizer.peak_learning_rate": rate} for rate in (1e-3, 2e-3, 4e-3)
  ]
  recipes = []
  for run in runs:
    config = run.config
    assert config.model.size == "small" and config.data.mixture == "generalist"
    assert (config.train.batch_size, config.train.seq_len) == (16, 512)
    assert config.train.steps == config.optimizer.decay_steps == 200
    assert run.eval_steps == (200,)
    assert config.log.every_steps == 1  # Per-domain losses over every step of the window.
    recipe = config.to_dict()
    recipe["optimizer"].pop("peak_learning_rate")
    recipes.append(recipe)
  assert all(recipe == recipes[0] for recipe in recipes)  # One recipe apart from the rate.


def test_product_and_zip_axes_cross_the_ladder():
  sweep = sweep_configs.get_config("cpu")
  sweep.product = "optimizer.peak_learning_rate=1e-3,3e-4"
  sweep.zip = "train.seed=0,1;data.seed=5,6"
  runs = plan.plan(sweep)
  assert len(runs) == 3 * 2 * 2
  assert runs[0].name == "size-tiny+peak_learning_rate-0.001+train.seed-0+data.seed-5"
  combos = {
    (
      r.config.model.size,
      r.config.optimizer.peak_learning_rate,
      r.config.train.seed,
      r.config.data.seed,
    )
    for r in runs
  }
  assert len(combos) == 12
  # Zipped axes move together: seeds (0, 5) and (1, 6) only.
  assert {(c[2], c[3]) for c in combos} == {(0, 5), (1, 6)}
  assert {c[1] for c in combos} == {1e-3, 3e-4}


def test_batch_size_axis_keeps_the_token_counts():
  sweep = sweep_configs.get_config("cpu")
  sweep.sizes = ("small",)
  sweep.product = "train.batch_size=8,16"
  runs = plan.plan(sweep)
  assert [r.config.train.steps for r in runs] == [600, 300]
  assert [r.eval_steps for r in runs] == [(200, 400, 600), (100, 200, 300)]


def test_parse_axes_keeps_bracketed_commas_and_literals():
  axes = plan.parse_axes("mesh.shape=(1,1,1),(2,1,1); mesh.rules=fsdp,'data_parallel'")
  assert axes == {"mesh.shape": [(1, 1, 1), (2, 1, 1)], "mesh.rules": ["fsdp", "data_parallel"]}
  assert plan.parse_axes("") == {}


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("product", "optimizer.no_such_field=1,2", "no field 'no_such_field'"),
    ("product", "nogroup.x=1", "'nogroup' is not a config group"),
    ("product", "model.size=tiny", "set by `sizes`"),
    ("zip", "train.seed=0,1;data.seed=1", "equal lengths"),
    ("product", "train.seed", "must read key=value"),
    ("product", "train.steps=1.5", "does not fit"),
    ("sizes", ("tiny", "huge"), "unknown model size 'huge'"),
    ("eval_tokens", (10**12,), "beyond the budget"),
  ],
)
def test_bad_sweeps_are_refused_with_the_reason(field, value, message):
  sweep = sweep_configs.get_config("cpu")
  setattr(sweep, field, value)
  with pytest.raises(ValueError, match=message):
    plan.plan(sweep)


def test_unknown_ladder_is_refused():
  with pytest.raises(ValueError, match="unknown ladder 'huge'"):
    sweep_configs.get_config("huge")


# Resumable runs, with a fake trainer and evaluator.


def _execute_all(runs, workdir, trainer, evaluator):
  for run in runner.pending(workdir, runs):
    runner.execute(run, workdir, trainer, evaluator, costs=(1000, 6000.0), loss_window_steps=2)


def test_resume_skips_finished_runs_and_evaluated_points(tmp_path):
  runs = plan.plan(micro_sweep())
  workdir = str(tmp_path)
  evaluator = FakeEvaluator()
  # The first sweep finishes run 1 and is killed while training run 2 past its first point.
  crashing = FakeTrainer(crash_at=4)
  runner.execute(
    runs[0], workdir, FakeTrainer(), evaluator, costs=(1000, 6000.0), loss_window_steps=2
  )
  with pytest.raises(KeyboardInterrupt):
    runner.execute(runs[1], workdir, crashing, evaluator, costs=(1000, 6000.0))
  assert crashing.calls == [("size-mini", 0, 2), ("size-mini", 2, 4)]
  assert evaluator.calls == [("size-tiny", 2), ("size-tiny", 4), ("size-mini", 2)]
  assert [r.name for r in runner.pending(workdir, runs)] == ["size-mini"]
  # The sweep in progress already reports: run 2 with the one point it has.
  partial = runner.collect(workdir, runs, "micro", 2, costs_fn=lambda config: (1000, 6000.0))
  assert [(r["name"], r["finished"]) for r in partial["runs"]] == [
    ("size-tiny", True),
    ("size-mini", False),
  ]
  assert [p["step"] for p in partial["runs"][1]["points"]] == [2] and partial["missing"] == []
  assert "| size-mini (unfinished) | 0.00M | 64 | " in report.render_markdown(partial)

  trainer, evaluator.calls = FakeTrainer(), []
  _execute_all(runs, workdir, trainer, evaluator)
  # Run 1 is not repeated; run 2 continues from its step-2 checkpoint, point 2 not re-evaluated.
  assert trainer.calls == [("size-mini", 2, 4)]
  assert evaluator.calls == [("size-mini", 4)]
  assert runner.pending(workdir, runs) == []

  trainer, evaluator.calls = FakeTrainer(), []
  _execute_all(runs, workdir, trainer, evaluator)
  assert trainer.calls == [] and evaluator.calls == []

  results = runner.collect(workdir, runs, "micro", costs_fn=None)  # Every run is finished.
  assert results["missing"] == [] and all(r["finished"] for r in results["runs"])
  mini = results["runs"][1]
  assert mini["name"] == "size-mini" and mini["params"] == 1000
  assert [p["tokens"] for p in mini["points"]] == [64, 128]
  assert [p["compute"] for p in mini["points"]] == [64 * 6000.0, 128 * 6000.0]
  # Loss at step 4 over the 2-step window: mean of 10/3 and 10/4.
  assert mini["points"][1]["loss"] == pytest.approx((10 / 3 + 10 / 4) / 2)
  # Each domain over the same window, from the steps that logged it.
  assert mini["points"][1]["domain_losses"] == {
    "gymnax": pytest.approx((20 / 3 + 20 / 4) / 2),
    "text": pytest.approx(30 / 4),
  }
  assert mini["points"][0]["domain_losses"] == {
    "gymnax": pytest.approx((20 / 1 + 20 / 2) / 2),
    "text": pytest.approx(30 / 2),
  }
  assert mini["points"][0]["mean_score"] == pytest.approx(0.75 * 0.3)
  assert mini["points"][0]["domains"] == {
    "gymnax": pytest.approx(0.3),
    "babyai": pytest.approx(0.15),
  }
  with open(tmp_path / "results.json") as f:
    assert json.load(f) == json.loads(json.dumps(results))


def test_resume_refuses_a_changed_config(tmp_path):
  sweep = micro_sweep()
  run = plan.plan(sweep)[0]
  with pytest.raises(KeyboardInterrupt):
    runner.execute(run, str(tmp_path), FakeTrainer(crash_at=2), FakeEvaluator(), costs=(1, 1.0))
  sweep.base.optimizer.peak_learning_rate = 5e-4
  changed = plan.plan(sweep)[0]
  with pytest.raises(ValueError, match="different config"):
    runner.execute(changed, str(tmp_path), FakeTrainer(), FakeEvaluator(), costs=(1, 1.0))


def test_loss_curve_counts_replayed_steps_once():
  records = [
    {"step": 1, "loss": 4.0},
    {"step": 2, "loss": 3.0},
    {"step": 3, "loss": 9.0},
    {"step": 3, "loss": 2.0},
    {"step": 3, "eval/normalized_score": 0.5},
    {"step": 4, "loss": 1.0},
  ]
  assert runner.loss_curve(records, window_steps=2) == [(1, 4.0), (2, 3.5), (3, 2.5), (4, 1.5)]
  assert runner.loss_curve(records, window_steps=1) == [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]


def test_launch_commands_name_each_run(tmp_path):
  runs = plan.plan(micro_sweep())
  commands = runner.launch_commands(
    runs, "/w d", ["python", "experiments/sweep.py", "--config.zip=a=1;b=2"]
  )
  assert commands == [
    "python experiments/sweep.py '--config.zip=a=1;b=2' '--workdir=/w d' --run=size-tiny",
    "python experiments/sweep.py '--config.zip=a=1;b=2' '--workdir=/w d' --run=size-mini",
  ]


def test_print_dispatch_from_the_command_line(tmp_path):
  # The cpu ladder has no slices: local commands (the paper ladder's pods: tests/test_pod.py).
  out = run_python(
    "experiments/sweep.py",
    "--config=experiments/configs/sweep.py:cpu",
    f"--workdir={tmp_path}",
    "--dispatch=print",
  ).stdout.splitlines()
  base = (
    f"python experiments/sweep.py --config=experiments/configs/sweep.py:cpu --workdir={tmp_path}"
  )
  assert out == [
    f"{base} --dispatch=prepare",
    f"{base} --run=size-tiny",
    f"{base} --run=size-mini",
    f"{base} --run=size-small",
    f"{base} --dispatch=report",
  ]


# The power-law fit.


def test_power_law_fit_recovers_a_known_exponent():
  compute = np.geomspace(1e15, 1e20, 12)
  law = power_law.fit(compute, 5.0 * compute**-0.07)
  assert law.exponent == pytest.approx(0.07, rel=1e-9)
  assert law.a == pytest.approx(5.0, rel=1e-7)
  assert law.offset == 0.0 and law.rmse_log < 1e-9


def test_power_law_fit_recovers_exponent_and_offset():
  compute = np.geomspace(1e12, 1e20, 16)
  law = power_law.fit(compute, 40.0 * compute**-0.2 + 1.7, offset=True)
  assert law.exponent == pytest.approx(0.2, rel=1e-4)
  assert law.offset == pytest.approx(1.7, rel=1e-4)
  assert law.a == pytest.approx(40.0, rel=1e-3)


def test_power_law_fit_tolerates_noise():
  rng = np.random.default_rng(0)
  compute = np.geomspace(1e14, 1e19, 40)
  loss = 3.0 * compute**-0.05 * np.exp(rng.normal(0, 0.01, compute.shape))
  assert power_law.fit(compute, loss).exponent == pytest.approx(0.05, abs=0.003)


def test_power_law_refuses_bad_points():
  with pytest.raises(ValueError, match="positive"):
    power_law.fit([1.0, 2.0], [1.0, -1.0])
  with pytest.raises(ValueError, match="two or more compute values"):
    power_law.fit([3.0, 3.0], [1.0, 2.0])
  with pytest.raises(ValueError, match="at least 4 points"):
    power_law.fit([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], offset=True)


def test_frontier_keeps_points_no_cheaper_point_beats():
  compute = [1, 2, 2, 3, 4, 5]
  loss = [5, 6, 4, 4.5, 3, 3]
  assert power_law.frontier(compute, loss).tolist() == [0, 2, 4]


# The report.


def test_report_is_regenerated_from_the_results_file(tmp_path):
  with open(tmp_path / "results.json", "w") as f:
    json.dump(synthetic_results(), f)
  paths = report.regenerate(str(tmp_path))
  for key in ("scores", "loss"):
    with open(paths[key], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  first = {key: pathlib.Path(path).read_bytes() for key, path in paths.items()}
  report.regenerate(str(tmp_path))
  assert {key: pathlib.Path(path).read_bytes() for key, path in paths.items()} == first
  table = first["table"].decode()
  assert "| size-small | 4.00M | 10K | " in table
  assert "| gymnax loss | gymnax score | mean score |" in table
  assert "| 0.500 | 40.0% | 40.0% |" in table  # small at 10K tokens: gymnax loss and scores.
  assert "C^-0.05 " in table  # The frontier of exact power-law curves has their exponent.
  assert "score rises with size at 2 of 2 token counts, loss falls with size at 2 of 2" in table
  # One size swept over another axis: no scaling law is fitted.
  one_size = synthetic_results()
  for run in one_size["runs"]:
    run["params"] = 1e6
  assert report.fit(one_size) is None
  assert "Power law" not in report.render_markdown(one_size)


def test_report_needs_finished_runs(tmp_path):
  with pytest.raises(FileNotFoundError, match="run the sweep first"):
    report.regenerate(str(tmp_path))
  with open(tmp_path / "results.json", "w") as f:
    json.dump({"ladder": "x", "runs": [], "missing": ["a"]}, f)
  with pytest.raises(ValueError, match="no finished run"):
    report.regenerate(str(tmp_path))
