"""RLDS episodes: rollouts, TFDS round trips, key maps, statistics, filtering, generation."""

import dataclasses
import json
import os

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.data import rlds_io
from gato_jax.sources import generation
from gato_jax.envs import base, policies, registry, runner

from helpers.scripts import run_python


class CountdownEnv(base.Environment):
  """A tiny deterministic task with every observation kind and no simulator.

  The episode terminates (success) when action 2 is taken, or is truncated after 6 steps.
  """

  name = "fake/countdown"
  observation_spec = {
    "mission": T.TextSpec(),
    "grid": T.DiscreteSpec((2, 2), num_values=4),
    "pos": T.ContinuousSpec((3,)),
  }
  action_spec = T.DiscreteSpec((), num_values=3)
  max_episode_steps = 6

  def reset(self, seed):
    self._t, self._seed = 0, seed
    return self._obs()

  def _obs(self):
    return {
      "mission": f"press two {self._seed % 3}",
      "grid": np.full((2, 2), self._t % 4, np.uint8),
      "pos": np.array([self._t, -self._t, self._seed], np.float32),
    }

  def step(self, action):
    self._t += 1
    done = int(action) == 2
    return base.StepResult(
      self._obs(),
      1.0 if done else -0.25,
      done,
      self._t >= self.max_episode_steps and not done,
      {"success": done},
    )


class PressTwo(policies.Policy):
  name = "press_two"

  def act(self, observation):
    return np.int32(2 if observation["grid"][0, 0] == 2 else 0)


def _assert_trees_equal(a, b, path=""):
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), path
    for k in a:
      _assert_trees_equal(a[k], b[k], f"{path}/{k}")
    return
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, path
  if a.dtype.kind not in "OUS":
    assert a.dtype == b.dtype, (path, a.dtype, b.dtype)
  np.testing.assert_array_equal(a, b, err_msg=path)


def test_rollout_is_rlds_shaped_and_tokenizes():
  env = CountdownEnv()
  episode = E.rollout(env, PressTwo(), seed=7)
  steps = episode["steps"]
  # Actions at t=0,1 (grid 0,1), action 2 at t=2 terminates: 3 actions + final observation.
  assert E.num_actions(episode) == 3
  np.testing.assert_array_equal(steps["action"], [0, 0, 2, 0])
  np.testing.assert_array_equal(steps["reward"], [-0.25, -0.25, 1.0, 0.0])
  np.testing.assert_array_equal(steps["discount"], [1, 1, 0, 0])
  np.testing.assert_array_equal(steps["is_first"], [1, 0, 0, 0])
  np.testing.assert_array_equal(steps["is_last"], [0, 0, 0, 1])
  np.testing.assert_array_equal(steps["is_terminal"], [0, 0, 0, 1])
  assert steps["observation"]["pos"].shape == (4, 3)
  assert list(steps["observation"]["mission"]) == ["press two 1"] * 4
  meta = episode["episode_metadata"]
  assert (meta["task"], meta["agent"], meta["success"], meta["seed"]) == (
    "fake/countdown",
    "press_two",
    1,
    7,
  )
  assert meta["return"] == pytest.approx(0.5)
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, env.observation_spec, env.action_spec)
  text = len(T.TextTokenizer().encode("press two 1"))
  assert group.num_tokens == 3 * (text + 4 + 3 + 1 + 1)
  np.testing.assert_array_equal(
    T.detokenize_action(group.tokens[group.action_mask].reshape(3, 1), env.action_spec), [0, 0, 2]
  )


def test_truncated_rollout_is_not_terminal():
  episode = E.rollout(CountdownEnv(), policies.RandomPolicy(CountdownEnv()), seed=0)
  if episode["episode_metadata"]["success"]:
    episode = next(
      e
      for s in range(1, 50)
      if not (e := E.rollout(CountdownEnv(), policies.RandomPolicy(CountdownEnv()), s))[
        "episode_metadata"
      ]["success"]
    )
  assert E.num_actions(episode) == 6
  assert not episode["steps"]["is_terminal"].any() and episode["steps"]["discount"][-1] == 1


