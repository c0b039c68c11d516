"""Evaluation: score arithmetic, IQM and bootstrap, rollouts with scripted and model agents,
cache vs. full forward pass, context trimming, reports, and errors on bad input."""

import dataclasses
import functools
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.envs import base, gymnax_envs, policies, registry, runner
from gato_jax.evaluation import context, evaluator, model_agent, prompts, reports, rollouts, scores
from gato_jax.inference.decode import mask_to_range
from gato_jax.model import Gato, ModelConfig, batch_from_token_groups, init_variables
from gato_jax.tokenizer.timestep import tokenize_episode

from helpers.checkpoints import save_initial_state

CFG = ModelConfig.from_size("tiny", max_decode_length=96)


@pytest.fixture(scope="module")
def params():
  return nn.unbox(jax.jit(lambda r: init_variables(CFG, r))(jax.random.key(7)))["params"]


def _config(data_dir, **eval_overrides):
  from gato_jax.configs import gato

  config = gato.get_config("tiny")
  config.data.data_dir = str(data_dir)
  config.model.max_decode_length = CFG.max_decode_length
  for key, value in eval_overrides.items():
    config.eval[key] = value
  return config


# --- Scores -------------------------------------------------------------------------------------


def test_normalized_score_arithmetic():
  stats = E.TaskStats(
    "gymnax/CartPole-v1",
    random_return=10.0,
    random_return_std=0.0,
    random_episodes=5,
    expert_return=110.0,
  )
  np.testing.assert_allclose(
    scores.normalized_scores([10, 60, 110, 160, 0], stats), [0.0, 0.5, 1.0, 1.5, -0.1]
  )
  # Negative returns (Pendulum-like): the scale is the expert's margin over random.
  stats = E.TaskStats("gymnax/Pendulum-v1", -1200.0, 0.0, 5, expert_return=-150.0)
  np.testing.assert_allclose(scores.normalized_scores([-150, -675, -1200], stats), [1, 0.5, 0])
  # Agrees with the data pipeline's filter: the threshold at fraction f scores f.
  assert scores.normalized_scores([E.return_threshold(stats, 0.3)], stats)[0] == pytest.approx(0.3)


def test_missing_or_degenerate_expert_scores_are_clear_errors(tmp_path):
  no_expert = E.TaskStats("dm_control/cartpole-swingup", 3.0, 1.0, 5)
  with pytest.raises(ValueError, match="no recorded expert return"):
    scores.normalized_scores([1.0], no_expert)
  worse = E.TaskStats("gymnax/CartPole-v1", 20.0, 1.0, 5, expert_return=20.0)
  with pytest.raises(ValueError, match="does not beat random"):
    scores.normalized_scores([1.0], worse)
  # No statistics file at all: evaluation names the generator to run.
  config = _config(tmp_path, tasks="gymnax/CartPole-v1", prompt_tokens=0)
  with pytest.raises(FileNotFoundError, match="generate_data"):
    evaluator.evaluate_task("gymnax/CartPole-v1", config, CFG, None)
  # Statistics without an expert fail before any rollout.
  E.save_stats(E.TaskStats("gymnax/CartPole-v1", 20.0, 1.0, 5), str(tmp_path))
  with pytest.raises(ValueError, match="no recorded expert return"):
    evaluator.evaluate_task("gymnax/CartPole-v1", config, CFG, None)


def test_unknown_tasks_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown task 'babyai/NoSuchLevel'"):
    evaluator.eval_tasks(_config(tmp_path, tasks="babyai/NoSuchLevel"))
  with pytest.raises(ValueError, match="unknown domain 'atlantis'"):
    evaluator.eval_tasks(_config(tmp_path, tasks="atlantis/Swim"))
  with pytest.raises(ValueError, match="<domain>/<task>"):
    evaluator.eval_tasks(_config(tmp_path, tasks="CartPole-v1"))
  assert evaluator.eval_tasks(_config(tmp_path, tasks="gymnax/CartPole-v1, babyai/GoToObj")) == [
    "gymnax/CartPole-v1",
    "babyai/GoToObj",
  ]


