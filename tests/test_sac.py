"""SAC: its pieces on hand values, learning a toy task, DM Control experts on disk, recipes."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import recipes as recipe_files
from gato_jax import tokenizer
from gato_jax.configs.experts import dm_control as dm_control_recipes
from gato_jax.envs import base, dm_control_envs, registry
from gato_jax.experts import dm_control_experts, sac

from helpers.scripts import run_python


def test_critic_target_on_hand_values():
  # r + gamma * discount * (min(q1, q2) - alpha * log pi): 1 + 0.9 * (2 - 0.5 * -1) = 3.25.
  target = sac.critic_target(
    reward=jnp.array([1.0, 1.0]),
    discount=jnp.array([1.0, 0.0]),
    next_q1=jnp.array([3.0, 3.0]),
    next_q2=jnp.array([2.0, 2.0]),
    next_log_prob=jnp.array([-1.0, -1.0]),
    temperature=0.5,
    gamma=0.9,
  )
  np.testing.assert_allclose(target, [3.25, 1.0], rtol=1e-6)  # Terminal: the reward alone.


def test_polyak_update_moves_targets_by_tau():
  target = {"w": jnp.array([0.0, 10.0]), "b": jnp.array(4.0)}
  online = {"w": jnp.array([1.0, 0.0]), "b": jnp.array(0.0)}
  moved = sac.polyak_update(target, online, tau=0.25)
  np.testing.assert_allclose(moved["w"], [0.25, 7.5])
  np.testing.assert_allclose(moved["b"], 3.0)


def test_squashed_log_prob_matches_change_of_variables():
  mean, log_std = 0.3, np.log(0.7)
  actions = np.array([-0.95, -0.3, 0.0, 0.5, 0.99])
  pre_tanh = np.arctanh(actions)
  # Reference: p(a) = N(atanh(a); mean, std) / (1 - a^2), evaluated in float64 numpy.
  gaussian = -0.5 * ((pre_tanh - mean) / 0.7) ** 2 - np.log(0.7) - 0.5 * np.log(2 * np.pi)
  reference = gaussian - np.log(1 - actions**2)
  ours = sac.squashed_gaussian_log_prob(
    jnp.full((5, 1), mean), jnp.full((5, 1), log_std), jnp.asarray(pre_tanh[:, None], jnp.float32)
  )
  np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
  # The density integrates to one over (-1, 1) (midpoint rule on a fine grid).
  grid = np.linspace(-1, 1, 200_001)
  mid = (grid[1:] + grid[:-1]) / 2
  density = jnp.exp(
    sac.squashed_gaussian_log_prob(
      jnp.full((mid.size, 1), mean),
      jnp.full((mid.size, 1), log_std),
      jnp.asarray(np.arctanh(mid)[:, None], jnp.float32),
    )
  )
  assert abs(float(jnp.sum(density) * (grid[1] - grid[0])) - 1.0) < 2e-3
  # Dimensions add up, and saturated actions stay finite where log(1 - tanh^2) would not.
  two = sac.squashed_gaussian_log_prob(
    jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([[0.2, 20.0]])
  )
  one = lambda u: sac.squashed_gaussian_log_prob(
    jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.array([[u]])
  )
  np.testing.assert_allclose(two, one(0.2) + one(20.0), rtol=1e-6)
  assert np.isfinite(float(two[0]))


def test_samples_are_squashed_and_their_log_prob_is_consistent():
  mean, log_std = jnp.zeros((4096, 2)), jnp.full((4096, 2), 1.0)
  action, log_prob = sac.sample_squashed(mean, log_std, jax.random.key(0))
  assert action.shape == (4096, 2) and float(jnp.abs(action).max()) <= 1.0
  # Recomputing from the action (away from the float32 edge) gives the returned log-prob.
  inner = jnp.all(jnp.abs(action) < 0.999, axis=-1)
  again = sac.squashed_gaussian_log_prob(mean, log_std, jnp.arctanh(action))
  np.testing.assert_allclose(again[inner], log_prob[inner], rtol=1e-3, atol=1e-3)


def test_update_steps_targets_by_polyak_and_temperature_towards_target_entropy():
  config = sac.SACConfig(
    hidden_sizes=(16,), tau=0.1, init_temperature=0.5, target_entropy=100.0
  )  # Unreachable: alpha must rise.
  agent = sac.SAC(obs_dim=3, action_dim=2, config=config)
  state = agent.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = dict(
    obs=rng.normal(size=(8, 3)).astype(np.float32),
    action=rng.uniform(-1, 1, (8, 2)).astype(np.float32),
    reward=rng.normal(size=8).astype(np.float32),
    discount=np.ones(8, np.float32),
    next_obs=rng.normal(size=(8, 3)).astype(np.float32),
  )
  old_target = jax.tree.map(np.asarray, state.target_critic_params)
  new, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
  expected = jax.tree.map(lambda t, c: 0.9 * t + 0.1 * np.asarray(c), old_target, new.critic_params)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    new.target_critic_params,
    expected,
  )
  assert float(jnp.exp(new.log_temperature)) > 0.5 and int(new.steps) == 1
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_replay_buffer_keeps_the_newest_transitions():
  buffer = sac.ReplayBuffer(capacity=3, obs_dim=1, action_dim=1)
  with pytest.raises(ValueError, match="empty"):
    buffer.sample(np.random.default_rng(0), (2,))
  for i in range(5):
    buffer.add([i], [0.0], reward=float(i), discount=1.0, next_obs=[i + 1])
  assert buffer.size == 3
  batch = buffer.sample(np.random.default_rng(0), (4, 50))
  assert batch["obs"].shape == (4, 50, 1) and batch["reward"].shape == (4, 50)
  assert set(batch["reward"].ravel().tolist()) == {2.0, 3.0, 4.0}
  np.testing.assert_array_equal(batch["next_obs"][..., 0], batch["obs"][..., 0] + 1)


class PointToTarget(base.Environment):
  """1-D point mass: move `position` (in [-1, 1]) by 0.2 * action towards `target`.

  Reward is 1 - |position - target| per step over 20 steps: a uniformly random policy scores
  ~6.4 over the test's seeds, heading straight for the target and staying there ~18.5.
  """

  name = "toy/point-to-target"
  observation_spec = {
    "position": tokenizer.ContinuousSpec((1,)),
    "target": tokenizer.ContinuousSpec((1,)),
  }
  action_spec = tokenizer.ContinuousSpec((1,), mu_law=False)
  max_episode_steps = 20

  def reset(self, seed):
    rng = np.random.default_rng(seed)
    self._position, self._target = rng.uniform(-1, 1, 2)
    return self._observation()

  def _observation(self):
    return {
      "position": np.array([self._position], np.float32),
      "target": np.array([self._target], np.float32),
    }

  def step(self, action):
    self._position = float(np.clip(self._position + 0.2 * np.clip(action[0], -1, 1), -1, 1))
    reward = 1.0 - abs(self._position - self._target)
    return base.StepResult(self._observation(), reward, terminated=False, truncated=False)


def _mean_return(env, act, seeds):
  returns = []
  for seed in seeds:
    observation, total = env.reset(seed), 0.0
    for _ in range(env.max_episode_steps):
      result = env.step(act(observation))
      total, observation = total + result.reward, result.observation
    returns.append(total)
  return float(np.mean(returns))


def test_sac_learns_point_to_target_well_above_random():
  env = PointToTarget()
  config = sac.SACConfig(
    total_env_steps=2_000,
    random_steps=300,
    batch_size=64,
    hidden_sizes=(32, 32),
    actor_lr=1e-3,
    critic_lr=1e-3,
    temperature_lr=1e-3,
    gamma=0.9,
    update_every=20,
  )
  params, history = sac.train(env, config, seed=0)
  assert len(history["episode_return"]) == 2_000 // 20
  assert history["episode_end_step"][-1] == 2_000
  expert = dm_control_experts.Expert(
    task=env.name,
    config=config,
    obs_keys=("position", "target"),
    obs_dim=2,
    action_dim=1,
    params=params,
    summary={},
  )
  seeds = range(1000, 1050)
  rng = np.random.default_rng(0)
  random_return = _mean_return(env, lambda _: env.random_action(rng), seeds)
  expert_return = _mean_return(env, expert, seeds)
  # Seeds 0 and 1 reach ~18.1-18.3, near the ~18.5 of the greedy controller.
  assert random_return < 8.0, random_return
  assert expert_return > 16.0, (expert_return, random_return)


def test_sac_resumes_a_killed_run_exactly(tmp_path):
  env = PointToTarget()
  config = sac.SACConfig(
    total_env_steps=200, random_steps=50, batch_size=16, hidden_sizes=(8,), update_every=10
  )
  reference, reference_history = sac.train(env, config, seed=2)
  checkpoint = str(tmp_path / "progress.pkl")

  def killed_at_step_120(step, _):
    if step >= 120:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    sac.train(env, config, 2, 20, killed_at_step_120, checkpoint, checkpoint_seconds=0)
  logged = []
  params, history = sac.train(
    env, config, 2, 20, lambda step, _: logged.append(step), checkpoint, checkpoint_seconds=0
  )
  assert logged[0] > 100  # Resumed at the last episode end before the kill, not from scratch.
  jax.tree.map(np.testing.assert_array_equal, params, reference)
  for key in history:
    np.testing.assert_array_equal(history[key], reference_history[key])


def test_missing_expert_error_names_the_task_and_the_train_command(tmp_path, monkeypatch):
  monkeypatch.setenv("GATO_JAX_EXPERTS", str(tmp_path))
  env = registry.make_env("dm_control/point_mass-easy")
  assert not registry.has_expert(env.name)
  with pytest.raises(LookupError, match="no expert trained for dm_control/point_mass-easy") as err:
    registry.make_expert(env)
  assert isinstance(err.value, FileNotFoundError)
  assert "tools/train_expert.py --domain=dm_control --env=point_mass-easy" in str(err.value)
  with pytest.raises(ValueError, match="unknown DM Control task 'cartpole-fly'"):
    dm_control_experts.load_expert(str(tmp_path), "cartpole-fly")


def test_cached_expert_round_trips_and_repeats_actions(tmp_path, monkeypatch):
  monkeypatch.setenv("GATO_JAX_EXPERTS", str(tmp_path))
  # SAC's own environment acts every control step; the task's (`registry.make_env`) every 4.
  env = dm_control_envs.DMControlEnv("point_mass-easy", action_repeat=1)
  config = sac.SACConfig(hidden_sizes=(8,), action_repeat=3)
  keys, (obs_dim, action_dim) = sac.observation_keys(env), sac.problem_dims(env)
  assert keys == ("position", "velocity") and (obs_dim, action_dim) == (4, 2)
  params = sac.SAC(obs_dim, action_dim, config).init_actor_params(jax.random.key(0))
  dm_control_experts.save_expert(
    str(tmp_path), env.name, config, keys, obs_dim, action_dim, params, {"expert_return": 1.0}
  )
  assert registry.has_expert(env.name)
  policy = registry.make_expert(env)
  assert policy.name == "sac_expert" and policy.expert.summary == {"expert_return": 1.0}
  observations = [env.reset(seed) for seed in range(7)]  # Any observations will do.
  policy.reset(0)
  actions = [policy.act(o) for o in observations]
  original = dm_control_experts.Expert(env.name, config, keys, obs_dim, action_dim, params, {})
  for i, action in enumerate(actions):
    assert action.shape == (2,) and action.dtype == np.float32
    # Held for three control steps: the action of step i is chosen at step 3 * (i // 3).
    np.testing.assert_allclose(action, original(observations[3 * (i // 3)]), rtol=1e-6)
  assert not np.allclose(actions[0], actions[3])
  # On the task's environment, which holds each action for 4 control steps, an expert trained
  # to act every 3 cannot act at its interval; one trained at 4 decides at every call.
  task_env = registry.make_env(env.name)
  with pytest.raises(ValueError, match="acts every 3 control steps"):
    registry.make_expert(task_env)
  dm_control_experts.save_expert(
    str(tmp_path),
    env.name,
    dataclasses.replace(config, action_repeat=4),
    keys,
    obs_dim,
    action_dim,
    params,
    {"expert_return": 1.0},
  )
  policy = registry.make_expert(task_env)
  policy.reset(0)
  for observation in observations:
    np.testing.assert_allclose(policy.act(observation), original(observation), rtol=1e-6)


def test_recipes_build_valid_configs_for_known_tasks():
  from gato_jax.envs import dm_control_envs

  assert (
    set(dm_control_recipes.RECIPES) <= set(dm_control_envs.TASKS)
    and len(dm_control_recipes.RECIPES) >= 5
  )
  for task in dm_control_recipes.RECIPES:
    config = dm_control_recipes.get_config(task)
    sac_config = dm_control_experts.sac_config_from(config)
    assert sac_config.agent_steps > sac_config.random_steps and config.eval.num_episodes >= 50
  with pytest.raises(ValueError, match="no expert recipe for 'cartpole-fly'"):
    dm_control_recipes.get_config("cartpole-fly")


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="action_repeat must be positive"):
    sac.SACConfig(action_repeat=0)
  with pytest.raises(ValueError, match="tau"):
    sac.SACConfig(tau=0.0)
  with pytest.raises(ValueError, match="log_std_min"):
    sac.SACConfig(log_std_min=1.0, log_std_max=0.0)


def test_train_expert_tries_seeds_keeps_the_best_and_retrains_on_a_new_recipe(
  tmp_path, monkeypatch
):
  from gato_jax.experts import cache

  # The seed search, not SAC's learning, is under test: a tiny budget, and the baselines of 2
  # expert episodes and a stand-in random baseline (50 episodes of 1,000 steps cost ~30 s).
  # The stand-in returns the interval of the environment it is given: the task's (8), not SAC's.
  monkeypatch.setattr(
    dm_control_experts.episodes_lib,
    "random_baseline",
    lambda env: (float(env.action_repeat), 0.0, 50, None),
  )
  config = recipe_files.expert_recipe("dm_control/cartpole-balance")
  config.sac.update(total_env_steps=800, random_steps=50, batch_size=32, hidden_sizes=(8,))
  config.eval.num_episodes = 2
  config.update(seed=3, num_seeds=2, target_return=1e9)  # Out of reach: both seeds are tried.
  workdir = str(tmp_path)
  summary = dm_control_experts.train_expert(config, workdir)
  assert sorted(summary["seeds"]) == ["3", "4"] and summary["recipe"] == cache.recipe(config, "sac")
  assert summary["expert_return"] == max(summary["seeds"].values())
  assert summary["seed"] in (3, 4) and summary["random_return"] == 8.0
  seeds_dir = tmp_path / "dm_control" / "cartpole-balance" / "seeds"
  assert not any((seeds_dir / s / "progress.pkl").exists() for s in ("3", "4"))
  expert = dm_control_experts.load_expert(workdir, "cartpole-balance")
  assert expert.summary == summary and expert.version
  # A killed search keeps its finished seeds: seed 4 is lost and trained again, seed 3 is not.
  (tmp_path / "dm_control" / "cartpole-balance" / "expert.json").unlink()
  for name in os.listdir(seeds_dir / "4"):
    (seeds_dir / "4" / name).unlink()
  trained = []
  real_train = sac.train

  def train_and_record(env, sac_config, seed, *args, **kwargs):
    trained.append(seed)
    # The expert's folder is this process's while it trains (a parallel data job waits on it).
    take = f"from gato_jax import workdir_lock; workdir_lock.WorkdirLock({str(seeds_dir.parent)!r}).acquire()"
    refused.append(run_python("-c", take, check=False))
    return real_train(env, sac_config, seed, *args, **kwargs)

  refused = []
  monkeypatch.setattr(sac, "train", train_and_record)
  again = dm_control_experts.train_expert(config, workdir)
  assert trained == [4]
  assert refused[0].returncode == 1 and "WorkdirLockedError" in refused[0].stderr
  del again["train_seconds"], summary["train_seconds"]
  assert again == summary
  # A reachable target stops at the first seed; the cached expert's recipe differs: retrained.
  config.target_return = -1.0
  first = dm_control_experts.train_expert(config, workdir)
  assert list(first["seeds"]) == ["3"] and first["recipe"]["target_return"] == -1.0
  assert dm_control_experts.train_expert(config, workdir) == first
