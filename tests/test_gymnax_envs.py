"""The gymnax adapter: specs the tokenizer accepts, numpy stepping, batched rollouts, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.envs import base, gymnax_envs


# Stepping compiles each environment (MinAtar's take seconds), so one MinAtar game steps here;
# the others' specs are checked without compiling below.
@pytest.mark.parametrize("env_id", gymnax_envs.CLASSIC_CONTROL + ("Breakout-MinAtar",))
def test_specs_and_real_timesteps_tokenize(env_id):
  env = gymnax_envs.GymnaxEnvironment(env_id)
  assert isinstance(env, base.Environment) and env.name == f"gymnax/{env_id}"
  observation = env.reset(seed=0)
  rng = np.random.default_rng(0)
  for _ in range(3):
    result = env.step(env.random_action(rng))
  observation = result.observation
  action = env.random_action(rng)
  group = T.tokenize_timestep(observation, action, env.observation_spec, env.action_spec)
  num_obs = int(np.prod(next(iter(env.observation_spec.values())).shape))
  assert group.tokens.shape == (num_obs + 1 + T.num_action_tokens(env.action_spec),)
  decoded = T.detokenize_action(group.tokens[group.action_mask], env.action_spec)
  if isinstance(env.action_spec, T.DiscreteSpec):
    assert int(decoded) == int(action)
  else:
    np.testing.assert_allclose(decoded, action, atol=2 / 1024)


@pytest.mark.parametrize(
  "env_id,channels,actions",
  [("Asterix-MinAtar", 4, 5), ("Freeway-MinAtar", 7, 3), ("SpaceInvaders-MinAtar", 6, 4)],
)
def test_minatar_specs(env_id, channels, actions):
  observation_spec, action_spec = gymnax_envs.gato_specs(env_id)
  assert observation_spec == {"grid": T.DiscreteSpec((10, 10), num_values=2**channels)}
  assert action_spec == T.DiscreteSpec((), num_values=actions)


def test_minatar_cells_pack_the_channel_bits():
  env = gymnax_envs.GymnaxEnvironment("gymnax/Breakout-MinAtar")
  assert env.observation_spec == {"grid": T.DiscreteSpec((10, 10), num_values=16)}
  assert env.action_spec == T.DiscreteSpec((), num_values=3)
  grid = env.reset(seed=1)["grid"]
  assert grid.dtype == np.int32 and grid.min() >= 0 and grid.max() < 16 and grid.sum() > 0
  # Bit c of a cell is channel c of gymnax's grid; unpacking gives gymnax's observation back.
  raw = np.zeros((2, 10, 10, 4), np.float32)
  raw[0, 3, 4, [0, 2]] = 1.0
  raw[1, 9, 0, 3] = 1.0
  packed = gymnax_envs.to_gato_observation("Breakout-MinAtar", raw)["grid"]
  assert packed.shape == (2, 10, 10) and packed[0, 3, 4] == 0b101 and packed[1, 9, 0] == 0b1000
  assert packed.sum() == 0b101 + 0b1000
  unpacked = gymnax_envs.to_gymnax_observation("Breakout-MinAtar", {"grid": packed})
  np.testing.assert_array_equal(unpacked, raw)
  channels = gymnax_envs.to_gymnax_observation(env.env_id, grid)
  assert channels.shape == (10, 10, 4) and set(np.unique(channels)) == {0.0, 1.0}
  np.testing.assert_array_equal(gymnax_envs.to_gato_observation(env.env_id, channels)["grid"], grid)
  with pytest.raises(ValueError, match=r"packed \[..., 10, 10\] cells"):
    gymnax_envs.to_gymnax_observation("Breakout-MinAtar", raw)


def test_continuous_actions_are_unit_scaled():
  env = gymnax_envs.GymnaxEnvironment("Pendulum-v1")
  assert env.action_spec == T.ContinuousSpec((1,), mu_law=False)
  assert env.observation_spec == {"state": T.ContinuousSpec((3,), mu_law=True)}
  space = env._action_space
  np.testing.assert_allclose(
    gymnax_envs.unit_to_env_action(space, jnp.array([-1.0, 0.0, 1.0])), [-2.0, 0.0, 2.0]
  )
  np.testing.assert_allclose(gymnax_envs.unit_to_env_action(space, jnp.array([5.0])), [2.0])


def test_episode_ends_with_terminal_observation_and_time_limit():
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1", max_episode_steps=5)
  assert env.max_episode_steps == 5
  env.reset(seed=0)
  results = [env.step(np.int32(0)) for _ in range(5)]
  assert [r.truncated for r in results] == [False] * 4 + [True]
  assert all(r.reward == 1.0 for r in results)
  with pytest.raises(RuntimeError, match="reset"):
    env.step(np.int32(0))
  # Always pushing left topples the pole: a true termination, with the pre-reset observation.
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1")
  env.reset(seed=0)
  for _ in range(env.max_episode_steps):
    result = env.step(np.int32(0))
    if result.terminated:
      break
  assert result.terminated and not result.truncated
  assert abs(result.observation["state"][2]) > 0.2  # The pole angle past the limit, not reset.


def test_reset_is_deterministic_in_seed():
  env = gymnax_envs.GymnaxEnvironment("Acrobot-v1")
  first = env.reset(seed=7)["state"]
  np.testing.assert_array_equal(first, env.reset(seed=7)["state"])
  assert not np.array_equal(first, env.reset(seed=8)["state"])


def test_bad_inputs_give_clear_errors():
  with pytest.raises(ValueError, match="unknown gymnax task 'CartPole-v0'.*supported: CartPole-v1"):
    gymnax_envs.GymnaxEnvironment("CartPole-v0")
  with pytest.raises(ValueError, match="unknown gymnax task"):
    gymnax_envs.rollout("babyai/GoToRedBall", lambda o, k: 0, 2)
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1")
  with pytest.raises(RuntimeError, match="call reset"):
    env.step(np.int32(0))
  env.reset(seed=0)
  with pytest.raises(ValueError, match=r"action 2 outside \[0, 2\)"):
    env.step(np.int32(2))
  with pytest.raises(TypeError, match="integer"):
    env.step(np.float32(1.0))
  pendulum = gymnax_envs.GymnaxEnvironment("Pendulum-v1")
  pendulum.reset(seed=0)
  with pytest.raises(ValueError, match="shape"):
    pendulum.step(np.float32(0.5))
  with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
    pendulum.step(np.array([1.5], np.float32))
  with pytest.raises(ValueError, match="num_episodes"):
    gymnax_envs.rollout("CartPole-v1", lambda obs, key: 0, 0)


def test_rollout_matches_the_step_adapter():
  """The batched rollout and the numpy adapter score the same fixed policy alike."""
  policy = lambda obs, key: jnp.int32(obs[2] + 0.5 * obs[3] > 0)  # A decent hand-made balancer.
  result = gymnax_envs.rollout("CartPole-v1", policy, 8, seed=0, max_episode_steps=200)
  assert result["returns"].shape == (8,) and result["lengths"].dtype == np.int32
  np.testing.assert_array_equal(result["returns"], result["lengths"])  # +1 per step.
  # The task's random baseline, the number README's tables report for CartPole.
  random_return = E.random_baseline(gymnax_envs.GymnaxEnvironment("CartPole-v1"))[0]
  assert random_return == pytest.approx(25.54, abs=0.005)
  assert result["returns"].mean() > 3 * random_return
  env = gymnax_envs.GymnaxEnvironment("CartPole-v1", max_episode_steps=200)
  observation, total = env.reset(seed=0), 0.0
  while True:
    step = env.step(np.asarray(policy(observation["state"], None)))
    observation, total = step.observation, total + step.reward
    if step.terminated or step.truncated:
      break
  assert total > 3 * random_return