def test_episodes_per_task_or_domain_override_the_default(tmp_path):
  config = _config(tmp_path, episodes=20, task_episodes="dm_control_pixels=5, babyai/GoToObj=7")
  assert evaluator.task_episodes(config, "dm_control_pixels/walker-stand") == 5
  assert evaluator.task_episodes(config, "babyai/GoToObj") == 7
  assert evaluator.task_episodes(config, "babyai/GoToLocal") == 20
  config = _config(tmp_path, task_episodes="babyai=0")
  with pytest.raises(ValueError, match="entry 'babyai=0' must be"):
    evaluator.task_episodes(config, "babyai/GoToObj")


def test_iqm_on_known_numbers():
  assert scores.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # Middle four of 1..8.
  assert scores.iqm([0, 0, 1, 1, 100]) == pytest.approx(2 / 3)  # One cut from each end.
  assert scores.iqm([3.0]) == 3.0
  scipy_stats = pytest.importorskip("scipy.stats")
  x = np.random.default_rng(0).normal(size=37)
  assert scores.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25))


def _numpy_bootstrap_ci(per_task, aggregate, num_resamples, seed=0):
  """The project's numpy bootstrap before rliable, kept as the reference rliable must agree with."""
  rng = np.random.default_rng(seed)
  means = np.empty((num_resamples, len(per_task)))
  for t, task_scores in enumerate(per_task):
    picks = rng.integers(0, task_scores.size, (num_resamples, task_scores.size))
    means[:, t] = task_scores[picks].mean(axis=1)
  fn = np.mean if aggregate == "mean" else scores.iqm
  return tuple(np.percentile([fn(row) for row in means], [2.5, 97.5]))


def test_stratified_bootstrap():
  # Constant episodes: every replicate is the same, so the interval is a point.
  per_task = [np.full(10, 0.2), np.full(10, 0.9), np.full(10, 0.5)]
  for name in scores.AGGREGATES:
    low, high = scores.stratified_bootstrap_ci(per_task, name, num_resamples=200)
    expected = scores.AGGREGATES[name]([s.mean() for s in per_task])
    assert low == pytest.approx(expected) and high == pytest.approx(expected)
  # One task of 100 fair coin flips: the mean's 95% CI is 0.5 +- 1.96 * 0.05.
  coins = np.tile([0.0, 1.0], 50)
  assert scores.stratified_bootstrap_ci([coins], "mean", 4000, seed=1) == (0.4, 0.6)
  # Resampling stays within each task (stratified): a task whose episodes are all 1 never
  # contributes anything else.
  assert scores.stratified_bootstrap_ci([np.ones(100), coins], "mean", 2000) == (0.7, 0.8)
  # Tasks with different episode counts (pixel tasks are evaluated with fewer) are aggregated
  # over their task means: the all-ones task still contributes exactly 1 to every replicate.
  low, high = scores.stratified_bootstrap_ci([np.ones(5), coins], "mean", 2000)
  assert 0.7 <= low < 0.75 < high <= 0.8
  with pytest.raises(ValueError, match="at least one episode"):
    scores.stratified_bootstrap_ci([np.ones(5), np.ones(0)], "mean")


def test_bootstrap_with_rliable_reproduces_the_numpy_intervals():
  # rliable draws its indices from numpy's global RNG (np.random.choice), the numpy version drew
  # them from default_rng(seed): the replicates differ, so the new values are pinned exactly and
  # agree with the old ones to within the bootstrap's own noise at 4000 replicates.
  rng = np.random.default_rng(0)
  per_task = [rng.normal(level, 0.3, 20) for level in (0.2, 0.5, 0.9, 1.1, 0.7)]
  before = np.random.get_state()[1].copy()
  pinned = {
    "mean": (0.6497007626663972, 0.7598540286986861),
    "iqm": (0.6653458351608187, 0.8003405952305933),
  }
  for name, interval in pinned.items():
    got = scores.stratified_bootstrap_ci(per_task, name, 4000)
    assert got == pytest.approx(interval, abs=1e-12)
    assert got == pytest.approx(_numpy_bootstrap_ci(per_task, name, 4000), abs=0.003)
  np.testing.assert_array_equal(np.random.get_state()[1], before)  # Global RNG restored.


