"""Specs that say how each observation and action leaf becomes tokens.

A spec tree mirrors an observation (a nested dict, or a single leaf) with one leaf spec per
array. Dtypes alone cannot decide (a BabyAI grid is uint8 like an image but is discrete values),
so the kind is always declared. Specs are frozen and hashable: they can be closed over or passed
as static arguments under `jax.jit`.
"""

import dataclasses
from typing import Any, Iterator, Mapping

import numpy as np

from gato_jax.tokenizer.constants import NUM_BINS, PATCH_SIZE, VALUE_OFFSET


@dataclasses.dataclass(frozen=True)
class TextSpec:
  """Text: a string (host path) or its int ids [num_pieces] (any path)."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """A uint8 image [H, W, C]; one token per patch_size x patch_size patch."""

  patch_size: int = PATCH_SIZE


@dataclasses.dataclass(frozen=True)
class DiscreteSpec:
  """Integers in [0, num_values) of the given shape, e.g. a button index or a symbolic grid."""

  shape: tuple[int, ...] = ()
  num_values: int = NUM_BINS

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
    if not 1 <= self.num_values <= NUM_BINS:
      raise ValueError(f"DiscreteSpec.num_values must be in [1, {NUM_BINS}], got {self.num_values}")


@dataclasses.dataclass(frozen=True)
class ContinuousSpec:
  """Floats of the given shape; mu_law=True for observations, False for actions in [-1, 1].

  `allow_inf` lets +-inf through the mu-law as the extreme bins; by default an infinite
  observation is refused like NaN, as a sign of a broken environment.
  """

  shape: tuple[int, ...] = ()
  mu_law: bool = True
  allow_inf: bool = False

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))


LEAF_SPEC_TYPES = (TextSpec, ImageSpec, DiscreteSpec, ContinuousSpec)
ValueSpec = DiscreteSpec | ContinuousSpec


def flatten_with_paths(tree: Any, spec: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
  """Yields (key path, value, leaf spec) in lexicographic key order, checking keys match.

  Sorting the keys at every level orders leaves lexicographically by their key paths, which is
  the order Gato puts observation tokens in.
  """
  if isinstance(spec, LEAF_SPEC_TYPES):
    yield path or "<root>", tree, spec
    return
  if not isinstance(spec, Mapping):
    raise TypeError(f"spec at {path or '<root>'!r} must be a dict or a leaf spec, got {spec!r}")
  if not isinstance(tree, Mapping):
    raise TypeError(
      f"expected a dict at {path or '<root>'!r} (spec keys {sorted(spec)}),"
      f" got {type(tree).__name__}"
    )
  missing = sorted(set(spec) - set(tree))
  extra = sorted(set(tree) - set(spec))
  if missing or extra:
    raise KeyError(
      f"keys at {path or '<root>'!r} do not match the spec: missing {missing}, unexpected {extra}"
    )
  for key in sorted(spec):
    yield from flatten_with_paths(tree[key], spec[key], f"{path}/{key}" if path else str(key))


def leaf_specs(spec: Any) -> list[tuple[str, Any]]:
  """(key path, leaf spec) pairs of a spec tree, in token order."""
  if isinstance(spec, LEAF_SPEC_TYPES):
    return [("<root>", spec)]
  out = []
  for key in sorted(spec):
    for path, leaf in leaf_specs(spec[key]):
      out.append((f"{key}/{path}" if path != "<root>" else str(key), leaf))
  return out


def unflatten(spec: Any, leaves: list) -> Any:
  """Rebuilds a tree shaped like `spec` from leaves given in token order."""
  leaves = list(leaves)

  def build(node):
    if isinstance(node, LEAF_SPEC_TYPES):
      return leaves.pop(0)
    return {key: build(node[key]) for key in sorted(node)}

  return build(spec)


def action_leaf_specs(action_spec: Any) -> list[tuple[str, ValueSpec]]:
  """Leaf specs of an action; actions are values only (text answers are observations)."""
  leaves = leaf_specs(action_spec)
  for path, leaf in leaves:
    if not isinstance(leaf, (DiscreteSpec, ContinuousSpec)):
      raise TypeError(
        f"action leaf {path!r} has spec {leaf!r}; actions must be DiscreteSpec or ContinuousSpec"
      )
  return leaves


def num_action_tokens(action_spec: Any) -> int:
  """How many tokens one action takes, i.e. how many the agent decodes per step."""
  return sum(int(np.prod(leaf.shape, dtype=np.int64)) for _, leaf in action_leaf_specs(action_spec))


def action_token_id_ranges(action_spec: Any) -> np.ndarray:
  """int32 [num_action_tokens, 2]: the valid [low, high) id range of each action token.

  Decoding masks logits to these ranges, so a discrete action with 6 choices can only produce
  one of its 6 ids (docs/design.md, Evaluation).
  """
  ranges = []
  for _, leaf in action_leaf_specs(action_spec):
    high = VALUE_OFFSET + (leaf.num_values if isinstance(leaf, DiscreteSpec) else NUM_BINS)
    ranges += [(VALUE_OFFSET, high)] * int(np.prod(leaf.shape, dtype=np.int64))
  return np.asarray(ranges, dtype=np.int32).reshape(-1, 2)
