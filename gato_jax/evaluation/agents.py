"""The agent interface that evaluation rollouts drive, and scripted policies behind it.

Rollouts step a batch of environments together (one row each) and ask the agent for all rows'
actions at once, so that a model makes one batched call per decoding step. Anything that can
act plugs in here: the Gato model (`model_agent.ModelAgent`), or a per-environment
`envs.policies.Policy` (an expert, the random baseline, a scripted controller) through
`PolicyAgent`, which is how tests and baselines check the evaluation machinery without a model.

  agent.setup(envs)                       # once per task, one row per environment
  agent.begin_episode(row, seed)          # after envs[row].reset(seed)
  actions = agent.act(observations)       # observations[row] is None where a row is idle
  actions = agent.act_batch(stacked, active)  # the same, observation leaves stacked over rows

`act_batch` is what environments stepped together on device (`gymnax_rollouts`) call: their
observations arrive already stacked, and an agent that can act on them whole (the model) skips
splitting them into rows.
"""

import abc
from typing import Any, Callable, Sequence

import jax
import numpy as np

from gato_jax.envs import base, policies


class _GaveUp:
  """Marker type of GAVE_UP."""

  def __repr__(self) -> str:
    return "GAVE_UP"


# Returned in a row's place by `Agent.act` when its policy cannot choose an action: the rollout
# ends that episode as a failure, as `episodes.rollout` does on `policies.PolicyGaveUp`.
GAVE_UP = _GaveUp()


class Agent(abc.ABC):
  """Acts for a batch of environments at once.

  Attributes:
    name: recorded in the evaluation results (e.g. "gato", "babyai_bot").
  """

  name: str = "agent"

  @abc.abstractmethod
  def setup(self, envs: Sequence[base.Environment]) -> None:
    """Prepares one row per environment (all of one task, so they share specs)."""

  @abc.abstractmethod
  def begin_episode(self, row: int, seed: int) -> None:
    """Starts a new episode in `row`; called right after `envs[row].reset(seed)`."""

  def end_episode(self, row: int) -> None:
    """The episode in `row` ended; the row stays idle until `begin_episode`."""
    del row

  @abc.abstractmethod
  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    """One action per row (None for idle rows, whose observation is None; GAVE_UP allowed)."""

  def act_batch(self, observations: Any, active: np.ndarray) -> list[Any]:
    """`act` on observations whose leaves are stacked over rows; `active[row]` False is idle.

    Idle rows' entries in `observations` are ignored (they may hold anything).
    """
    active = np.asarray(active, bool)
    rows = [jax.tree.map(lambda leaf, row=row: np.asarray(leaf)[row], observations)
            if active[row] else None for row in range(active.shape[0])]
    return self.act(rows)


class PolicyAgent(Agent):
  """One `policies.Policy` per environment, stepped row by row (no batching needed).

  Args:
    make_policy: `(env) -> Policy`, e.g. `registry.make_expert` or `policies.RandomPolicy`.
    name: the agent's name in results; defaults to the policies' own.
  """

  def __init__(self, make_policy: Callable[[base.Environment], policies.Policy],
               name: str | None = None):
    self._make_policy = make_policy
    self._policies: list[policies.Policy] = []
    self.name = name or "policy"
    self._named = name is not None

  def setup(self, envs: Sequence[base.Environment]) -> None:
    if not envs:
      raise ValueError("PolicyAgent.setup needs at least one environment")
    self._policies = [self._make_policy(env) for env in envs]
    if not self._named:
      self.name = getattr(self._policies[0], "name", type(self._policies[0]).__name__)

  def begin_episode(self, row: int, seed: int) -> None:
    self._policies[row].reset(seed)

  def act(self, observations: Sequence[Any | None]) -> list[Any]:
    if len(observations) != len(self._policies):
      raise ValueError(f"got {len(observations)} observations for {len(self._policies)} rows")
    actions = []
    for policy, observation in zip(self._policies, observations):
      if observation is None:
        actions.append(None)
        continue
      try:
        actions.append(policy.act(observation))
      except policies.PolicyGaveUp:
        actions.append(GAVE_UP)
    return actions