def test_probability_of_improvement_and_profiles(tmp_path):
  rng = np.random.default_rng(0)
  x = {f"a/{i}": rng.normal(level, 0.3, 20) for i, level in enumerate((0.2, 0.5, 0.9))}
  y = {task: s - 0.2 for task, s in x.items()}
  out = scores.probability_of_improvement(x, y, num_resamples=200)
  assert out["tasks"] == sorted(x)
  assert out["ci"][0] <= out["probability"] <= out["ci"][1]
  assert scores.probability_of_improvement(x, x, 50)["probability"] == pytest.approx(0.5)
  # Per task, the Mann-Whitney statistic: P(x > y) over every pair of episodes.
  one = {"a/0": np.array([1.0, 2.0, 3.0])}
  other = {"a/0": np.array([0.0, 2.5]), "b/0": np.zeros(4)}
  assert scores.probability_of_improvement(one, other, 20)["probability"] == pytest.approx(4 / 6)
  # Tasks with fewer episodes (pixel tasks) and tasks only one run has.
  x["p/pixels"], y["p/pixels"] = rng.normal(0.5, 0.3, 10), rng.normal(0.5, 0.3, 7)
  y["b/only_y"] = np.zeros(20)
  out = scores.probability_of_improvement(x, y, num_resamples=200)
  assert out["tasks"] == sorted(x) and out["ci"][0] <= out["probability"] <= out["ci"][1]
  path = reports.plot_profiles({"x": x, "y": y}, str(tmp_path / "profiles.png"), 50)
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no task in common"):
    reports.plot_profiles({"x": x, "z": {"c/0": np.ones(3)}}, str(tmp_path / "none.png"), 10)


def test_aggregate_counts_tasks_above_thresholds():
  scores_in = {"a/x": [0.4, 0.6], "a/y": [0.8, 0.8], "a/z": [1.0, 1.2], "a/w": [0.1, 0.1]}
  out = scores.aggregate(scores_in, num_resamples=50)
  # Task means 0.5, 0.8, 1.1, 0.1.
  assert out["num_tasks"] == 4
  assert out["mean"] == pytest.approx(0.625)
  assert out["iqm"] == pytest.approx(0.65)
  assert out["optimality_gap"] == pytest.approx(0.4)  # 1 - mean(0.5, 0.8, 1.0, 0.1).
  assert (out["above_50"], out["above_80"], out["above_100"]) == (3, 2, 1)
  assert out["above_50_fraction"] == 0.75
  assert out["mean_ci"] == pytest.approx([0.575, 0.675])
  per_task = [np.asarray(v) for _, v in sorted(scores_in.items())]
  for name in scores.AGGREGATES:  # One shared bootstrap gives each aggregate's own interval.
    assert out[f"{name}_ci"] == list(scores.stratified_bootstrap_ci(per_task, name, 50))
  # Different episode counts per task: every task weighs the same, through its own mean.
  out = scores.aggregate({"a/x": [0.4, 0.6], "a/y": [0.8] * 6}, num_resamples=50)
  assert out["mean"] == pytest.approx(0.65)
  assert 0.6 <= out["mean_ci"][0] <= 0.65 <= out["mean_ci"][1] <= 0.7


# --- Scripted and expert policies in place of the model ----------------------------------------


class CartPoleController(policies.Policy):
  """Pushes the cart towards the side the pole falls to (a scripted baseline, no training)."""

  name = "scripted_cartpole"

  def __init__(self, env):
    del env

  def act(self, observation):
    _, _, angle, angular_velocity = observation["state"]
    return np.int32(angle + 0.5 * angular_velocity > 0)


