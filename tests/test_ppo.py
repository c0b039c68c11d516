"""PPO learns, experts round-trip through the on-disk cache, recipes load."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax.configs.experts import gymnax as gymnax_recipes
from gato_jax.sources import episodes as E
from gato_jax.envs import gymnax_envs
from gato_jax.experts import cache, gymnax_experts, ppo

from helpers.scripts import run_python

# Small but real: 48 updates of 8 envs x 64 steps (~25k steps). Random CartPole scores ~22;
# this reaches 500 with seed 0 (and 430-500 in training), so > 150 leaves a wide margin.
_FAST_CARTPOLE = ppo.PPOConfig(
  total_timesteps=24_576,
  num_envs=8,
  num_steps=64,
  num_epochs=4,
  num_minibatches=4,
  learning_rate=2.5e-3,
)


@pytest.fixture(scope="module")
def cartpole_params():
  params, metrics = ppo.train("CartPole-v1", _FAST_CARTPOLE, seed=0)
  return params, metrics


def test_ppo_learns_cartpole_well_above_random(cartpole_params):
  params, metrics = cartpole_params
  assert metrics["episode_return"].shape == (_FAST_CARTPOLE.num_updates,)
  returns = gymnax_envs.rollout(
    "CartPole-v1", ppo.make_policy("CartPole-v1", _FAST_CARTPOLE, params), 50, seed=1
  )["returns"]
  random_return, *_ = E.random_baseline(gymnax_envs.GymnaxEnvironment("CartPole-v1"))
  assert random_return < 40
  assert returns.mean() > 150, returns.mean()


def test_distributions_match_closed_forms():
  logits = jnp.log(jnp.array([[0.2, 0.3, 0.5]]))
  np.testing.assert_allclose(jnp.exp(ppo.log_prob(logits, jnp.array([2]), True)), [0.5], rtol=1e-6)
  np.testing.assert_allclose(
    ppo.entropy(logits, True),
    [-(0.2 * np.log(0.2) + 0.3 * np.log(0.3) + 0.5 * np.log(0.5))],
    rtol=1e-6,
  )
  mean, log_std = jnp.zeros((1, 2)), jnp.log(jnp.full((1, 2), 2.0))
  # Two independent N(0, 4) at x = (1, -1): log density = 2 * (-1/8 - log 2 - log(2 pi)/2).
  expected = 2 * (-0.125 - np.log(2.0) - 0.5 * np.log(2 * np.pi))
  np.testing.assert_allclose(
    ppo.log_prob((mean, log_std), jnp.array([[1.0, -1.0]]), False), [expected], rtol=1e-6
  )
  samples = ppo.sample((jnp.zeros((20000, 1)), jnp.zeros((20000, 1))), jax.random.key(0), False)
  assert abs(float(samples.std()) - 1.0) < 0.03


def test_continuous_ppo_runs_and_acts_in_unit_range():
  config = ppo.PPOConfig(
    total_timesteps=512,
    num_envs=4,
    num_steps=64,
    num_epochs=1,
    num_minibatches=1,
    hidden_sizes=(16,),
  )
  params, metrics = ppo.train("Pendulum-v1", config, seed=0)
  assert np.all(np.isfinite(metrics["policy_loss"]))
  policy = ppo.make_policy("Pendulum-v1", config, params, deterministic=False)
  keys = jax.random.split(jax.random.key(0), 64)
  actions = jax.vmap(policy, in_axes=(None, 0))(jnp.zeros(3), keys)
  assert actions.shape == (64, 1) and float(jnp.abs(actions).max()) <= 1.0


def test_convolutional_torso_trains_on_minatar_grids():
  config = ppo.PPOConfig(
    total_timesteps=256,
    num_envs=4,
    num_steps=64,
    num_epochs=1,
    num_minibatches=2,
    hidden_sizes=(16,),
    conv_features=8,
    torso_size=16,
  )
  params, metrics = ppo.train("Breakout-MinAtar", config, seed=0)
  assert np.all(np.isfinite(metrics["policy_loss"]))
  # The torso is shared: one convolution over the 10x10xC grid, pooled to 4x4, then a layer.
  torso = params["params"]["conv"]["kernel"]
  assert torso.shape[:2] == (2, 2) and torso.shape[-1] == 8
  assert params["params"]["torso"]["kernel"].shape == (4 * 4 * 8, 16)
  policy = ppo.make_policy("Breakout-MinAtar", config, params, deterministic=True)
  grids = jnp.zeros((5, 10, 10, torso.shape[2]))
  actions = jax.vmap(policy, in_axes=(0, None))(grids, jax.random.key(0))
  assert actions.shape == (5,) and int(actions.max()) < 3
  # Without the torso the grid is flattened into the MLPs (the default): no such parameters.
  default = ppo.init_params("Breakout-MinAtar", ppo.PPOConfig(), jax.random.key(0))
  assert "conv" not in default["params"] and "torso" not in default["params"]


def test_minatar_init_scheme_and_raw_observations():
  """gymnax-blines' choices: Flax's init, uniform(0.05) biases, and 0/1 grids fed as they are."""
  lecun = ppo.PPOConfig(hidden_sizes=(32,), init_scheme="lecun", scale_observations=False)
  params = ppo.init_params("Breakout-MinAtar", lecun, jax.random.key(0))["params"]
  biases = np.concatenate([np.ravel(layer["bias"]) for layer in params.values()])
  assert np.all((biases >= 0) & (biases < 0.05)) and biases.std() > 0.005
  # A non-uniform initial policy: the actor head is not scaled down to 0.01.
  default = ppo.init_params(
    "Breakout-MinAtar", ppo.PPOConfig(hidden_sizes=(32,)), jax.random.key(0)
  )
  assert np.all(np.asarray(default["params"]["actor_0"]["bias"]) == 0)
  head_std = lambda p: float(np.std(p["params"]["actor_head"]["kernel"]))
  assert head_std({"params": params}) > 20 * head_std(default)
  _, scaled = ppo.make_network("Breakout-MinAtar", ppo.PPOConfig())
  _, raw = ppo.make_network("Breakout-MinAtar", lecun)
  grid = np.zeros((10, 10, 4), np.float32)
  grid[3, 4, 1] = 1.0
  np.testing.assert_array_equal(raw(grid), grid)
  np.testing.assert_array_equal(scaled(grid), 2 * grid - 1)


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="minibatches"):
    ppo.PPOConfig(num_envs=3, num_steps=5, num_minibatches=4)
  with pytest.raises(ValueError, match="less than one rollout"):
    ppo.PPOConfig(total_timesteps=10, num_envs=8, num_steps=128)
  with pytest.raises(ValueError, match="activation"):
    ppo.PPOConfig(activation="gelu")
  with pytest.raises(ValueError, match="init_scheme must be 'orthogonal' or 'lecun'"):
    ppo.PPOConfig(init_scheme="xavier")
  with pytest.raises(ValueError, match="conv_features must be >= 0"):
    ppo.PPOConfig(conv_features=-1)
  with pytest.raises(ValueError, match="unknown gymnax task 'Pong-v5'"):
    ppo.train("Pong-v5", _FAST_CARTPOLE)


def test_expert_save_load_round_trip_gives_identical_actions(cartpole_params, tmp_path):
  params, _ = cartpole_params
  summary = {"expert_return": 123.0}
  directory = gymnax_experts.save_expert(
    str(tmp_path), "gymnax/CartPole-v1", _FAST_CARTPOLE, params, summary
  )
  assert sorted(os.listdir(directory)) == ["expert.json", "params.msgpack"]
  with open(os.path.join(directory, "expert.json")) as f:
    assert json.load(f)["env_id"] == "CartPole-v1"
  expert = gymnax_experts.load_expert(str(tmp_path), "CartPole-v1")
  assert expert.config == _FAST_CARTPOLE and expert.summary == summary
  original = ppo.make_policy("CartPole-v1", _FAST_CARTPOLE, params)
  obs = jax.random.normal(jax.random.key(1), (256, 4))
  keys = jax.random.split(jax.random.key(2), 256)
  np.testing.assert_array_equal(
    jax.vmap(original)(obs, keys), jax.vmap(expert.policy_fn())(obs, keys)
  )
  # The numpy entry point acts on the adapter's observation dicts.
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1")
  observation = env.reset(seed=3)
  action = expert(observation, np.random.default_rng(0))
  assert action.dtype == np.int32 and action.shape == ()
  assert int(action) == int(original(observation["state"], jax.random.key(0)))
  env.step(action)
  # The registry's factory: a policies.Policy driving the adapter.
  policy = gymnax_experts.make_expert(env, workdir=str(tmp_path))
  policy.reset(seed=3)
  assert int(policy.act(env.reset(seed=3))) == int(action)


def test_an_expert_loaded_first_leaves_its_environment_usable(tmp_path):
  # Loading traces the network's init (`ppo.params_template`): the gymnax environment it needs
  # must be built outside that trace, or its cached parameters are the trace's tracers.
  config = ppo.PPOConfig(hidden_sizes=(8,))
  params = ppo.init_params("Acrobot-v1", config, jax.random.key(0))
  gymnax_experts.save_expert(str(tmp_path), "Acrobot-v1", config, params, {})
  code = (
    "from gato_jax.experts import gymnax_experts; from gato_jax.envs import gymnax_envs;"
    f" expert = gymnax_experts.load_expert({str(tmp_path)!r}, 'Acrobot-v1');"
    " env = gymnax_envs.GymnaxEnvironment('Acrobot-v1');"
    " print(env.step(expert(env.reset(0))).reward)"
  )
  assert run_python("-c", code).stdout.strip() == "-1.0"
  loaded = gymnax_experts.load_expert(str(tmp_path), "Acrobot-v1").params
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))


def test_missing_expert_names_the_training_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="tools/train_expert.py --env=Acrobot-v1"):
    gymnax_experts.load_expert(str(tmp_path), "Acrobot-v1")
  with pytest.raises(ValueError, match="unknown gymnax task"):
    gymnax_experts.load_expert(str(tmp_path), "NoSuchTask-v0")


def test_every_task_has_a_valid_recipe():
  assert set(gymnax_recipes.RECIPES) == set(gymnax_envs.TASKS)
  for env_id in gymnax_envs.TASKS:
    config = gymnax_recipes.get_config(env_id)
    ppo.PPOConfig(**config.ppo.to_dict())  # Field names and values are accepted.
  with pytest.raises(ValueError, match="no expert recipe"):
    gymnax_recipes.get_config("Pong-v5")


def _tiny_cartpole_recipe():
  """CartPole's recipe cut to 512 steps of a 16-unit network and 4 evaluation episodes."""
  config = gymnax_recipes.get_config("CartPole-v1")
  config.ppo.update(
    total_timesteps=512,
    num_envs=4,
    num_steps=64,
    num_epochs=1,
    num_minibatches=1,
    hidden_sizes=(16,),
  )
  config.eval.num_episodes = 4
  return config


