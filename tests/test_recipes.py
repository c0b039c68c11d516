"""Recipes: expert recipes by task name, data preparation, and the generalist preset."""

import json
import os
import pathlib

import pytest

from gato_jax import pod, recipes
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
  control = [t for t in tasks if not registry.is_example_task(t)]
  assert len(control) >= 12
  assert len({registry.split_task_name(t)[0] for t in control}) >= 4
  assert "text/cpython_docs" in tasks and "vision_language/shapes_captions" in tasks
  for task in control:
    assert task in registry.list_tasks(registry.split_task_name(task)[0])
    if recipes.trains_expert(task):
      recipes.expert_recipe(task)  # Every trained expert has a recipe.
  for task in set(tasks) - set(control):
    assert task in example_sets.list_tasks(registry.split_task_name(task)[0])


def test_generalist_preset_builds_and_trains_on_tiny_data(tmp_path):
  data_dir = str(tmp_path / "data")
  subset = ("gymnax/CartPole-v1", "babyai/GoToRedBall", "vision_language/shapes_captions")
  for task in subset[:2]:
    generation.generate_task(
      task,
      data_dir,
      num_episodes=2,
      stats_episodes=2,
      policy="random",
      progress=lambda line: None,
    )
  example_sets.generate_task(subset[2], data_dir, 8, progress=lambda line: None)

  config = gato.get_config("tiny,generalist")
  assert config.data.mixture == "generalist" and config.train.seq_len == 512
  # The preset's features this run exercises (the shapes below are only made smaller).
  assert config.model.position_encoding == "rope" and config.model.value_init_correlation == 0.9
  assert config.train.action_loss_vocab == "actions"
  # The smallest shapes that still hold a BabyAI timestep (~150 tokens) and a caption's image.
  overrides = {
    "data.mixture": ",".join(f"{task}=1" for task in subset),
    "data.policy": "random",
    "data.action_noise": "",  # Random episodes have no expert action to perturb.
    "data.prompt_tokens": 128,
    "train.seq_len": 256,
    # One step: the batch's budget sets the step's shapes, so each further step may compile anew.
    # Its 8 rows draw every domain (data.seed 0).
    "train.steps": 1,
    "train.batch_size": 8,
    "model.max_decode_length": 256,
    "checkpoint.async_save": False,
    "log.every_steps": 1,
    "log.tensorboard": False,
    # Random-policy data has no expert statistics to normalise control returns by.
    "eval.tasks": subset[2],
    "eval.non_control_examples": 2,
  }
  for key, value in overrides.items():
    group, field = key.split(".")
    config[group][field] = value
  # The caption baseline: the same recipe on captions alone, for the rows the mixture gave them.
  alone = recipes.alone_config(config, subset[2], share=1 / 3)
  assert alone.data.mixture == "vision_language/shapes_captions=1"
  assert alone.eval.tasks == "vision_language/shapes_captions"
  # Never under two steps: the warm-up needs a step before the decay.
  assert (alone.train.steps, alone.optimizer.warmup_steps, alone.optimizer.decay_steps) == (2, 1, 2)
  assert config.data.mixture != alone.data.mixture  # A copy: the generalist's config is kept.

  # The launcher's alone stage before any evaluation (it may run beside `eval`): the caption
  # task trained alone and scored, the comparison left to a rerun; then train, eval and alone,
  # which set it beside the generalist's evaluation. Each stage's time is recorded. One device:
  # the launcher's own default.
  workdir = tmp_path / "run"
  env = {"XLA_FLAGS": pod.xla_flags_with_devices(os.environ.get("XLA_FLAGS", ""), None)}

  def launch(stages):
    return run_python(
      "experiments/generalist.py",
      "--config=experiments/configs/gato.py:tiny,generalist",
      f"--workdir={workdir}",
      f"--data_dir={data_dir}",
      f"--stages={stages}",
      *(f"--config.{key}={value}" for key, value in overrides.items()),
      env=env,
    ).stdout

  first = launch("alone")
  assert "vision_language/shapes_captions cider" in first and "--stages=eval" in first
  assert not (workdir / "alone" / "comparison.json").exists()
  launch("train,eval,alone")
  (record,) = metrics_log.read_metrics(str(workdir))
  assert record["step"] == 1
  domains = {key for key in record if key.startswith("loss/")}
  assert domains == {"loss/gymnax", "loss/babyai", "loss/vision_language"}
  comparison = json.loads((workdir / "alone" / "comparison.json").read_text())
  assert list(comparison) == ["vision_language/shapes_captions"]
  row = comparison["vision_language/shapes_captions"]
  assert row["alone_steps"] == 2 and {"cider", "bleu4"} <= set(row["alone"])
  assert set(row["generalist"]) == set(row["alone"])
  assert (
    "| vision_language/shapes_captions | cider |"
    in (workdir / "alone" / "comparison.md").read_text()
  )
  stages = [json.loads(line)["stage"] for line in open(workdir / "stage_times.jsonl")]
  assert stages == ["alone", "train", "eval", "alone"]
  records = metrics_log.read_metrics(
    str(workdir / "alone" / "gato.vision_language.shapes_captions")
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