def test_scripted_policy_reproduces_recorded_score_on_gymnax():
  make_env = lambda: gymnax_envs.GymnaxEnvironment("CartPole-v1", max_episode_steps=60)
  env = make_env()
  seeds = rollouts.eval_seeds(env.name, 5, base_seed=0)
  # Record the scripted "expert" one episode at a time, as the data generator does.
  expert = [E.rollout(env, CartPoleController(env), s) for s in seeds]
  random = [E.rollout(env, policies.RandomPolicy(env), s) for s in seeds[:3]]
  expert_mean, *_ = E.summarize_returns(expert)
  random_mean, random_std, n, _ = E.summarize_returns(random)
  stats = E.TaskStats(
    env.name,
    random_mean,
    random_std,
    n,
    expert_agent="scripted_cartpole",
    expert_return=expert_mean,
    expert_episodes=5,
  )
  assert expert_mean > random_mean

  agent = runner.PolicyAgent(CartPoleController)
  outcomes, timing = rollouts.run_task(runner.host_batch(make_env), agent, 5, batch_size=2, seed=0)
  assert [o.seed for o in outcomes] == seeds
  np.testing.assert_array_equal(
    [o.episode_return for o in outcomes], [e["episode_metadata"]["return"] for e in expert]
  )
  task = scores.score_task(env.name, outcomes, stats)
  assert task.summary()["normalized_score"] == pytest.approx(1.0)
  assert task.summary()["success_rate"] is None  # CartPole defines no success.
  assert agent.name == "scripted_cartpole"
  assert timing.env_steps == sum(o.length for o in outcomes)


def test_babyai_bot_reaches_expert_score_through_evaluate_task(tmp_path):
  from gato_jax.sources import generation

  task = "babyai/GoToRedBall"
  env = registry.make_env(task)
  stats = generation.ensure_stats(env, str(tmp_path), seed=0, num_episodes=6)
  config = _config(tmp_path, episodes=6, batch_size=3, prompt_tokens=0)
  task_scores, loaded, timing = evaluator.evaluate_task(
    task, config, CFG, None, agent=runner.PolicyAgent(registry.make_expert)
  )
  assert loaded == stats
  summary = task_scores.summary()
  assert summary["success_rate"] == 1.0
  # Other seeds than the statistics' episodes, so close to (not exactly) 100% of the expert.
  assert 0.85 <= summary["normalized_score"] <= 1.15
  assert timing["agent_calls"] >= max(o for o in task_scores.lengths)


def test_gave_up_ends_the_episode_as_a_failure():
  class GivesUp(policies.Policy):
    name = "quitter"

    def __init__(self, env):
      self.steps = 0

    def reset(self, seed):
      self.steps = 0

    def act(self, observation):
      self.steps += 1
      if self.steps > 3:
        raise policies.PolicyGaveUp("stuck")
      return np.int32(0)

  make_env = lambda: gymnax_envs.GymnaxEnvironment("CartPole-v1", max_episode_steps=50)
  outcomes, _ = rollouts.run_task(
    runner.host_batch(make_env), runner.PolicyAgent(GivesUp), 3, batch_size=2
  )
  assert all(o.gave_up and o.success == 0 and o.length <= 3 for o in outcomes)


def test_host_batch_starts_every_rows_step_before_waiting_for_any():
  log = []

  class InAnotherProcess(base.Environment):
    """Steps as a renderer child does: step_async sends, step_wait receives."""

    observation_spec = {"x": T.ContinuousSpec(())}
    action_spec = T.DiscreteSpec((), num_values=2)
    max_episode_steps = 10

    def __init__(self, row):
      self.row, self.t, self.pending = row, 0, None

    def reset(self, seed):
      self.t = 0
      return {"x": np.float32(0)}

    def step(self, action):
      raise AssertionError("the batch must use step_async / step_wait")

    def step_async(self, action):
      log.append(("start", self.row))
      self.pending = int(action)

    def step_wait(self):
      log.append(("wait", self.row))
      self.t += 1
      return base.StepResult({"x": np.float32(self.t)}, float(self.pending), False, self.t >= 10)

  batch = runner.HostBatch([InAnotherProcess(row) for row in range(3)])
  batch.reset([0, 1, 2])
  rewards, terminated, truncated, _ = batch.step([1, 1, 0], np.array([True, False, True]))
  assert sorted(log[:2]) == [("start", 0), ("start", 2)] and log[2:] == [("wait", 0), ("wait", 2)]
  assert rewards == [1.0, None, 0.0] and terminated == [False, None, False]
  assert batch.observation(0) == {"x": 1.0} and batch.observation(1) == {"x": 0.0}


# --- The model agent: cache vs. full forward pass, trimming -------------------------------------