def test_train_expert_caches_and_reevaluates(tmp_path):
  config = _tiny_cartpole_recipe()
  summary = gymnax_experts.train_expert(config, str(tmp_path))
  assert summary["env_id"] == "CartPole-v1" and summary["deterministic"]
  # The expert return is the task's one expert baseline, the number its data statistics hold.
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1")
  expert = gymnax_experts.make_expert(env, workdir=str(tmp_path))
  assert summary["expert_return"] == E.expert_baseline(env, expert)[0]
  assert summary["expert"]["num_episodes"] == E.BASELINE_EPISODES
  assert summary["greedy"]["num_episodes"] == summary["sampled"]["num_episodes"] == 4
  assert summary["train_timesteps"] == 512
  # The random baseline is the task's one measurement, whatever the expert's evaluation size.
  assert summary["random"]["num_episodes"] == E.BASELINE_EPISODES
  assert (
    summary["random_return"] == E.random_baseline(gymnax_envs.GymnaxEnvironment("CartPole-v1"))[0]
  )
  # Cached: a second call returns the stored summary without training.
  assert gymnax_experts.train_expert(config, str(tmp_path)) == summary
  config.eval.deterministic = False
  again = gymnax_experts.train_expert(config, str(tmp_path), reevaluate=True)
  assert not again["deterministic"]
  sampling = gymnax_experts.make_expert(env, workdir=str(tmp_path))
  assert again["expert_return"] == E.expert_baseline(env, sampling)[0]
  assert again["train_seconds"] == summary["train_seconds"]
  assert not gymnax_experts.load_expert(str(tmp_path), "CartPole-v1").deterministic


