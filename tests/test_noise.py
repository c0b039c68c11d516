"""Noisy demonstrations: the environment executes a perturbed action, the episode stores the
expert's own, and runs read such data only where the config names it."""

import json

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import catalogue, rlds_io
from gato_jax.envs import base, noise, policies, registry
from gato_jax.sources import builtin, coverage, generation
from gato_jax.sources import episodes as E


class EchoEnv(base.Environment):
  """Observes the action it executed last: a continuous pair and a discrete choice of 5."""

  name = "fake/echo"
  observation_spec = {"torque": T.ContinuousSpec((2,)), "button": T.DiscreteSpec((), 5)}
  action_spec = {"torque": T.ContinuousSpec((2,), mu_law=False), "button": T.DiscreteSpec((), 5)}
  max_episode_steps = 50

  def reset(self, seed):
    return {"torque": np.zeros(2, np.float32), "button": np.int32(0)}

  def step(self, action):
    return base.StepResult(dict(action), 0.0, False, False)


def _action(torque=(0.5, 0.99), button=3):
  return {"torque": np.asarray(torque, np.float32), "button": np.int32(button)}


def _executed(env, seed, steps, action=None):
  env.reset(seed)
  return [env.step(action or _action()).observation for _ in range(steps)]


def test_noise_is_a_function_of_the_episode_seed_and_stays_in_bounds():
  env = noise.NoisyActions(EchoEnv(), 0.3)
  first, again, other = (_executed(env, s, 400) for s in (7, 7, 8))
  torque = np.stack([o["torque"] for o in first])
  button = np.array([o["button"] for o in first])
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["torque"], b["torque"])
    assert a["button"] == b["button"]
  assert any(not np.array_equal(a["torque"], b["torque"]) for a, b in zip(first, other))
  assert torque.dtype == np.float32 and button.dtype == np.int32
  assert torque.min() >= -1.0 and torque.max() <= 1.0
  # 0.99 is clipped at 1.0 about half the time; 0.5 is not, and spreads with std 0.3.
  assert (torque[:, 1] == 1.0).mean() == pytest.approx(0.5, abs=0.1)
  assert torque[:, 0].std() == pytest.approx(0.3, abs=0.04)
  assert torque[:, 0].mean() == pytest.approx(0.5, abs=0.04)
  # A random button with probability 0.3, which keeps the chosen one a fifth of the time.
  assert (button != 3).mean() == pytest.approx(0.3 * 4 / 5, abs=0.06)
  assert set(button) <= set(range(5))
  np.testing.assert_array_equal(
    env.last_executed["torque"], other[-1]["torque"]
  )  # Seed 8 ran last.
  clean = _executed(noise.NoisyActions(EchoEnv(), 0.0), 7, 3)
  assert all(o["button"] == 3 and np.array_equal(o["torque"], _action()["torque"]) for o in clean)


def test_a_batched_step_gets_the_same_noise_as_a_plain_one():
  env = noise.NoisyActions(EchoEnv(), 0.5)
  plain = _executed(env, 3, 5)
  env.reset(3)
  for expected in plain:
    env.step_async(_action())
    np.testing.assert_array_equal(env.step_wait().observation["torque"], expected["torque"])


def test_bad_noise_and_specs_name_the_problem():
  for bad in (-0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="action noise of fake/echo must be in"):
      noise.NoisyActions(EchoEnv(), bad)
  with pytest.raises(RuntimeError, match="reset"):
    noise.NoisyActions(EchoEnv(), 0.1).step(_action())
  spec = "dm_control=0.3, gymnax/Pendulum-v1=0.2,dm_control/walker-stand=0"
  assert noise.scale_for("dm_control/cartpole-balance", spec) == 0.3
  assert noise.scale_for("dm_control/walker-stand", spec) == 0.0  # The task's entry wins.
  assert noise.scale_for("gymnax/Pendulum-v1", spec) == 0.2
  assert noise.scale_for("gymnax/CartPole-v1", spec) == 0.0
  assert noise.scale_for("gymnax/CartPole-v1", "") == 0.0
  for bad in ("dm_control=loud", "dm_control=2", "dm_control"):
    with pytest.raises(ValueError, match="data.action_noise entry .* <task or domain>=<noise"):
      noise.scale_for("dm_control/cartpole-balance", bad)
  assert generation.dataset_name("dm_control", "expert", 0.3) == "gato_dm_control_noise0p3"
  assert generation.dataset_name("dm_control", "expert", 0.0) == "gato_dm_control"
  with pytest.raises(ValueError, match="not 'random' episodes"):
    generation.generate_task(
      "gymnax/Pendulum-v1", "/nonexistent", 1, policy="random", action_noise=0.3
    )
  with pytest.raises(ValueError, match="policy 'random' episodes have none"):
    builtin.register_builtin_tasks("/nonexistent", "random", False, action_noise="gymnax=0.3")