class CountingEnv(base.Environment):
  """A cheap environment whose observations differ in length between episodes.

  Observation: a "mission" of 1-4 text ids fixed per episode and a 2-vector state; 3 discrete
  actions; reward 1 when the action matches the state's sign pattern; ends after 4-9 steps.
  """

  name = "toy/counting"
  observation_spec = {"mission": T.TextSpec(), "state": T.ContinuousSpec((2,))}
  action_spec = T.DiscreteSpec((), num_values=3)

  def reset(self, seed):
    self._rng = np.random.default_rng(seed)
    self._mission = self._rng.integers(5, 30000, 1 + seed % 4).astype(np.int32)
    self.max_episode_steps = int(4 + seed % 6)
    self._t = 0
    return self._observation()

  def _observation(self):
    self._state = self._rng.standard_normal(2).astype(np.float32)
    return {"mission": self._mission, "state": self._state}

  def step(self, action):
    target = int(self._state[0] > 0) + int(self._state[1] > 0)
    reward = float(int(action) == target)
    self._t += 1
    return base.StepResult(self._observation(), reward, False, self._t >= self.max_episode_steps)


def _demo():
  """A tokenized toy episode to prompt with (8 tokens per timestep with a 4-id mission)."""
  obs = {
    "mission": np.tile(np.arange(100, 104, dtype=np.int32), (5, 1)),
    "state": np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2),
  }
  return tokenize_episode(
    obs, np.arange(5, dtype=np.int32) % 3, CountingEnv.observation_spec, CountingEnv.action_spec
  )


@functools.partial(jax.jit, static_argnames=("model",))
def _last_logits(params, batch, *, model):
  return model.apply({"params": params}, batch)[:, -1]


class FullForwardAgent(model_agent.ModelAgent):
  """The reference: no cache; every action token from a full forward pass over the context.

  It shares the ModelAgent's bookkeeping (prompt, kept timesteps, trimming), so both agents see
  the same context at every step, and checks that context on the way.
  """

  def _action_ids(self, rebuild, length):
    groups = [row.group() for row in self.rows]
    for row, group in zip(self.rows, groups):
      assert group.num_tokens <= self.max_context
      if row.prompt is not None:  # The prompt always leads the context, untouched.
        np.testing.assert_array_equal(group.tokens[: row.prompt.num_tokens], row.prompt.tokens)
    ids = []
    for low, high in T.action_token_id_ranges(self.action_spec):
      # One padded length for every call: a single compilation.
      batch = batch_from_token_groups(
        groups, self.model_config.max_decode_length, 0, self.model_config.patch_dim, pad_side="left"
      )
      logits = _last_logits(self.params, batch, model=Gato(self.model_config))
      step_ids = np.asarray(jnp.argmax(mask_to_range(logits, low, high), axis=-1), np.int32)
      ids.append(step_ids)
      groups = [context.with_action(g, [i]) for g, i in zip(groups, step_ids)]
    return np.stack(ids, axis=1)


class Recorder(runner.Agent):
  """Wraps an agent and records every batch of actions it returns."""

  def __init__(self, inner):
    self.inner, self.log = inner, []
    self.name = inner.name

  def setup(self, envs):
    self.inner.setup(envs)

  def begin_episode(self, row, seed):
    self.inner.begin_episode(row, seed)

  def end_episode(self, row):
    self.inner.end_episode(row)

  def act(self, observations):
    actions = self.inner.act(observations)
    self.log.append([None if a is None else int(a) for a in actions])
    return actions


@pytest.mark.parametrize("encoding", ["none", "rope"])
def test_cached_rollout_matches_full_forward_rollout(params, encoding):
  demo = _demo()
  sampler = prompts.PromptSampler([demo], max_tokens=24, task="toy")  # 3 whole timesteps.
  runs = {}
  # A 64-token context: the episodes outgrow it (same parameters, a shorter cache).
  config = dataclasses.replace(CFG, max_decode_length=64, position_encoding=encoding)
  for name, cls in (("cached", model_agent.ModelAgent), ("full", FullForwardAgent)):
    agent = cls(config, params, sampler, headroom=0.25)
    recorder = Recorder(agent)
    envs = [CountingEnv() for _ in range(3)]
    outcomes = runner.run_episodes(runner.HostBatch(envs), recorder, seeds=list(range(7)))
    runs[name] = (recorder.log, outcomes, agent)
  (cached_log, cached_out, cached_agent), (full_log, full_out, _) = runs["cached"], runs["full"]
  assert cached_log == full_log
  assert cached_out == full_out
  # Trimming and refills really happened, and rows started episodes at different times (mixed
  # observation lengths, idle rows at the end).
  assert cached_agent.num_trimmed > 0 and cached_agent.num_rebuilds > 7
  assert len(cached_log) < sum(o.length for o in cached_out)


