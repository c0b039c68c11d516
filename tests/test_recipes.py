"""Recipes: expert recipes by task name, data preparation, and the generalist preset."""

import json
import pathlib

import pytest

from gato_jax import recipes, train
from gato_jax.configs import gato
from gato_jax.data import presets
from gato_jax.sources import example_sets, generation
from gato_jax.envs import registry
from gato_jax.experts import cache
from gato_jax.training import metrics_log

from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).parents[1]


def test_expert_recipes_by_task_name():
  assert recipes.expert_recipe("gymnax/CartPole-v1").env_id == "CartPole-v1"
  assert recipes.expert_recipe("dm_control/walker-stand").task == "walker-stand"
  # Pixel tasks are played by the state task's SAC expert.
  assert recipes.expert_recipe("dm_control_pixels/walker-stand").task == "walker-stand"
  assert not recipes.trains_expert("babyai/GoToRedBall")
  assert recipes.ensure_expert("babyai/GoToRedBall") is None  # The bot needs no training.
  with pytest.raises(ValueError, match="domain 'babyai' has no trained experts"):
    recipes.expert_recipe("babyai/GoToRedBall")
  with pytest.raises(ValueError, match="no expert recipe for 'NoSuchGame'"):
    recipes.expert_recipe("gymnax/NoSuchGame")


def test_minatar_recipes_expose_the_conv_torso_and_classic_ones_keep_their_digest():
  breakout = recipes.expert_recipe("gymnax/Breakout-MinAtar")
  assert (breakout.ppo.conv_features, breakout.ppo.torso_size) == (0, 64)
  breakout.ppo.conv_features = 32  # Overridable like any field (--config.ppo.conv_features).
  assert cache.recipe(breakout, "ppo")["ppo"]["conv_features"] == 32
  # Fields absent from a classic-control recipe keep its digest, so cached experts stay valid.
  assert "conv_features" not in recipes.expert_recipe("gymnax/CartPole-v1").ppo


def test_generalist_preset_spans_domains_with_experts():
  tasks = presets.preset_tasks("generalist")
  control = [t for t in tasks if registry.split_task_name(t)[0] not in example_sets.domains()]
  assert len(control) >= 12
  assert len({registry.split_task_name(t)[0] for t in control}) >= 4
  assert "text/cpython_docs" in tasks and "vision_language/shapes_captions" in tasks
  for task in control:
    assert task in registry.list_tasks(registry.split_task_name(task)[0])
    if recipes.trains_expert(task):
      recipes.expert_recipe(task)  # Every trained expert has a recipe.
  for task in set(tasks) - set(control):
    assert task in example_sets.list_tasks(registry.split_task_name(task)[0])