@pytest.fixture
def pendulum_expert(tmp_path, monkeypatch):
  """An untrained, deterministic PPO expert of Pendulum in a cache of this test's own."""
  import jax

  from gato_jax.experts import gymnax_experts, ppo

  workdir = str(tmp_path / "experts")
  monkeypatch.setattr(gymnax_experts, "DEFAULT_WORKDIR", workdir)
  config = ppo.PPOConfig(hidden_sizes=(8,))
  params = ppo.init_params("Pendulum-v1", config, jax.random.key(0))
  gymnax_experts.save_expert(workdir, "Pendulum-v1", config, params, {"deterministic": True})


def test_noisy_demonstrations_store_the_experts_actions_in_a_dataset_of_their_own(
  pendulum_expert, tmp_path
):
  task, data_dir = "gymnax/Pendulum-v1", str(tmp_path / "data")
  kwargs = dict(seed=2, shard_episodes=2, stats_episodes=2, progress=lambda _: None)
  clean = generation.generate_task(task, data_dir, 2, **kwargs)
  stats = E.load_stats(data_dir, task)
  noisy = generation.generate_task(task, data_dir, 3, action_noise=0.3, **kwargs)
  assert noisy.dataset_dir == rlds_io.dataset_dir(data_dir, "gato_gymnax_noise0p3", "pendulum_v1")
  assert clean.dataset_dir == rlds_io.dataset_dir(data_dir, "gato_gymnax", "pendulum_v1")
  assert E.load_stats(data_dir, task) == stats  # The clean expert's, not measured again.
  record = (
    tmp_path / "data" / "gato_meta" / "generated" / "gato_gymnax_noise0p3" / "pendulum_v1.json"
  )
  assert json.loads(record.read_text())["action_noise"] == 0.3
  assert (
    generation.generate_task(task, data_dir, 3, action_noise=0.3, **kwargs).status == "existing"
  )
  with pytest.raises(ValueError, match="generated with"):
    generation.generate_task(task, data_dir, 3, **dict(kwargs, seed=5), action_noise=0.3)

  env = registry.make_env(task)
  expert = registry.make_expert(env)
  stored = list(rlds_io.read_episodes(noisy.dataset_dir))
  for episode in stored:
    steps, seed = episode["steps"], int(episode["episode_metadata"]["seed"])
    observations, actions = E.action_steps(episode)
    expert.reset(seed)
    for t in range(len(actions)):
      observation = {k: v[t] for k, v in observations.items()}
      np.testing.assert_array_equal(expert.act(observation), actions[t])
    # Replayed as they were executed (the same noise from the seed) the actions give the
    # stored observations; executed as stored, they do not.
    for scale, same in ((0.3, True), (0.0, False)):
      replay = noise.NoisyActions(env, scale)
      first = replay.reset(seed)
      seen = [first] + [replay.step(a).observation for a in actions]
      got = np.stack([s["state"] for s in seen])
      assert np.allclose(got, steps["observation"]["state"], atol=1e-5) == same
  # The first two noisy episodes start where the clean ones do, then part.
  for a, b in zip(stored, rlds_io.read_episodes(clean.dataset_dir)):
    np.testing.assert_array_equal(
      a["steps"]["observation"]["state"][0], b["steps"]["observation"]["state"][0]
    )
    assert not np.array_equal(a["steps"]["action"], b["steps"]["action"])

  # A run reads the noisy set only for the tasks its data.action_noise names.
  builtin.register_builtin_tasks(data_dir, seqio_tasks=False, action_noise="gymnax/Pendulum-v1=0.3")
  try:
    assert catalogue.task_info(task).source == noisy.dataset_dir
    assert "gato_gymnax/" in catalogue.task_info("gymnax/CartPole-v1").source
  finally:
    builtin.register_builtin_tasks(seqio_tasks=False)  # Back to the default for other tests.


class Hold(policies.Policy):
  """Always the same action."""

  name = "hold"

  def __init__(self, torque):
    self._action = _action(torque, 1)

  def act(self, observation):
    return self._action


def test_coverage_counts_the_probes_tokens_among_the_stored_bins():
  env = EchoEnv()
  seeds = [1, 2]
  play = lambda policy: [o.episode for o in E.play(env, policy, seeds)]
  stored = play(Hold((0.5, -0.5)))  # Values 0 (the first observation), then +-0.5.
  probes = {"same": stored, "zero": play(policies.ZeroPolicy(env)), "off": play(Hold((0.9, -0.5)))}
  rows = {row.path: row for row in coverage.coverage(stored, probes, env.observation_spec)}
  assert sorted(rows) == ["torque[0]", "torque[1]"]  # Continuous values only, one per element.
  assert all(row.stored_bins == 2 for row in rows.values())
  assert rows["torque[0]"].seen == {"same": 1.0, "zero": 1.0, "off": 1 / 51}  # 50 steps + reset.
  assert rows["torque[1]"].seen == {"same": 1.0, "zero": 1.0, "off": 1.0}
  with pytest.raises(ValueError, match="continuous observation values; .* have none"):
    coverage.value_tokens(stored, {"button": T.DiscreteSpec((), 5)})