class LongCountingEnv(CountingEnv):
  """CountingEnv with 28-32-step episodes: ~270 tokens each, several windows of a 64-token cache;
  rows start their episodes at different steps."""

  def reset(self, seed):
    observation = super().reset(seed)
    self.max_episode_steps = 28 + seed % 5
    return observation


def test_sliding_memory_never_refills(params):
  sampler = prompts.PromptSampler([_demo()], max_tokens=24, task="toy", prompt_from="start")
  config = dataclasses.replace(CFG, max_decode_length=64)
  agent = model_agent.ModelAgent(config, params, sampler, memory="sliding")
  recorder = Recorder(agent)
  envs = [LongCountingEnv() for _ in range(3)]
  outcomes = runner.run_episodes(runner.HostBatch(envs), recorder, seeds=list(range(7)))
  assert sorted(o.length for o in outcomes) == sorted(28 + s % 5 for s in range(7))
  assert agent.model_config.decode_cache == "sliding" and agent.num_calls >= 70
  assert agent.num_rebuilds == 0 and agent.num_trimmed == 0
  assert all(a in (0, 1, 2) for step in recorder.log for a in step if a is not None)
  # The refill memory on the same episodes refills again and again.
  refill = model_agent.ModelAgent(config, params, sampler)
  runner.run_episodes(runner.HostBatch(envs), refill, seeds=list(range(7)))
  assert refill.num_rebuilds > 14
  with pytest.raises(ValueError, match="unknown eval.memory 'xl'"):
    model_agent.ModelAgent(config, params, memory="xl")


def _observations(seed, num_steps):
  """A CountingEnv episode's observations (they do not depend on the actions)."""
  env = CountingEnv()
  observations = [env.reset(seed)]
  while len(observations) < num_steps:
    observations.append(env.step(0).observation)
  return observations


def test_sliding_memory_hides_a_rows_earlier_episode(params, monkeypatch):
  logits = []

  class RecordingDecoder(model_agent.CachedDecoder):
    def act(self, *args, **kwargs):
      ids, action_logits = super().act(*args, **kwargs)
      logits.append(np.asarray(action_logits))
      return ids, action_logits

  monkeypatch.setattr(model_agent, "CachedDecoder", RecordingDecoder)
  sampler = prompts.PromptSampler([_demo()], max_tokens=24, task="toy")
  envs = [CountingEnv(), CountingEnv()]
  # Row 0 plays 6 steps of one episode and 3 of the next; row 1 one episode throughout, so the
  # cache (96 tokens) still holds row 0's first episode when its second starts.
  used = model_agent.ModelAgent(CFG, params, sampler, memory="sliding")
  used.setup(envs)
  used.begin_episode(0, 1)
  used.begin_episode(1, 2)
  first, other, second = _observations(1, 6), _observations(2, 9), _observations(3, 3)
  for t in range(6):
    used.act([first[t], other[t]])
  used.end_episode(0)
  used.begin_episode(0, 3)
  logits.clear()
  for t in range(3):
    used.act([second[t], other[6 + t]])
  after_reuse = np.stack([step[0] for step in logits])
  # A fresh agent plays row 0's second episode alone.
  fresh = model_agent.ModelAgent(CFG, params, sampler, memory="sliding")
  fresh.setup(envs)
  fresh.begin_episode(0, 3)
  logits.clear()
  for t in range(3):
    fresh.act([second[t], None])
  alone = np.stack([step[0] for step in logits])
  np.testing.assert_allclose(after_reuse, alone, atol=1e-5, rtol=1e-5)
  assert used.num_rebuilds == 0


