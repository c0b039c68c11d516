"""BabyAI adapter and bot expert: specs the tokenizer accepts, determinism, bot vs random."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.envs import babyai, policies, registry


@pytest.fixture(scope="module")
def env():
  return registry.make_env("babyai/GoToRedBall")


def test_every_level_is_a_registered_minigrid_environment():
  import gymnasium as gym
  import minigrid  # noqa: F401  Registers the BabyAI-* environments (babyai.py imports it lazily).

  assert len(babyai.TASKS) >= 10 and {"GoToRedBall", "BossLevel", "Synth"} <= set(babyai.TASKS)
  for level in babyai.TASKS:
    gym.spec(f"BabyAI-{level}-v0")  # Raises if minigrid does not register it.


def test_observation_and_action_specs(env):
  assert env.name == "babyai/GoToRedBall"
  observation = env.reset(0)
  assert set(observation) == {"grid", "mission"}
  assert observation["grid"].shape == (7, 7, 3) and observation["grid"].dtype == np.uint8
  assert observation["mission"] == "go to the red ball" or "red ball" in observation["mission"]
  assert env.action_spec == T.DiscreteSpec((), num_values=7)
  assert env.max_episode_steps == 64  # 8x8 room, one navigation: 8**2 steps.


def test_bot_episode_tokenizes(env):
  episode = E.rollout(env, registry.make_expert(env), seed=1)
  assert episode["episode_metadata"]["agent"] == "babyai_bot"
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, env.observation_spec, env.action_spec)
  steps = E.num_actions(episode)
  mission = len(T.TextTokenizer().encode(str(observations["mission"][0])))
  assert group.num_tokens == steps * (mission + 7 * 7 * 3 + 1 + 1)
  decoded = T.detokenize_action(group.tokens[group.action_mask].reshape(steps, 1), env.action_spec)
  np.testing.assert_array_equal(decoded, actions)


def test_reset_is_deterministic(env):
  a = E.rollout(env, registry.make_expert(env), seed=5)
  b = E.rollout(env, registry.make_expert(env), seed=5)
  np.testing.assert_array_equal(
    a["steps"]["observation"]["grid"], b["steps"]["observation"]["grid"]
  )
  np.testing.assert_array_equal(a["steps"]["action"], b["steps"]["action"])
  c = E.rollout(env, policies.RandomPolicy(env), seed=5)
  d = E.rollout(env, policies.RandomPolicy(env), seed=5)
  np.testing.assert_array_equal(c["steps"]["action"], d["steps"]["action"])


@pytest.mark.parametrize("level", ["GoToRedBall", "PutNextLocal", "BossLevel"])
def test_bot_beats_random(level):
  env = registry.make_env(f"babyai/{level}")
  seeds = range(100, 106)
  bot = [E.rollout(env, registry.make_expert(env), s) for s in seeds]
  rnd = [E.rollout(env, policies.RandomPolicy(env), s) for s in seeds]
  bot_return, _, _, bot_success = E.summarize_returns(bot)
  random_return, _, _, _ = E.summarize_returns(rnd)
  assert bot_success == 1.0
  assert bot_return > random_return + 0.5, (bot_return, random_return)


def test_a_stuck_bot_ends_the_episode_as_a_failure():
  # On this seed minigrid 3.2.0's bot replans forever inside one step; the policy gives up and
  # the rollout records a failed, truncated episode instead of hanging.
  env = registry.make_env("babyai/GoToImpUnlock")
  episode = E.rollout(env, registry.make_expert(env), seed=25066162)
  meta = episode["episode_metadata"]
  assert (meta["success"], float(meta["return"])) == (0, 0.0)
  assert episode["steps"]["is_last"][-1] and not episode["steps"]["is_terminal"].any()
  assert E.num_actions(episode) < env.max_episode_steps


def test_bad_inputs_give_clear_errors(env):
  with pytest.raises(ValueError, match="unknown BabyAI level 'GoToMoon'"):
    babyai.BabyAIEnv("GoToMoon")
  env.reset(0)
  with pytest.raises(ValueError, match=r"integers in \[0, 7\)"):
    env.step(9)
  with pytest.raises(RuntimeError, match="reset"):
    babyai.BabyAIBotPolicy(env).act(None)
