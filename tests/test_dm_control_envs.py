"""DM Control (state) adapter: mu-law observation specs, [-1, 1] actions, seeds, tokenization."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import episodes as E
from gato_jax.envs import dm_control_envs, policies, registry


@pytest.fixture(scope="module")
def cartpole():
  return registry.make_env("dm_control/cartpole-swingup")


def test_every_task_loads_with_gato_specs():
  assert len(dm_control_envs.TASKS) >= 8
  for task in dm_control_envs.TASKS:
    env = registry.make_env(f"dm_control/{task}")
    assert env.max_episode_steps == 1000
    assert all(isinstance(s, T.ContinuousSpec) and s.mu_law for s in env.observation_spec.values())
    assert isinstance(env.action_spec, T.ContinuousSpec) and not env.action_spec.mu_law
    observation = env.reset(0)
    for key, spec in env.observation_spec.items():
      assert observation[key].shape == spec.shape and observation[key].dtype == np.float32


def test_random_episode_tokenizes(cartpole):
  episode = E.rollout(cartpole, policies.RandomPolicy(cartpole), seed=0)
  steps = episode["steps"]
  assert E.num_actions(episode) == 1000
  # Time limits truncate: no terminal state, discount stays 1.
  assert not steps["is_terminal"].any() and steps["discount"].min() == 1.0
  assert episode["episode_metadata"]["success"] == E.SUCCESS_UNDEFINED
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, cartpole.observation_spec, cartpole.action_spec)
  assert group.num_tokens == 1000 * (3 + 2 + 1 + 1)  # position(3), velocity(2), |, action(1).
  decoded = T.detokenize_action(
    group.tokens[group.action_mask].reshape(1000, 1), cartpole.action_spec
  )
  assert np.abs(decoded - actions).max() <= 1.0 / 1024 + 1e-6


def test_seeds_fix_the_initial_state(cartpole):
  a, b, c = cartpole.reset(3), cartpole.reset(3), cartpole.reset(4)
  np.testing.assert_array_equal(a["position"], b["position"])
  assert not np.array_equal(a["position"], c["position"])


def test_actions_are_rescaled_from_unit_range(cartpole, monkeypatch):
  monkeypatch.setattr(cartpole, "_low", np.array([-2.0]))
  monkeypatch.setattr(cartpole, "_high", np.array([6.0]))
  np.testing.assert_allclose(cartpole.to_env_action(np.array([-1.0])), [-2.0])
  np.testing.assert_allclose(cartpole.to_env_action(np.array([0.0])), [2.0])
  np.testing.assert_allclose(cartpole.to_env_action(np.array([1.5])), [6.0])  # Clipped.


def test_bad_inputs_give_clear_errors(cartpole):
  with pytest.raises(ValueError, match="unknown DM Control task 'cartpole-fly'"):
    dm_control_envs.DMControlEnv("cartpole-fly")
  with pytest.raises(ValueError, match=r"shape \(1,\)"):
    cartpole.step(np.zeros(3))
  with pytest.raises(ValueError, match="non-finite"):
    cartpole.step(np.array([np.nan]))
  # conftest points the expert cache at an empty folder, so no task has a trained expert.
  with pytest.raises(LookupError, match="no expert trained for dm_control/cartpole-swingup"):
    registry.make_expert(cartpole)