def test_sampling_temperature(params):
  def actions(temperature, seed=0):
    agent = model_agent.ModelAgent(CFG, params, temperature=temperature, seed=seed)
    recorder = Recorder(agent)
    runner.run_episodes(runner.HostBatch([CountingEnv(), CountingEnv()]), recorder, [0, 1, 2, 3])
    return recorder.log

  greedy = actions(0.0)
  assert actions(0.0, seed=1) == greedy  # Greedy: the seed plays no part.
  # The random model's logits are nearly flat: samples differ from the argmax, and by seed.
  sampled = actions(1.0)
  assert sampled != greedy and actions(1.0, seed=1) != sampled
  assert actions(1.0) == sampled  # Seeded.


def test_context_trimming_keeps_prompt_and_whole_timesteps():
  spec = {"state": T.ContinuousSpec((4,))}
  action_spec = T.DiscreteSpec((), num_values=2)
  step = lambda v: T.tokenize_timestep(
    {"state": np.full(4, v, np.float32)}, np.int32(1), spec, action_spec
  )  # 6 tokens.
  prompt = tokenize_episode(
    {"state": np.zeros((2, 4), np.float32)}, np.zeros(2, np.int32), spec, action_spec
  )  # 12 tokens.
  row = context.RowContext(prompt=prompt, history=[step(i / 10) for i in range(5)])
  row.pending = T.tokenize_timestep({"state": np.ones(4, np.float32)}, None, spec, action_spec)
  assert row.num_tokens == 12 + 30 + 5
  kept = row.history[-2:]
  assert row.trim(budget=30, limit=40) == 3
  assert row.history == kept and row.dropped == 3 and row.num_tokens == 29
  group = row.group()
  np.testing.assert_array_equal(group.tokens[:12], prompt.tokens)
  # Prompt timesteps, two whole kept timesteps, the pending observation: 5 separators.
  assert int(np.sum(group.tokens == T.SEPARATOR_ID)) == 5
  np.testing.assert_array_equal(group.timesteps, np.repeat(np.arange(5), [6, 6, 6, 6, 5]))
  # Nothing more to drop: the budget is a target, the limit is hard.
  assert row.trim(budget=10, limit=40) == 2 and row.num_tokens == 17
  with pytest.raises(ValueError, match="eval.prompt_tokens"):
    row.trim(budget=10, limit=16)


def test_prompt_sampler_takes_whole_timesteps_from_the_start_or_the_end():
  demo = _demo()  # 5 timesteps of 8 tokens.
  prompt = prompts.PromptSampler([demo], max_tokens=20)(seed=1)
  np.testing.assert_array_equal(prompt.tokens, demo.tokens[-16:])
  assert not prompt.loss_mask.any()
  prompt = prompts.PromptSampler([demo], max_tokens=20, prompt_from="start")(seed=1)
  np.testing.assert_array_equal(prompt.tokens, demo.tokens[:16])
  np.testing.assert_array_equal(prompt.timesteps, np.repeat([0, 1], 8))
  assert not prompt.loss_mask.any()
  whole = prompts.PromptSampler([demo], max_tokens=40, prompt_from="start")(seed=1)
  np.testing.assert_array_equal(whole.tokens, demo.tokens)
  assert prompts.PromptSampler([demo], max_tokens=0)(seed=1) is None
  with pytest.raises(ValueError, match="holds no whole timestep"):
    prompts.PromptSampler([demo], max_tokens=5)(seed=1)
  with pytest.raises(ValueError, match="holds no whole timestep"):
    prompts.PromptSampler([demo], max_tokens=5, prompt_from="start")(seed=1)
  with pytest.raises(ValueError, match="unknown eval.prompt_from 'middle'"):
    prompts.PromptSampler([demo], max_tokens=20, prompt_from="middle")


# --- Reports and the library entry point --------------------------------------------------------


def _results():
  rng = np.random.default_rng(0)
  tasks = {}
  for name, level in (("babyai/GoToObj", 0.9), ("babyai/GoTo", 0.4), ("gymnax/CartPole-v1", 1.1)):
    returns = rng.normal(level, 0.1, 6)
    tasks[name] = scores.TaskScores(name, returns, returns, np.ones(6, int), np.full(6, 10))
  out = scores.summarize(tasks, num_resamples=100)
  out["step"] = 1234
  return out


