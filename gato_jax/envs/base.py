"""The interface every domain's environment adapter implements.

An adapter turns a real environment (gymnax, dm_control, minigrid/BabyAI, Meta-World, ALE) into
Gato's view of it: observations as nested dicts of numpy arrays whose leaves the tokenizer's
specs describe, actions as numpy arrays matching a DiscreteSpec/ContinuousSpec tree. Experts,
random policies, data generators and evaluation rollouts all talk to environments through it.
"""

import abc
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class StepResult:
  """What one environment step returns, in gymnasium's terms."""

  observation: Any  # Nested dict of numpy arrays matching `observation_spec`.
  reward: float
  terminated: bool  # The episode ended inside the MDP (discount 0).
  truncated: bool  # Cut by a time limit (bootstrapping would still be valid).
  info: dict = dataclasses.field(default_factory=dict)  # e.g. {"success": True}


class Environment(abc.ABC):
  """A Gato task: one environment configuration with fixed specs.

  Attributes:
    name: the task's registry name, "<domain>/<task>", e.g. "babyai/GoToRedBall".
    observation_spec: tokenizer leaf specs (TextSpec/ImageSpec/DiscreteSpec/ContinuousSpec)
      mirroring the observation dict.
    action_spec: DiscreteSpec/ContinuousSpec (or a dict of them) mirroring the action.
    max_episode_steps: the time limit used for data generation and evaluation.
    version: what, besides the name, decides the task's episodes (e.g. DM Control's action
      repeat); None for most. Stored episodes and statistics record it, and a change makes them
      stale (regenerated, measured again).
  """

  name: str
  observation_spec: Any
  action_spec: Any
  max_episode_steps: int
  version: str | None = None

  @abc.abstractmethod
  def reset(self, seed: int) -> Any:
    """Starts an episode deterministically from `seed`; returns the first observation."""

  @abc.abstractmethod
  def step(self, action: Any) -> StepResult:
    """Applies `action` (matching `action_spec`)."""

  def random_action(self, rng) -> Any:
    """A uniformly random valid action, drawn from a numpy Generator (the random baseline)."""
    from gato_jax.tokenizer import specs as token_specs
    import numpy as np

    leaves = []
    for _, leaf in token_specs.action_leaf_specs(self.action_spec):
      if isinstance(leaf, token_specs.DiscreteSpec):
        leaves.append(rng.integers(0, leaf.num_values, leaf.shape).astype(np.int32))
      else:
        leaves.append(rng.uniform(-1.0, 1.0, leaf.shape).astype(np.float32))
    return token_specs.unflatten(self.action_spec, leaves)

  def close(self) -> None:
    """Releases simulator resources."""
