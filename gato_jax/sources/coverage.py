"""How much of what a policy meets the stored episodes of its task showed the model.

Each continuous observation value becomes one of 1,024 mu-law bins, a token with an embedding of
its own, trained only where the data has it. A policy that imitates a narrow expert and drifts
off the expert's states meets bins the data never had: their embeddings are still at their
initial values. `coverage` measures it per observation value: for each value (a leaf's element),
the bins the stored episodes hold, and the share of a probe rollout's tokens of that value that
are among them. Probes are episodes of a given policy from the evaluation's initial states
(uniformly random actions, zero actions, the expert), so "random 20%" reads: a policy acting
at random sees bins of that value the data showed the model a fifth of the time.
`tools/state_coverage.py` prints it for stored sets, clean and noisy (`envs.noise`).
"""

import dataclasses
from typing import Iterable

import numpy as np

from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer import values


@dataclasses.dataclass(frozen=True)
class ValueCoverage:
  """One observation value: its stored bins and the probes' tokens that are among them.

  Attributes:
    path: the observation leaf ("position", "state") and, for a leaf with several values, the
      element's index ("velocity[1]").
    stored_bins: distinct bins of the value over every stored step.
    seen: probe name -> share of the probe's tokens of this value that are stored bins.
  """

  path: str
  stored_bins: int
  seen: dict[str, float]


def value_tokens(episodes: Iterable[dict], observation_spec) -> dict[str, np.ndarray]:
  """Every step's tokens of each continuous observation value: {path: int32 [steps]}.

  Raises:
    ValueError: if the spec has no continuous (mu-law) observation values.
  """
  leaves = [
    (path, leaf)
    for path, leaf in token_specs.leaf_specs(observation_spec)
    if isinstance(leaf, token_specs.ContinuousSpec)
  ]
  if not leaves:
    raise ValueError(
      "coverage counts the bins of continuous observation values; this task's observations"
      f" have none ({observation_spec})"
    )
  columns: dict[str, list[np.ndarray]] = {}
  for episode in episodes:
    observations = episode["steps"]["observation"]
    by_path = {p: v for p, v, _ in token_specs.flatten_with_paths(observations, observation_spec)}
    for path, leaf in leaves:
      steps = np.asarray(by_path[path], np.float32)
      tokens = values.tokenize_continuous(steps, mu_law=leaf.mu_law, allow_inf=leaf.allow_inf)
      flat = np.asarray(tokens).reshape(len(steps), -1)
      for i in range(flat.shape[1]):
        name = path if flat.shape[1] == 1 and not leaf.shape else f"{path}[{i}]"
        columns.setdefault(name, []).append(flat[:, i])
  if not columns:
    raise ValueError("coverage needs at least one episode")
  return {name: np.concatenate(parts) for name, parts in columns.items()}


def coverage(
  stored: Iterable[dict], probes: dict[str, Iterable[dict]], observation_spec
) -> list[ValueCoverage]:
  """Per observation value, the stored bins and the share of each probe's tokens among them.

  Args:
    stored: the task's stored RLDS episodes.
    probes: probe name -> RLDS episodes played by that probe's policy.
    observation_spec: the task's observation spec.
  """
  seen_bins = {
    path: set(np.unique(t).tolist()) for path, t in value_tokens(stored, observation_spec).items()
  }
  probe_tokens = {
    name: value_tokens(episodes, observation_spec) for name, episodes in probes.items()
  }
  rows = []
  for path, bins in seen_bins.items():
    shares = {
      name: float(np.isin(tokens[path], list(bins)).mean()) for name, tokens in probe_tokens.items()
    }
    rows.append(ValueCoverage(path, len(bins), shares))
  return rows