def test_generalist_preset_trains_two_steps_on_tiny_data(tmp_path):
  data_dir = str(tmp_path / "data")
  subset = ("gymnax/CartPole-v1", "babyai/GoToRedBall", "vision_language/shapes_captions")
  for task in subset[:2]:
    generation.generate_task(
      task,
      data_dir,
      num_episodes=3,
      stats_episodes=2,
      policy="random",
      progress=lambda line: None,
    )
  example_sets.generate_task(subset[2], data_dir, 12, progress=lambda line: None)

  config = gato.get_config("tiny,generalist")
  assert config.data.mixture == "generalist" and config.train.seq_len == 512
  config.data.data_dir = data_dir
  config.data.policy = "random"
  config.data.mixture = ",".join(f"{task}=1" for task in subset)
  config.train.steps = 2
  config.train.batch_size = 8
  config.checkpoint.async_save = False
  config.log.every_steps = 1
  config.log.tensorboard = False
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  records = metrics_log.read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2]
  domains = {key for record in records for key in record if key.startswith("loss/")}
  assert domains == {"loss/gymnax", "loss/babyai", "loss/vision_language"}
  # The caption baseline: the same recipe on captions alone, for the rows the mixture gave them.
  alone = recipes.alone_config(config, subset[2], share=1 / 3)
  assert alone.data.mixture == "vision_language/shapes_captions=1"
  assert alone.eval.tasks == "vision_language/shapes_captions"
  assert (alone.train.steps, alone.optimizer.warmup_steps, alone.optimizer.decay_steps) == (2, 1, 2)
  assert config.data.mixture != alone.data.mixture  # A copy: the generalist's config is kept.
  # The launcher's alone stage before any evaluation (it may run beside `eval`): the caption
  # task trained alone and scored, the comparison left to a rerun; then eval and alone, which
  # set it beside the generalist's evaluation. Each stage's time is recorded.
  overrides = {
    "data.mixture": config.data.mixture,
    "data.policy": "random",
    "train.steps": 2,
    "train.batch_size": 8,
    "checkpoint.async_save": False,
    "log.tensorboard": False,
    # Random-policy data has no expert statistics to normalise control returns by.
    "eval.tasks": subset[2],
    "eval.non_control_examples": 4,
  }

  def launch(stages):
    return run_python(
      "experiments/generalist.py",
      "--config=experiments/configs/gato.py:tiny,generalist",
      f"--workdir={workdir}",
      f"--data_dir={data_dir}",
      f"--stages={stages}",
      *(f"--config.{key}={value}" for key, value in overrides.items()),
    ).stdout

  first = launch("alone")
  assert "vision_language/shapes_captions cider" in first and "--stages=eval" in first
  assert not (tmp_path / "run" / "alone" / "comparison.json").exists()
  launch("eval,alone")
  comparison = json.loads((tmp_path / "run" / "alone" / "comparison.json").read_text())
  assert list(comparison) == ["vision_language/shapes_captions"]
  row = comparison["vision_language/shapes_captions"]
  assert row["alone_steps"] == 2 and {"cider", "bleu4"} <= set(row["alone"])
  assert set(row["generalist"]) == set(row["alone"])
  assert (
    "| vision_language/shapes_captions | cider |"
    in (tmp_path / "run" / "alone" / "comparison.md").read_text()
  )
  stages = [json.loads(line)["stage"] for line in open(tmp_path / "run" / "stage_times.jsonl")]
  assert stages == ["alone", "eval", "alone"]
  records = metrics_log.read_metrics(
    str(tmp_path / "run" / "alone" / "gato.vision_language.shapes_captions")
  )
  assert {key for record in records for key in record if key.startswith("loss/")} == {
    "loss/vision_language"
  }


def test_alone_config_keeps_the_tokens_the_mixture_gave_the_task():
  config = gato.get_config("small,generalist")
  alone = recipes.alone_config(config, "text/cpython_docs", share=1 / 16)
  assert alone.train.steps == round(config.train.steps / 16)
  assert alone.train.batch_size == config.train.batch_size
  assert alone.optimizer.warmup_steps == round(config.optimizer.warmup_steps / 16)
  assert alone.optimizer.peak_learning_rate == config.optimizer.peak_learning_rate
  assert alone.optimizer.decay_steps == alone.train.steps
  with pytest.raises(ValueError, match="share of 'text/cpython_docs' must be in"):
    recipes.alone_config(config, "text/cpython_docs", share=0)


def test_a_weak_expert_is_reported_on_the_console():
  strong = dict(expert_return=-105.3, random_return=-200.0, reference_return=-118.0)
  assert recipes.expert_share(strong) == pytest.approx(94.7 / 82)
  assert recipes.expert_line("gymnax/MountainCar-v0", strong) == (
    "gymnax/MountainCar-v0 expert: return -105.3 (random -200.0, reference -118.0: 115% of the way)"
  )
  weak = dict(strong, expert_return=-200.0)
  line = recipes.expert_line("gymnax/MountainCar-v0", weak)
  assert "0% of the way)\nWARNING: gymnax/MountainCar-v0's expert is below 50%" in line
  with pytest.raises(ValueError, match="not above random"):
    recipes.expert_share(dict(strong, reference_return=-200.0))


def test_every_cpu_preset_builds_its_model_optimizer_and_loss():
  from gato_jax.model import ModelConfig
  from gato_jax.training import loss
  from gato_jax.training.optimizer import OptimizerConfig
  from gato_jax.training.step import abstract_param_count

  for arg in ("tiny,smoke", "small,quickstart", "small,generalist"):
    config = gato.get_config(arg)
    model_config = ModelConfig.from_dict(config.model)
    OptimizerConfig.from_dict(config.optimizer)
    assert config.train.action_loss_vocab in loss.ACTION_VOCABS, arg
    assert config.optimizer.warmup_steps < config.train.steps, arg
    if arg == "small,quickstart":
      # Embedding choices change values, not shapes: README's 5.2M parameters hold.
      assert abstract_param_count(model_config) == 5_218_304