def test_ppo_chunks_are_of_one_length_that_divides_the_updates():
  # 6 updates, at most 4 a chunk: two chunks of 3 (4 then 2 would compile a second program).
  config = ppo.PPOConfig(
    total_timesteps=6 * 64,
    num_envs=4,
    num_steps=16,
    num_epochs=1,
    num_minibatches=1,
    hidden_sizes=(8,),
  )
  steps = []
  _, metrics = ppo.train("CartPole-v1", config, 0, 4, lambda step, _: steps.append(step))
  assert steps == [3 * 64, 6 * 64]
  assert metrics["entropy"].shape == (6,)


def test_ppo_resumes_a_killed_run_exactly(tmp_path):
  config = dataclasses.replace(_FAST_CARTPOLE, total_timesteps=8 * 64 * 6, hidden_sizes=(16,))
  reference, reference_metrics = ppo.train("CartPole-v1", config, seed=3, log_every=2)
  checkpoint = str(tmp_path / "progress.pkl")

  def killed_after_two_chunks(step, _):
    if step >= 4 * config.batch_size:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    ppo.train(
      "CartPole-v1", config, 3, 2, killed_after_two_chunks, checkpoint, checkpoint_seconds=0
    )
  steps = []
  params, metrics = ppo.train(
    "CartPole-v1", config, 3, 2, lambda step, _: steps.append(step), checkpoint, 0
  )
  assert steps == [6 * config.batch_size]  # Only the last chunk ran again.
  jax.tree.map(np.testing.assert_array_equal, params, reference)
  jax.tree.map(np.testing.assert_array_equal, metrics, reference_metrics)
  # Another seed does not take over this run's progress.
  other, _ = ppo.train("CartPole-v1", config, 4, 2, None, checkpoint, 0)
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, other, reference)))


