"""Policies that act in an Environment: the experts that make Gato's data and the random baseline.

A policy sees what Gato sees (the adapter's observation) but may also hold privileged access to
the simulator (BabyAI's bot plans on the full grid). Data generation, the per-task statistics
and evaluation all drive a policy the same way:

  observation = env.reset(seed)
  policy.reset(seed)
  while ...: result = env.step(policy.act(observation)); observation = result.observation
"""

import abc
from typing import Any

import numpy as np

from gato_jax.envs import base
from gato_jax.tokenizer import specs as token_specs


class PolicyGaveUp(Exception):
  """Raised by `Policy.act` when the policy cannot choose an action (e.g. a scripted expert's
  planner loops); the rollout then ends the episode as a failure instead of hanging."""


class Policy(abc.ABC):
  """Chooses actions for one Environment.

  Attributes:
    name: the source agent recorded in episode metadata, e.g. "babyai_bot" or "random". Gato's
      prompts are drawn from episodes of the same task and source agent.
    version: what distinguishes this agent from an earlier one of the same name (a trained
      expert's parameter digest); stored data and statistics made by another version are stale.
  """

  name: str
  version: str = ""

  def reset(self, seed: int) -> None:
    """Starts a new episode; called right after `env.reset(seed)`."""
    del seed

  @abc.abstractmethod
  def act(self, observation: Any) -> Any:
    """Returns an action matching the environment's `action_spec`; may raise PolicyGaveUp."""


class RandomPolicy(Policy):
  """Uniformly random valid actions: the 0% anchor of Gato's normalised scores."""

  name = "random"

  def __init__(self, env: base.Environment):
    self._env = env
    self._rng = np.random.default_rng(0)

  def reset(self, seed: int) -> None:
    # Seeded per episode, so an episode's actions depend only on its seed (resumable and
    # deterministic generation, whatever ran before it).
    self._rng = np.random.default_rng(seed)

  def act(self, observation: Any) -> Any:
    del observation
    return self._env.random_action(self._rng)


def zero_action(action_spec: Any) -> Any:
  """Every action value 0: the middle of a continuous range, the first of a discrete one (also
  the padding action of an RLDS episode's last step)."""
  leaves = []
  for _, leaf in token_specs.action_leaf_specs(action_spec):
    dtype = np.int32 if isinstance(leaf, token_specs.DiscreteSpec) else np.float32
    leaves.append(np.zeros(leaf.shape, dtype))
  return token_specs.unflatten(action_spec, leaves)


class ZeroPolicy(Policy):
  """Always `zero_action`: a probe of the states a task drifts to when nothing steers it."""

  name = "zero"

  def __init__(self, env: base.Environment):
    self._action = zero_action(env.action_spec)

  def act(self, observation: Any) -> Any:
    del observation
    return self._action
