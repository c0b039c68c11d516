"""Meta-World adapter (optional extra): specs, seeds, scripted experts, success flags, TFDS.

Skipped where metaworld is not installed (CI installs requirements.txt, which cannot hold it next
to dm-control), except the check of the error that says how to install it; run them in an
environment with the extra (README, "Optional extras").
"""

import importlib.util

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import episodes as E
from gato_jax.data import rlds_io
from gato_jax.envs import metaworld_envs, policies, registry


@pytest.fixture(scope="module")
def reach():
  pytest.importorskip("metaworld")
  return registry.make_env("metaworld/reach-v3")


@pytest.mark.skipif(
  importlib.util.find_spec("metaworld") is not None, reason="metaworld is installed"
)
def test_without_the_extra_tasks_list_and_building_says_how_to_install():
  assert "metaworld/reach-v3" in registry.list_tasks("metaworld")
  with pytest.raises(ImportError, match=r"install metaworld==3\.1\.1 into an environment"):
    registry.make_env("metaworld/reach-v3")


def _assert_trees_equal(a, b, path="<root>"):
  if isinstance(a, dict):
    assert sorted(a) == sorted(b), path
    for key in a:
      _assert_trees_equal(a[key], b[key], f"{path}/{key}")
  else:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a, b, err_msg=path)


def test_every_mt10_task_builds_with_gato_specs():
  pytest.importorskip("metaworld")
  assert len(metaworld_envs.TASKS) == 10
  for task in metaworld_envs.TASKS:
    env = registry.make_env(f"metaworld/{task}")
    assert env.observation_spec == {"state": T.ContinuousSpec((39,), mu_law=True)}
    assert env.action_spec == T.ContinuousSpec((4,), mu_law=False)
    assert env.max_episode_steps == 500
    observation = env.reset(0)
    assert observation["state"].shape == (39,) and observation["state"].dtype == np.float32
    # The goal is observable (the MT benchmarks' setting): the last 3 values are not zeros.
    assert np.abs(observation["state"][-3:]).sum() > 0
    assert registry.has_expert(env.name)


def test_seeds_fix_the_goal(reach):
  a, b, c = reach.reset(3), reach.reset(3), reach.reset(4)
  np.testing.assert_array_equal(a["state"], b["state"])
  assert not np.array_equal(a["state"][-3:], c["state"][-3:])


def test_scripted_expert_succeeds_where_random_fails(reach):
  expert = registry.make_expert(reach)
  assert expert.name == "metaworld_scripted"
  episode = E.rollout(reach, expert, seed=1)
  steps = episode["steps"]
  assert E.num_actions(episode) == 500  # Time limit: truncated, never terminal.
  assert not steps["is_terminal"].any() and steps["discount"].min() == 1.0
  assert episode["episode_metadata"]["success"] == 1
  assert np.abs(steps["action"]).max() <= 1.0
  random_episode = E.rollout(reach, policies.RandomPolicy(reach), seed=1)
  assert random_episode["episode_metadata"]["success"] == 0
  assert episode["episode_metadata"]["return"] > 4 * random_episode["episode_metadata"]["return"]
  observations, actions = E.action_steps(episode)
  group = T.tokenize_episode(observations, actions, reach.observation_spec, reach.action_spec)
  assert group.num_tokens == 500 * (39 + 1 + 4)


def test_success_latches_once_reached(reach, monkeypatch):
  reach.reset(0)
  flags = iter([False, True, False, False])
  step = reach.sim.step

  def scripted_success(action):
    obs, reward, terminated, truncated, info = step(action)
    return obs, reward, terminated, truncated, {**info, "success": next(flags)}

  monkeypatch.setattr(reach.sim, "step", scripted_success)
  seen = [reach.step(np.zeros(4, np.float32)).info["success"] for _ in range(4)]
  assert seen == [False, True, True, True]
  reach.reset(0)
  monkeypatch.setattr(reach.sim, "step", lambda action: step(action)[:4] + ({"success": 0.0},))
  assert reach.step(np.zeros(4, np.float32)).info["success"] is False  # Reset clears it.


def test_episodes_round_trip_through_tfds(tmp_path):
  pytest.importorskip("metaworld")
  env = registry.make_env("metaworld/drawer-close-v3")
  env.max_episode_steps = 20  # A handful of short episodes keeps the test fast.
  expert = registry.make_expert(env)
  written = [E.rollout(env, expert, seed=s) for s in range(2)]
  path = rlds_io.write_episodes(written, str(tmp_path), "gato_metaworld", "drawer_close_v3")
  for original, read in zip(written, rlds_io.read_episodes(path), strict=True):
    _assert_trees_equal(original, read)


def test_bad_inputs_give_clear_errors(reach):
  with pytest.raises(ValueError, match="unknown Meta-World task 'reach-v9'"):
    metaworld_envs.MetaWorldEnv("reach-v9")
  with pytest.raises(ValueError, match="unknown metaworld task 'fly-v3'"):
    registry.make_env("metaworld/fly-v3")
  with pytest.raises(ValueError, match=r"shape \(4,\)"):
    reach.step(np.zeros(3))
  with pytest.raises(ValueError, match="non-finite"):
    reach.step(np.array([0.0, np.nan, 0.0, 0.0]))
  with pytest.raises(TypeError, match="needs a MetaWorldEnv"):
    metaworld_envs.ScriptedPolicy(registry.make_env("atari/Pong"))
