"""gymnax rollouts under jit + vmap: the same episodes as the host loop, for scripted policies
and the model, and the expert's recorded score reproduced through the jitted path."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from gato_jax.sources import episodes as E
from gato_jax.envs import gymnax_envs, policies, runner
from gato_jax.evaluation import model_agent, rollouts, scores
from gato_jax.model import ModelConfig, init_variables

CFG = ModelConfig.from_size("tiny", max_decode_length=64)


@pytest.fixture(scope="module")
def params():
  return nn.unbox(jax.jit(lambda r: init_variables(CFG, r))(jax.random.key(3)))["params"]


class Balancer(policies.Policy):
  """Pushes the cart towards the side the pole falls to: a scripted CartPole expert."""

  name = "balancer"

  def __init__(self, env):
    del env

  def act(self, observation):
    _, _, angle, angular_velocity = observation["state"]
    return np.int32(angle + 0.5 * angular_velocity > 0)


class Reactive(policies.Policy):
  """A deterministic function of the observation for any gymnax task (continuous or discrete),
  so that two rollout paths agree only if they produce the same observations."""

  def __init__(self, env):
    self.spec = env.action_spec

  def act(self, observation):
    (value,) = observation.values()
    signal = float(
      np.sum(np.asarray(value, np.float64) * np.arange(1, value.size + 1).reshape(value.shape))
    )
    if hasattr(self.spec, "num_values"):
      return np.int32(int(abs(signal) * 7) % self.spec.num_values)
    return np.full(self.spec.shape, np.tanh(signal), np.float32)


def _host(task, agent, episodes, batch_size, max_steps):
  make_env = lambda: gymnax_envs.GymnaxEnvironment(task)
  return rollouts.run_task(
    runner.host_batch(make_env), agent, episodes, batch_size, seed=0, max_steps=max_steps
  )


def _jit(task, agent, episodes, batch_size, max_steps):
  make_batch = lambda num_envs: gymnax_envs.GymnaxBatch(task, num_envs)
  return rollouts.run_task(make_batch, agent, episodes, batch_size, seed=0, max_steps=max_steps)


@pytest.mark.parametrize(
  "task,max_steps,exact",
  [("CartPole-v1", 40, True), ("Breakout-MinAtar", 15, True), ("Pendulum-v1", 12, False)],
)
def test_jit_path_matches_host_loop_for_scripted_policy(task, max_steps, exact):
  host, host_timing = _host(task, runner.PolicyAgent(Reactive), 5, 2, max_steps)
  jitted, jit_timing = _jit(task, runner.PolicyAgent(Reactive), 5, 2, max_steps)
  if exact:  # Integer rewards and comparisons only: the same episodes bit for bit.
    assert jitted == host
  else:
    # Pendulum's sin/cos vectorised over rows may round differently in the last float32 bit.
    np.testing.assert_allclose(
      [o.episode_return for o in jitted], [o.episode_return for o in host], rtol=1e-5
    )
    assert [(o.seed, o.length) for o in jitted] == [(o.seed, o.length) for o in host]
  assert [o.seed for o in jitted] == rollouts.eval_seeds(f"gymnax/{task}", 5)
  assert jit_timing.env_steps == host_timing.env_steps == sum(o.length for o in host)
  assert jit_timing.agent_calls == host_timing.agent_calls


def test_scripted_expert_reproduces_its_recorded_score_through_the_jit_path():
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1", max_episode_steps=60)
  seeds = rollouts.eval_seeds(env.name, 4)
  # Recorded one episode at a time on the host, as the data generator records its expert.
  expert = [E.rollout(env, Balancer(env), s) for s in seeds]
  random = [E.rollout(env, policies.RandomPolicy(env), s) for s in seeds[:3]]
  expert_mean, *_ = E.summarize_returns(expert)
  random_mean, random_std, n, _ = E.summarize_returns(random)
  stats = E.TaskStats(
    env.name,
    random_mean,
    random_std,
    n,
    expert_agent="balancer",
    expert_return=expert_mean,
    expert_episodes=4,
  )
  assert expert_mean > random_mean
  outcomes, _ = _jit(env.name, runner.PolicyAgent(Balancer), 4, 3, max_steps=60)
  np.testing.assert_array_equal(
    [o.episode_return for o in outcomes], [e["episode_metadata"]["return"] for e in expert]
  )
  assert scores.score_task(env.name, outcomes, stats).summary()["normalized_score"] == 1.0


class Recorder(runner.Agent):
  def __init__(self, inner):
    self.inner, self.log = inner, []

  def setup(self, envs):
    self.inner.setup(envs)

  def begin_episode(self, row, seed):
    self.inner.begin_episode(row, seed)

  def end_episode(self, row):
    self.inner.end_episode(row)

  def _record(self, actions):
    self.log.append([None if a is None else int(a) for a in actions])
    return actions

  def act(self, observations):
    return self._record(self.inner.act(observations))

  def act_batch(self, observations, active):
    return self._record(self.inner.act_batch(observations, active))


def test_jit_path_matches_host_loop_for_the_model(params):
  # Sampled actions (temperature 1) vary from step to step, so agreement is not by luck; the
  # samples depend on the call count only, which both paths share.
  runs = {}
  for name in ("host", "jit"):
    agent = model_agent.ModelAgent(CFG, params, temperature=1.0, seed=5)
    recorder = Recorder(agent)
    if name == "host":
      runs[name] = _host("CartPole-v1", recorder, 5, 3, 14) + (recorder.log, agent)
    else:
      runs[name] = _jit("CartPole-v1", recorder, 5, 3, 14) + (recorder.log, agent)
  (host_out, _, host_log, host_agent), (jit_out, _, jit_log, jit_agent) = runs["host"], runs["jit"]
  assert jit_log == host_log and jit_out == host_out
  assert len({a for step in host_log for a in step if a is not None}) == 2  # Both actions used.
  # 14-step episodes of 6-token timesteps overflow the 64-token cache: rebuilds were exercised.
  assert jit_agent.num_rebuilds == host_agent.num_rebuilds > 5
  assert jit_agent.num_trimmed == host_agent.num_trimmed > 0


def test_batch_rejects_bad_actions_and_seeds():
  batch = gymnax_envs.GymnaxBatch("CartPole-v1", 2)
  with pytest.raises(ValueError, match=r"shape \[2\]"):
    gymnax_envs.check_actions(batch.name, batch.action_spec, np.zeros(3, np.int32), 2)
  with pytest.raises(ValueError, match="outside"):
    gymnax_envs.check_actions(batch.name, batch.action_spec, np.array([0, 2], np.int32), 2)
  with pytest.raises(TypeError, match="integers"):
    gymnax_envs.check_actions(batch.name, batch.action_spec, np.zeros(2, np.float32), 2)
  with pytest.raises(ValueError, match="2 rows"):
    batch.reset([1])
  with pytest.raises(ValueError, match="seeds must be"):
    batch.reset([-1, None])
  with pytest.raises(ValueError, match="unknown gymnax task"):
    gymnax_envs.GymnaxBatch("NoSuchTask-v0", 2)