def test_reports_are_written_and_regenerated_identically(tmp_path):
  directory = reports.results_dir(str(tmp_path), 1234)
  assert directory == os.path.join(str(tmp_path), "eval", "1234")
  paths = reports.write(_results(), directory)
  loaded = reports.load(directory)
  assert set(loaded["tasks"]["babyai/GoTo"]) >= {"return", "normalized_score", "success_rate"}
  assert set(loaded["domains"]) == {"babyai", "gymnax"}
  assert loaded["domains"]["babyai"]["mean"] == pytest.approx(
    np.mean([loaded["tasks"][t]["normalized_score"] for t in ("babyai/GoTo", "babyai/GoToObj")])
  )
  table = pathlib.Path(paths["table"]).read_text()
  assert "| babyai/GoToObj |" in table and "| all | 3 |" in table
  chart = pathlib.Path(paths["chart"]).read_bytes()
  assert chart[:8] == b"\x89PNG\r\n\x1a\n"
  os.remove(paths["table"])
  os.remove(paths["chart"])
  reports.regenerate(directory)
  assert pathlib.Path(paths["table"]).read_text() == table
  assert pathlib.Path(paths["chart"]).read_bytes() == chart


def test_evaluate_writes_reports_for_given_params(tmp_path, params):
  task = "gymnax/CartPole-v1"
  E.save_stats(
    E.TaskStats(task, 20.0, 5.0, 5, expert_agent="ppo", expert_return=500.0, expert_episodes=5),
    str(tmp_path),
  )
  config = _config(
    tmp_path,
    tasks=task,
    episodes=3,
    batch_size=2,
    prompt_tokens=0,
    max_steps=8,
    bootstrap_resamples=50,
  )
  results = evaluator.evaluate(config, str(tmp_path / "run"), params=params, step=5)
  row = results["tasks"][task]
  assert row["episodes"] == 3 and row["return"] <= 8
  assert row["normalized_score"] == pytest.approx((row["return"] - 20.0) / 480.0)
  on_disk = reports.load(reports.results_dir(str(tmp_path / "run"), 5))
  assert on_disk["tasks"][task]["return"] == pytest.approx(row["return"])
  metrics = evaluator.scalar_metrics(results)
  assert metrics["eval/normalized_score"] == pytest.approx(row["normalized_score"])
  assert metrics["eval/gymnax/normalized_score"] == pytest.approx(row["normalized_score"])


def test_evaluate_task_takes_the_eval_variants(tmp_path, params):
  task = "gymnax/CartPole-v1"
  E.save_stats(E.TaskStats(task, 20.0, 5.0, 5, expert_return=500.0), str(tmp_path))
  variants = dict(tasks=task, episodes=2, batch_size=2, prompt_tokens=0, max_steps=40)
  config = _config(tmp_path, memory="sliding", temperature=1.0, **variants)
  _, _, timing = evaluator.evaluate_task(task, config, CFG, params)
  assert timing["rebuilds"] == 0  # The refill memory rebuilds at least at the first step.
  with pytest.raises(ValueError, match="unknown eval.memory 'xl'"):
    evaluator.evaluate_task(task, _config(tmp_path, memory="xl", **variants), CFG, params)
  with pytest.raises(ValueError, match="unknown eval.prompt_from 'middle'"):
    evaluator.evaluate_task(task, _config(tmp_path, prompt_from="middle", **variants), CFG, params)


def test_evaluate_restores_the_newest_checkpoint(tmp_path):
  from gato_jax import checkpoint

  task = "gymnax/CartPole-v1"
  E.save_stats(E.TaskStats(task, 20.0, 5.0, 5, expert_return=500.0), str(tmp_path))
  config = _config(
    tmp_path,
    tasks=task,
    episodes=2,
    batch_size=2,
    prompt_tokens=0,
    max_steps=4,
    bootstrap_resamples=10,
  )
  workdir = tmp_path / "run"
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoints"):
    evaluator.evaluate(config, str(workdir))
  state = save_initial_state(config, workdir, 7)
  results = evaluator.evaluate(config, str(workdir))
  assert results["step"] == 7
  assert os.path.isfile(workdir / "eval" / "7" / "results.json")
  restored, step = evaluator.restore_params(config, str(workdir))
  assert step == 7
  jax.tree.map(np.testing.assert_array_equal, restored, state.params)