class GivesUpAtStepTwo(policies.Policy):
  name = "quitter"

  def reset(self, seed):
    self._t = 0

  def act(self, observation):
    self._t += 1
    if self._t == 3:
      raise policies.PolicyGaveUp("no plan")
    return np.int32(0)


def test_a_policy_that_gives_up_ends_the_episode_as_a_failure():
  episode = E.rollout(CountdownEnv(), GivesUpAtStepTwo(), seed=0)
  assert E.num_actions(episode) == 2
  assert episode["episode_metadata"]["success"] == 0
  assert episode["steps"]["is_last"][-1] and not episode["steps"]["is_terminal"].any()


def test_episode_seeds_are_stable_and_distinct():
  seeds = {E.episode_seed(0, "babyai/GoTo", i, s) for i in range(50) for s in range(3)}
  assert len(seeds) == 150
  assert E.episode_seed(0, "babyai/GoTo", 3) == E.episode_seed(0, "babyai/GoTo", 3)
  assert E.episode_seed(1, "babyai/GoTo", 3) != E.episode_seed(0, "babyai/GoTo", 3)


def test_tfds_round_trip_is_exact(tmp_path):
  env = CountdownEnv()
  written = [
    E.rollout(env, PressTwo() if s % 2 else policies.RandomPolicy(env), seed=s) for s in range(4)
  ]
  path = rlds_io.write_episodes(written, str(tmp_path), "gato_fake", "countdown")
  assert path == str(tmp_path / "gato_fake" / "countdown" / "1.0.0")
  by_dir = list(rlds_io.read_episodes(path))
  by_name = list(rlds_io.read_episodes("gato_fake/countdown", data_dir=str(tmp_path)))
  assert len(by_dir) == len(by_name) == 4
  for original, a, b in zip(written, by_dir, by_name):
    _assert_trees_equal(original, a)
    _assert_trees_equal(original, b)
  assert isinstance(by_dir[0]["steps"]["observation"]["mission"][0], str)
  assert len(list(rlds_io.read_episodes(path, limit=2))) == 2
  with pytest.raises(FileExistsError, match="already exists"):
    rlds_io.write_episodes(written, str(tmp_path), "gato_fake", "countdown")


def test_public_key_names_load_through_a_key_map(tmp_path):
  # A dataset as a public RLDS source might lay it out: other names, no discount/is_terminal,
  # no return in the metadata.
  foreign = []
  for s in range(2):
    n = 3 + s
    foreign.append(
      {
        "steps": {
          "obs": {"joint_pos": np.arange(n * 2, dtype=np.float32).reshape(n, 2)},
          "act": np.full((n, 1), 0.5, np.float32),
          "rew": np.ones(n, np.float32),
          "first": np.arange(n) == 0,
          "last": np.arange(n) == n - 1,
        },
        "episode_metadata": {"file_path": f"ep{s}.npz"},
      }
    )
  path = rlds_io.write_episodes(foreign, str(tmp_path), "public_set", "default")
  key_map = {
    "steps/observation/state": "steps/obs/joint_pos",
    "steps/action": "steps/act",
    "steps/reward": "steps/rew",
    "steps/is_first": "steps/first",
    "steps/is_last": "steps/last",
  }
  episodes = list(rlds_io.read_episodes(path, key_map=key_map, task="public/arm"))
  assert len(episodes) == 2
  steps = episodes[1]["steps"]
  assert sorted(steps) == [
    "action",
    "discount",
    "is_first",
    "is_last",
    "is_terminal",
    "observation",
    "reward",
  ]
  np.testing.assert_array_equal(
    steps["observation"]["state"], foreign[1]["steps"]["obs"]["joint_pos"]
  )
  np.testing.assert_array_equal(steps["discount"], np.ones(4, np.float32))
  meta = episodes[1]["episode_metadata"]
  assert meta["return"] == 4.0 and meta["task"] == "public/arm" and meta["file_path"] == "ep1.npz"
  with pytest.raises(KeyError, match="steps lack"):
    next(rlds_io.read_episodes(path))  # Without the map the RLDS keys are missing.
  with pytest.raises(KeyError, match="has no 'obs/nope'"):
    rlds_io.load_dataset(path, key_map={"steps/observation": "steps/obs/nope"})


