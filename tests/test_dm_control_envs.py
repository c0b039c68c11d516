"""DM Control (state) adapter: mu-law observation specs, [-1, 1] actions, seeds, tokenization."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.envs import dm_control_envs, policies, registry


@pytest.fixture(scope="module")
def cartpole():
  return registry.make_env("dm_control/cartpole-swingup")


def test_every_task_loads_with_gato_specs():
  assert len(dm_control_envs.TASKS) >= 8
  for task in dm_control_envs.TASKS:
    env = registry.make_env(f"dm_control/{task}")
    # 1,000 control steps, one timestep per decision of the task's expert.
    assert env.action_repeat == dm_control_envs.ACTION_REPEAT[task]
    assert env.max_episode_steps == 1000 // env.action_repeat
    assert all(isinstance(s, T.ContinuousSpec) and s.mu_law for s in env.observation_spec.values())
    assert isinstance(env.action_spec, T.ContinuousSpec) and not env.action_spec.mu_law
    observation = env.reset(0)
    for key, spec in env.observation_spec.items():
      assert observation[key].shape == spec.shape and observation[key].dtype == np.float32


def test_random_episode_tokenizes(cartpole):
  episode = E.rollout(cartpole, policies.RandomPolicy(cartpole), seed=0)
  steps = episode["steps"]
  assert cartpole.action_repeat == 8 and E.num_actions(episode) == 125
  # Time limits truncate: no terminal state, discount stays 1.
  assert not steps["is_terminal"].any() and steps["discount"].min() == 1.0
  assert episode["episode_metadata"]["success"] == E.SUCCESS_UNDEFINED
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, cartpole.observation_spec, cartpole.action_spec)
  assert group.num_tokens == 125 * (3 + 2 + 1 + 1)  # position(3), velocity(2), |, action(1).
  decoded = T.detokenize_action(
    group.tokens[group.action_mask].reshape(125, 1), cartpole.action_spec
  )
  assert np.abs(decoded - actions).max() <= 1.0 / 1024 + 1e-6


def test_a_step_holds_its_action_for_the_tasks_action_repeat(cartpole):
  every_step = dm_control_envs.DMControlEnv("cartpole-swingup", action_repeat=1)
  assert every_step.max_episode_steps == 1000 and every_step.version is None
  assert cartpole.version == "action_repeat=8"  # Stored episodes and statistics record it.
  actions = np.random.default_rng(0).uniform(-1, 1, (130, 1)).astype(np.float32)
  cartpole.reset(5), every_step.reset(5)
  for i, action in enumerate(actions[:125]):
    held = cartpole.step(action)
    singles = [every_step.step(action) for _ in range(8)]
    # The same physics: eight control steps of one action, their rewards summed.
    for key in held.observation:
      np.testing.assert_array_equal(held.observation[key], singles[-1].observation[key])
    assert held.reward == pytest.approx(sum(r.reward for r in singles), abs=1e-9)
    assert held.truncated == (i == 124) and not held.terminated
  with pytest.raises(ValueError, match="action_repeat must be at least 1"):
    dm_control_envs.DMControlEnv("cartpole-swingup", action_repeat=0)


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


def test_pixel_task_renders_frames_and_acts_with_the_state_expert(tmp_path, monkeypatch):
  import jax

  from gato_jax.experts import dm_control_experts, sac

  monkeypatch.setenv("GATO_JAX_EXPERTS", str(tmp_path))
  try:
    pixels = registry.make_env("dm_control_pixels/cartpole-balance")
    first = pixels.reset(3)
  except RuntimeError as e:
    if "EGL" in str(e) or "OpenGL" in str(e):
      pytest.skip(f"no headless OpenGL (Mesa EGL) here: {e}")
    raise
  state = registry.make_env("dm_control/cartpole-balance")
  assert set(first) == {"image"} and first["image"].shape == (64, 64, 3)
  assert first["image"].dtype == np.uint8 and first["image"].std() > 0  # A rendered scene.
  assert not np.array_equal(pixels.reset(4)["image"], first["image"])  # The seed moves the pole.
  assert pixels.action_spec == state.action_spec and pixels.max_episode_steps == 125
  assert pixels.version == state.version == "action_repeat=8"  # One frame per decision.
  # An untrained SAC actor stands in for the expert: the pixel task's expert is the state
  # task's, acting on the state behind each frame.
  config = sac.SACConfig(hidden_sizes=(8,), action_repeat=8)
  obs_dim, action_dim = sac.problem_dims(state)
  params = sac.SAC(obs_dim, action_dim, config).init_actor_params(jax.random.key(0))
  dm_control_experts.save_expert(
    str(tmp_path),
    "cartpole-balance",
    config,
    sac.observation_keys(state),
    obs_dim,
    action_dim,
    params,
    {},
  )
  assert registry.has_expert(pixels.name)
  on_pixels, on_state = registry.make_expert(pixels), registry.make_expert(state)
  assert on_pixels.version == on_state.version
  seen, expected = pixels.reset(5), state.reset(5)
  for _ in range(10):
    a, b = on_pixels.act(seen), on_state.act(expected)
    np.testing.assert_array_equal(a, b)
    group = T.tokenize_timestep(seen, a, pixels.observation_spec, pixels.action_spec)
    assert group.num_tokens == 16 + 1 + 1  # 16 patches of 64x64, the separator, one action.
    for key in expected:
      np.testing.assert_array_equal(pixels.state_observation[key], expected[key])
    seen, expected = pixels.step(a).observation, state.step(b).observation
  with pytest.raises(RuntimeError, match="dm_control_pixels/cartpole-balance: ValueError"):
    pixels.step(np.zeros(3, np.float32))  # The child's error, named; the child keeps serving.
  assert pixels.reset(3)["image"].shape == (64, 64, 3)
  pixels.close()