def test_train_expert_tries_seeds_keeps_the_best_and_retrains_on_a_new_recipe(
  tmp_path, monkeypatch
):
  config = _tiny_cartpole_recipe()
  config.update(seed=7, num_seeds=3, target_return=1e9)  # Out of reach: every seed is tried.
  summary = gymnax_experts.train_expert(config, str(tmp_path))
  assert sorted(summary["seeds"]) == ["7", "8", "9"]
  assert summary["expert_return"] == max(summary["seeds"].values())
  assert summary["seed"] in (7, 8, 9) and summary["recipe"] == cache.recipe(config, "ppo")
  seeds_dir = tmp_path / "CartPole-v1" / "seeds"
  assert sorted(os.listdir(seeds_dir)) == ["7", "8", "9"]
  assert not any((seeds_dir / s / "progress.pkl").exists() for s in ("7", "8", "9"))
  # A killed multi-seed run keeps its finished seeds: here seed 8 is lost and trained again.
  (tmp_path / "CartPole-v1" / "expert.json").unlink()
  for name in os.listdir(seeds_dir / "8"):
    (seeds_dir / "8" / name).unlink()
  trained = []
  real_train = ppo.train

  def train_and_record(*args, **kwargs):
    trained.append(kwargs["seed"])
    # The expert's folder is this process's while it trains: another one (a parallel data job)
    # cannot take it, and waits on it instead (tests/test_workdir_lock.py).
    take = f"from gato_jax import workdir_lock; workdir_lock.WorkdirLock({str(seeds_dir.parent)!r}).acquire()"
    refused.append(run_python("-c", take, check=False))
    return real_train(*args, **kwargs)

  refused = []
  monkeypatch.setattr(ppo, "train", train_and_record)
  again = gymnax_experts.train_expert(config, str(tmp_path))
  assert trained == [8]
  assert refused[0].returncode == 1 and "WorkdirLockedError" in refused[0].stderr
  del again["train_seconds"], summary["train_seconds"]
  assert again == summary
  # A reachable target stops at the first seed; the cached expert's recipe differs: retrained.
  config.target_return = -1.0
  first = gymnax_experts.train_expert(config, str(tmp_path))
  assert list(first["seeds"]) == ["7"] and first["recipe"]["target_return"] == -1.0
  assert gymnax_experts.train_expert(config, str(tmp_path)) == first