def test_bad_paths_and_names_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no dataset directory"):
    rlds_io.load_builder(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="not a TFDS dataset directory"):
    rlds_io.load_builder(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no TFDS dataset 'gato_nothing/here'"):
    rlds_io.load_builder("gato_nothing/here", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no episodes"):
    rlds_io.write_episodes([], str(tmp_path), "gato_fake", "empty")
  with pytest.raises(FileNotFoundError, match="no statistics"):
    E.load_stats(str(tmp_path), "babyai/GoTo")


def test_stats_round_trip(tmp_path):
  stats = E.TaskStats("fake/countdown", 0.1, 0.2, 50, 0.3, "bot", 0.9, 0.05, 50, 1.0)
  path = E.save_stats(stats, str(tmp_path))
  assert path.endswith(os.path.join("gato_meta", "stats", "fake", "countdown.json"))
  assert E.load_stats(str(tmp_path), "fake/countdown") == stats


def test_a_baseline_record_not_naming_its_environment_version_is_reused_only_unversioned():
  env = CountdownEnv()
  legacy = {"mean_return": 3.0, "std_return": 0.5, "num_episodes": 4}  # No seed, task, version.
  assert E.recorded_baseline(legacy, env, 0, 4) == (3.0, 0.5, 4, None)
  env.version = "interval=2"
  assert E.recorded_baseline(legacy, env, 0, 4) is None
  named = E.baseline_record(env, (3.0, 0.5, 4, None))
  assert E.recorded_baseline(named, env, 0, 4) == (3.0, 0.5, 4, None)


def test_filtering_keeps_episodes_near_the_expert():
  stats = E.TaskStats(
    "t/a",
    random_return=0.0,
    random_return_std=0,
    random_episodes=50,
    expert_return=1.0,
    expert_episodes=50,
  )
  assert E.return_threshold(stats) == pytest.approx(0.8)
  kept = [r for r in (0.0, 0.79, 0.8, 0.95, 1.2) if r >= E.return_threshold(stats)]
  assert kept == [0.8, 0.95, 1.2]


def test_filtering_with_negative_returns_is_relative_to_random():
  # Pendulum-like: 0.8 * expert (-120) would reject the expert's own typical episodes.
  stats = E.TaskStats(
    "t/pendulum",
    random_return=-1200.0,
    random_return_std=0,
    random_episodes=50,
    expert_return=-150.0,
    expert_episodes=50,
  )
  assert E.return_threshold(stats) == pytest.approx(-360.0)
  returns = (-150.0, -300.0, -400.0, -1100.0)
  assert [r for r in returns if r >= E.return_threshold(stats)] == [-150.0, -300.0]


def test_filtering_refuses_undefined_anchors():
  no_expert = E.TaskStats("t/b", 0.0, 0.0, 50)
  with pytest.raises(ValueError, match="no expert return"):
    E.return_threshold(no_expert)
  worse = dataclasses.replace(no_expert, expert_return=-1.0)
  with pytest.raises(ValueError, match="does not beat random"):
    E.return_threshold(worse)
  ok = dataclasses.replace(no_expert, expert_return=1.0)
  with pytest.raises(ValueError, match="fraction"):
    E.return_threshold(ok, 1.5)


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match="'<domain>/<task>'"):
    registry.make_env("GoToRedBall")
  with pytest.raises(ValueError, match="unknown domain 'atari9'"):
    registry.make_env("atari9/Pong")
  with pytest.raises(ValueError, match="unknown babyai task 'GoToMoon'"):
    registry.make_env("babyai/GoToMoon")
  assert "babyai/BossLevel" in registry.list_tasks("babyai")
  with pytest.raises(LookupError, match="no expert is registered for domain 'fake'"):
    registry.make_expert(CountdownEnv())


def test_generation_resumes_and_is_deterministic(tmp_path, monkeypatch):
  task = "babyai/GoToRedBall"
  kwargs = dict(num_episodes=5, seed=3, shard_episodes=2, stats_episodes=4, progress=lambda _: None)
  data_seeds = [E.episode_seed(3, task, i) for i in range(5)]
  play, calls = E.play, []

  def killed_at_episode_three(env, policy, seeds, record=True):
    calls.extend(seeds)  # BabyAI plays on the host: one episode a call.
    if data_seeds[2] in seeds and kill:
      raise KeyboardInterrupt  # As if the run were killed in the middle of shard 2.
    return play(env, policy, seeds, record)

  monkeypatch.setattr(generation.episodes_lib, "play", killed_at_episode_three)
  kill = True
  with pytest.raises(KeyboardInterrupt):
    generation.generate_task(task, str(tmp_path / "a"), **kwargs)
  staging = tmp_path / "a" / "gato_meta" / "staging" / "gato_babyai" / "go_to_red_ball"
  assert (staging / "train-00000-of-00003.pkl").exists()
  assert not (staging / "train-00001-of-00003.pkl").exists()
  kill, calls[:] = False, []
  resumed = generation.generate_task(task, str(tmp_path / "a"), **kwargs)
  # Statistics were kept and shard 1 was not regenerated: only episodes 3-5 ran again.
  assert calls == data_seeds[2:]
  assert resumed.status == "generated" and resumed.episodes == 5 and not staging.exists()
  assert resumed.tokens > resumed.steps > 0
  assert resumed.expert_return > resumed.random_return
  fresh = generation.generate_task(task, str(tmp_path / "b"), **kwargs)
  assert (fresh.steps, fresh.tokens) == (resumed.steps, resumed.tokens)
  read = lambda d: list(rlds_io.read_episodes(d))
  for a, b in zip(read(resumed.dataset_dir), read(fresh.dataset_dir), strict=True):
    _assert_trees_equal(a, b)
  again = generation.generate_task(task, str(tmp_path / "a"), **kwargs)
  assert again.status == "existing" and again.tokens == resumed.tokens
  # A smaller request is served by the stored set (runs read its first episodes); a larger one
  # makes the larger set, whose first episodes are the smaller set's.
  fewer = generation.generate_task(task, str(tmp_path / "a"), **dict(kwargs, num_episodes=3))
  assert fewer.status == "existing; runs read the first 3" and fewer.episodes == 5
  calls[:] = []
  more = generation.generate_task(task, str(tmp_path / "b"), **dict(kwargs, num_episodes=7))
  assert more.status == "regenerated" and more.episodes == 7
  assert calls == [E.episode_seed(3, task, i) for i in range(7)]  # Statistics were kept.
  for a, b in zip(read(resumed.dataset_dir), read(more.dataset_dir)[:5], strict=True):
    _assert_trees_equal(a, b)
  with pytest.raises(ValueError, match="generated with"):
    generation.generate_task(task, str(tmp_path / "a"), **dict(kwargs, seed=4))
  with pytest.raises(LookupError, match="no expert"):
    generation.generate_task("dm_control/cartpole-swingup", str(tmp_path / "c"), **kwargs)


def test_a_dataset_is_made_by_one_process_at_a_time(tmp_path, monkeypatch):
  # While this process generates, another process cannot take the dataset's lock (a parallel
  # data job waits on it, then finds the data: tests/test_workdir_lock.py has the waiting).
  task, data_dir = "babyai/GoToRedBall", str(tmp_path)
  lock = tmp_path / "gato_meta" / "locks" / "gato_babyai" / "go_to_red_ball"
  take_lock = (
    f"from gato_jax import workdir_lock; workdir_lock.WorkdirLock({str(lock)!r}).acquire()"
  )
  play, refusals = E.play, []

  def play_while_another_process_tries(env, policy, seeds, record=True):
    if not refusals:
      refusals.append(run_python("-c", take_lock, check=False))
    return play(env, policy, seeds, record)

  kwargs = dict(num_episodes=2, seed=1, shard_episodes=2, stats_episodes=2, progress=lambda _: None)
  generation.ensure_stats(registry.make_env(task), data_dir, 1, 2)  # Outside the lock.
  monkeypatch.setattr(generation.episodes_lib, "play", play_while_another_process_tries)
  assert generation.generate_task(task, data_dir, **kwargs).status == "generated"
  assert refusals[0].returncode == 1 and "WorkdirLockedError" in refusals[0].stderr
  run_python("-c", take_lock)  # Let go once done: the next process takes it at once.


def test_data_and_statistics_of_a_retrained_expert_are_made_again(tmp_path, monkeypatch):
  from gato_jax.envs import babyai

  task, data_dir = "babyai/GoToRedBall", str(tmp_path)
  kwargs = dict(num_episodes=3, seed=1, shard_episodes=2, stats_episodes=3, progress=lambda _: None)
  monkeypatch.setattr(babyai.BabyAIBotPolicy, "version", "v1")
  first = generation.generate_task(task, data_dir, **kwargs)
  assert first.status == "generated"
  assert E.load_stats(data_dir, task).expert_version == "v1"
  assert generation.generate_task(task, data_dir, **kwargs).status == "existing"
  random_before = E.load_stats(data_dir, task).random_return
  measured, measure = [], E.measure_returns
  monkeypatch.setattr(E, "measure_returns", lambda *a: measured.append(a[1].version) or measure(*a))
  monkeypatch.setattr(babyai.BabyAIBotPolicy, "version", "v2")  # As if the expert were retrained.
  again = generation.generate_task(task, data_dir, **kwargs)
  assert again.status == "regenerated" and again.episodes == 3
  stats = E.load_stats(data_dir, task)
  assert measured == ["v2"] and stats.expert_version == "v2"
  assert stats.random_return == random_before  # The random baseline does not depend on it.
  record = tmp_path / "gato_meta" / "generated" / "gato_babyai" / "go_to_red_ball.json"
  assert json.loads(record.read_text())["agent_version"] == "v2"
  # A changed environment (as DM Control's action repeat changed the interval of a timestep)
  # makes the data and both baselines stale.
  assert stats.env_version is None and json.loads(record.read_text())["env_version"] is None
  monkeypatch.setattr(babyai.BabyAIEnv, "version", "interval=2")
  measured.clear()
  changed = generation.generate_task(task, data_dir, **kwargs)
  assert changed.status == "regenerated"
  stats = E.load_stats(data_dir, task)
  assert stats.env_version == "interval=2" and len(measured) == 2 and "v2" in measured
  assert json.loads(record.read_text())["env_version"] == "interval=2"


def test_importing_gato_jax_data_and_envs_does_not_import_tensorflow():
  code = (
    "import sys; import gato_jax, gato_jax.tokenizer, gato_jax.data.stats,"
    " gato_jax.sources.episodes, gato_jax.sources.generation, gato_jax.data.rlds_io, gato_jax.envs.babyai,"
    " gato_jax.envs.registry; assert 'tensorflow' not in sys.modules, 'TF imported'"
  )
  run_python("-c", code)


def test_a_rendered_task_takes_its_state_tasks_statistics_without_rollouts(tmp_path):
  class RendersCartPole(CountdownEnv):
    name = "fake_pixels/cartpole"
    state_task = "gymnax/CartPole-v1"

    def reset(self, seed):
      raise AssertionError("the baselines must not be measured on the rendered task")

  data_dir = str(tmp_path)
  stats = generation.ensure_stats(RendersCartPole(), data_dir, seed=2, num_episodes=4)
  state = E.load_stats(data_dir, "gymnax/CartPole-v1")  # Measured on the state task.
  assert state.random_episodes == 4 and state.random_return > 0
  assert stats == dataclasses.replace(state, task="fake_pixels/cartpole")
  assert E.load_stats(data_dir, "fake_pixels/cartpole") == stats


def test_a_progress_line_is_ended_once_before_what_follows(capsys):
  generation.end_progress()  # None open: nothing to end.
  generation.print_progress("task: episode 1/2")
  generation.print_progress("task: episode 2/2")
  generation.end_progress()
  generation.end_progress()
  err = capsys.readouterr().err
  assert err == "\r" + "task: episode 1/2".ljust(79) + "\r" + "task: episode 2/2".ljust(79) + "\n"


# gymnax tasks play as one on-device batch (`episodes.play`); their experts are pure-JAX policies.


@pytest.fixture
def expert_workdir(tmp_path, monkeypatch):
  """An empty gymnax expert cache that `registry.make_expert` reads (not the session's)."""
  from gato_jax.experts import gymnax_experts

  workdir = str(tmp_path / "experts")
  monkeypatch.setattr(gymnax_experts, "DEFAULT_WORKDIR", workdir)
  return workdir


def _save_untrained_expert(workdir, env_id, summary=None, deterministic=True, **config):
  """A PPO expert with initial parameters: short, valid episodes, no training."""
  import jax

  from gato_jax.experts import gymnax_experts, ppo

  config = ppo.PPOConfig(hidden_sizes=(8,), **config)
  params = ppo.init_params(env_id, config, jax.random.key(0))
  summary = dict(summary or {}, deterministic=deterministic)
  gymnax_experts.save_expert(workdir, env_id, config, params, summary)


def _assert_same_episodes(a, b):
  """Trees equal, observations up to float32 rounding (vectorised sin/cos on device)."""
  assert a["episode_metadata"] == b["episode_metadata"]
  obs_a, obs_b = a["steps"]["observation"], b["steps"]["observation"]
  for key in obs_a:
    assert obs_a[key].dtype == obs_b[key].dtype and obs_a[key].shape == obs_b[key].shape
    np.testing.assert_allclose(obs_a[key], obs_b[key], rtol=1e-5, atol=1e-5)
  _assert_trees_equal(
    {k: v for k, v in a["steps"].items() if k != "observation"},
    {k: v for k, v in b["steps"].items() if k != "observation"},
  )


def _assert_valid_episode(episode, length, seed):
  steps, meta = episode["steps"], episode["episode_metadata"]
  assert E.num_actions(episode) == length and steps["reward"].shape == (length + 1,)
  np.testing.assert_array_equal(steps["is_first"], np.arange(length + 1) == 0)
  np.testing.assert_array_equal(steps["is_last"], np.arange(length + 1) == length)
  assert steps["reward"][-1] == 0 and meta["seed"] == seed
  assert meta["return"] == np.float32(np.sum(steps["reward"], dtype=np.float64))


def test_gymnax_episodes_play_as_a_batch_as_the_host_loop_plays_them(expert_workdir):
  _save_untrained_expert(expert_workdir, "CartPole-v1")
  env = registry.make_env("gymnax/CartPole-v1")
  expert = registry.make_expert(env)
  seeds = [E.episode_seed(0, env.name, i) for i in range(5)]
  played = {}
  for policy in (expert, policies.RandomPolicy(env)):
    played[policy.name] = E.play(env, policy, seeds)
    agent = runner.PolicyAgent(lambda _, p=policy: p, name=policy.name)
    host = runner.run_episodes(runner.HostBatch([env]), agent, seeds, record=True)
    for a, b in zip(played[policy.name], host, strict=True):
      assert (a.seed, a.length, a.episode_return) == (b.seed, b.length, b.episode_return)
      _assert_valid_episode(a.episode, a.length, a.seed)
      _assert_same_episodes(a.episode, b.episode)
  # An episode is its seed's alone: played without the others, in another row, it is the same.
  alone = E.play(env, expert, seeds[3:4])[0]
  _assert_trees_equal(alone.episode, played[expert.name][3].episode)
  assert E.rollout(env, expert, seeds[3])["episode_metadata"]["seed"] == seeds[3]


def test_gymnax_generation_resumes_and_is_deterministic(expert_workdir, tmp_path, monkeypatch):
  _save_untrained_expert(expert_workdir, "CartPole-v1")
  task = "gymnax/CartPole-v1"
  # 70 episodes in shards of 68: the first shard plays 64 side by side, then 4; the second 2.
  kwargs = dict(
    num_episodes=70, seed=3, shard_episodes=68, stats_episodes=4, progress=lambda _: None
  )
  data_seeds = [E.episode_seed(3, task, i) for i in range(70)]
  play, calls = E.play, []

  def killed_in_shard_two(env, policy, seeds, record=True):
    calls.append(list(seeds))
    if data_seeds[68] in seeds and kill:
      raise KeyboardInterrupt
    return play(env, policy, seeds, record)

  monkeypatch.setattr(generation.episodes_lib, "play", killed_in_shard_two)
  kill = True
  with pytest.raises(KeyboardInterrupt):
    generation.generate_task(task, str(tmp_path / "a"), **kwargs)
  data_calls = [c for c in calls if c[0] in data_seeds]  # Not the statistics' rollouts.
  assert data_calls == [data_seeds[:64], data_seeds[64:68], data_seeds[68:]]
  kill, calls[:] = False, []
  resumed = generation.generate_task(task, str(tmp_path / "a"), **kwargs)
  assert calls == [data_seeds[68:]]  # Statistics and shard 1 were kept.
  assert resumed.status == "generated" and resumed.episodes == 70
  fresh = generation.generate_task(task, str(tmp_path / "b"), **kwargs)
  read = lambda d: list(rlds_io.read_episodes(d))
  stored = read(resumed.dataset_dir)
  for a, b in zip(stored, read(fresh.dataset_dir), strict=True):
    _assert_trees_equal(a, b)
  assert [int(e["episode_metadata"]["seed"]) for e in stored] == data_seeds
  lengths = [E.num_actions(e) for e in stored]
  assert resumed.steps == fresh.steps == sum(lengths) and resumed.tokens > resumed.steps
  for episode, seed, length in zip(stored, data_seeds, lengths):
    _assert_valid_episode(episode, length, seed)
  # Stored as the host loop's episodes are: the same fields, dtypes and shapes (and values).
  env = registry.make_env(task)
  expert = registry.make_expert(env)
  agent = runner.PolicyAgent(lambda _: expert, name=expert.name)
  host = runner.run_episodes(runner.HostBatch([env]), agent, data_seeds[:3], record=True)
  for episode, outcome in zip(stored, host):
    assert outcome.length == E.num_actions(episode)
    _assert_same_episodes(episode, outcome.episode)


def test_statistics_take_the_baselines_the_experts_training_measured(
  expert_workdir, tmp_path, monkeypatch
):
  env = registry.make_env("gymnax/CartPole-v1")
  record = lambda mean, **changes: dict(E.baseline_record(env, (mean, 1.5, 50, None)), **changes)
  _save_untrained_expert(
    expert_workdir, "CartPole-v1", {"random": record(20.0), "expert": record(400.0)}
  )
  expert = registry.make_expert(env)
  measured = []

  def measure_returns(env, policy, seed, num_episodes, stream):
    measured.append((policy.name, seed, num_episodes))
    return (-1.0, 0.0, num_episodes, None)

  monkeypatch.setattr(E, "measure_returns", measure_returns)
  ensure = lambda name, seed, n: generation.ensure_stats(env, str(tmp_path / name), seed, n)
  stats = ensure("a", 0, 50)
  assert not measured
  assert (stats.random_return, stats.random_return_std, stats.random_episodes) == (20.0, 1.5, 50)
  assert (stats.expert_return, stats.expert_episodes, stats.expert_agent) == (
    400.0,
    50,
    "ppo_expert",
  )
  assert stats.expert_version == expert.version and stats.env_version is None
  assert E.load_stats(str(tmp_path / "a"), env.name) == stats
  # Fewer episodes than the summary's: its 50 stand; other seeds or more episodes: measured.
  assert (ensure("b", 0, 10).random_episodes, measured) == (50, [])
  assert ensure("c", 1, 50).random_return == -1.0
  assert ensure("d", 0, 51).expert_return == -1.0
  assert measured == [
    ("random", 1, 50),
    ("ppo_expert", 1, 50),
    ("random", 0, 51),
    ("ppo_expert", 0, 51),
  ]
  # Summaries written before their records named seed, task and version were measured from seed 0;
  # naming no version, they stand for an environment without one, as CartPole is.
  legacy = {"mean_return": 30.0, "std_return": 2.0, "num_episodes": 50}
  summary = {"random": legacy, "expert": dict(legacy, mean_return=300.0)}
  _save_untrained_expert(expert_workdir, "CartPole-v1", summary)
  stats, measured[:] = ensure("e", 0, 50), []
  assert (stats.random_return, stats.expert_return, measured) == (30.0, 300.0, [])
  # Another environment version or task: measured.
  summary = {"random": record(20.0, env_version="v2"), "expert": record(400.0, task="gymnax/x")}
  _save_untrained_expert(expert_workdir, "CartPole-v1", summary)
  stats = ensure("f", 0, 50)
  assert (stats.random_return, stats.expert_return, len(measured)) == (-1.0, -1.0, 2)
  # An expert that samples where its summary's baselines were measured acting greedily: measured.
  _save_untrained_expert(
    expert_workdir, "CartPole-v1", {"random": record(20.0), "expert": record(400.0)}
  )
  from gato_jax.experts import gymnax_experts

  sampling = gymnax_experts.load_expert(expert_workdir, "CartPole-v1", deterministic=False)
  assert gymnax_experts.ExpertPolicy(sampling).summary == {}
  assert registry.make_expert(env).summary["expert"]["mean_return"] == 400.0


def test_minatar_experts_play_through_the_same_batched_path(expert_workdir):
  _save_untrained_expert(expert_workdir, "Breakout-MinAtar", deterministic=False)
  env = registry.make_env("gymnax/Breakout-MinAtar")
  expert = registry.make_expert(env)
  assert not expert.expert.deterministic  # Samples its actions, as MinAtar's experts do.
  seeds = [E.episode_seed(0, env.name, i) for i in range(3)]
  outcomes = E.play(env, expert, seeds)
  for outcome in outcomes:
    episode = outcome.episode
    _assert_valid_episode(episode, outcome.length, outcome.seed)
    grid, action = episode["steps"]["observation"]["grid"], episode["steps"]["action"]
    assert grid.shape == (outcome.length + 1, 10, 10) and grid.dtype == np.int32
    assert grid.min() >= 0 and grid.max() < env.observation_spec["grid"].num_values
    assert (
      action.dtype == np.int32 and 0 <= action.min() and action.max() < env.action_spec.num_values
    )
    assert generation.count_tokens(episode, env) == outcome.length * (100 + 1 + 1)
  # Sampled actions follow the episode's seed alone: the same episodes again, and alone.
  for again, outcome in zip(E.play(env, expert, seeds), outcomes):
    _assert_trees_equal(again.episode, outcome.episode)
  _assert_trees_equal(E.play(env, expert, seeds[1:2])[0].episode, outcomes[1].episode)
