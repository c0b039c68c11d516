"""Timesteps and episodes to typed token groups, and action tokens back to actions.

A timestep is `observation tokens | action tokens`: observation leaves in lexicographic key
order (text pieces, image patches, flattened values), the separator, then the action's values
(docs/design.md, Tokens). An episode concatenates its timesteps. One implementation serves both:
each leaf may carry leading batch dimensions, so an episode of T timesteps is tokenized as one
vectorised batch of T and then flattened, on numpy or under jit/vmap alike.
"""

import functools
from typing import Any, Sequence

import flax.struct
import jax
import numpy as np

from gato_jax.tokenizer import _arrays, images, specs, values
from gato_jax.tokenizer.constants import (
  NO_LOCAL_POSITION,
  SEPARATOR_ID,
  TEXT_VOCAB_SIZE,
  VALUE_OFFSET,
  TokenKind,
)


@flax.struct.dataclass
class TokenGroup:
  """Tokens of one timestep, an episode, or a batch of either (leading dims shared by all).

  Attributes:
    tokens: int32 [..., T] ids; image-patch slots hold 0 (their content is in `patches`).
    kinds: int32 [..., T] TokenKind of each slot.
    local_positions: int32 [..., T] index of the token inside its timestep's observation;
      NO_LOCAL_POSITION (-1) for the separator and action tokens.
    loss_mask: bool [..., T] True for text and action tokens, the ones Gato learns to predict.
    timesteps: int32 [..., T] index of the timestep each token belongs to.
    patches: float32 [..., P, D] patch vectors, one per IMAGE_PATCH slot in slot order.
    patch_rows: float32 [..., P, 2] [start, end) of each patch's rows / image height.
    patch_cols: float32 [..., P, 2] [start, end) of each patch's columns / image width.
  """

  tokens: Any
  kinds: Any
  local_positions: Any
  loss_mask: Any
  timesteps: Any
  patches: Any
  patch_rows: Any
  patch_cols: Any

  @property
  def num_tokens(self) -> int:
    return self.tokens.shape[-1]

  @property
  def action_mask(self):
    """True at action tokens: value tokens that carry loss (observation values do not)."""
    return (self.kinds == TokenKind.VALUE) & self.loss_mask


@functools.cache
def _default_text_tokenizer():
  from gato_jax.tokenizer.text import TextTokenizer

  return TextTokenizer()


def _is_text_value(x) -> bool:
  if isinstance(x, (str, bytes)):
    return True
  return isinstance(x, np.ndarray) and x.dtype.kind in "OUS"


def _encode_text_leaves(tree: Any, spec: Any, batch_ndim: int, text_tokenizer) -> Any:
  """Replaces string text leaves with id arrays (or lists of them when a batch is ragged)."""
  flat = list(specs.flatten_with_paths(tree, spec))
  leaves = []
  for path, value, leaf_spec in flat:
    if isinstance(leaf_spec, specs.TextSpec) and (
      _is_text_value(value)
      or (isinstance(value, (list, tuple)) and value and _is_text_value(value[0]))
    ):
      tokenizer = text_tokenizer or _default_text_tokenizer()
      if batch_ndim == 0:
        value = tokenizer.encode(value.item() if isinstance(value, np.ndarray) else value)
      elif batch_ndim == 1:
        encoded = [tokenizer.encode(v) for v in np.asarray(value, dtype=object).tolist()]
        lengths = {len(e) for e in encoded}
        value = np.stack(encoded) if len(lengths) == 1 else encoded
      else:
        raise ValueError(f"text leaf {path!r}: strings are supported for one timestep or episode")
    leaves.append(value)
  return specs.unflatten(spec, leaves)


def _leaf_tokens(path: str, x, leaf_spec, batch_shape, xp, for_action: bool):
  """Tokenizes one leaf with leading `batch_shape` -> (ids [*B, n], kind, patches or None)."""
  nb = len(batch_shape)
  if isinstance(leaf_spec, specs.TextSpec):
    x = _arrays.as_int32(x, f"text ids {path!r}", xp, 0, TEXT_VOCAB_SIZE)
    if x.ndim != nb + 1:
      raise ValueError(f"text ids {path!r} must have shape {list(batch_shape)}+[n], got {x.shape}")
    return x, TokenKind.TEXT, None
  if isinstance(leaf_spec, specs.ImageSpec):
    x = xp.asarray(x)
    if x.ndim != nb + 3:
      raise ValueError(
        f"image {path!r} must have shape {list(batch_shape)}+[H, W, C], got {x.shape}"
      )
    images.check_image_shape(x.shape, leaf_spec.patch_size, name=f"image {path!r}")
    patches = images.image_to_patches(x, leaf_spec.patch_size)
    ids = xp.zeros(patches.shape[:-1], dtype=xp.int32)
    return ids, TokenKind.IMAGE_PATCH, patches
  expected = tuple(batch_shape) + leaf_spec.shape
  if tuple(np.shape(x)) != expected:
    raise ValueError(
      f"{'action' if for_action else 'observation'} {path!r} must have shape"
      f" {list(expected)} (spec {list(leaf_spec.shape)}), got {list(np.shape(x))}"
    )
  if isinstance(leaf_spec, specs.DiscreteSpec):
    x = _arrays.as_int32(x, f"discrete values {path!r}", xp, 0, leaf_spec.num_values)
    ids = values.tokenize_discrete(x)
  else:
    x = _arrays.as_float32(
      x, f"continuous values {path!r}", xp, allow_inf=leaf_spec.allow_inf or not leaf_spec.mu_law
    )
    ids = values.tokenize_continuous(x, mu_law=leaf_spec.mu_law, allow_inf=True)  # Checked.
  return ids.reshape(*batch_shape, -1), TokenKind.VALUE, None


def _batch_shape(tree: Any, spec: Any, batch_ndim: int) -> tuple[int, ...]:
  shapes = {
    path: tuple(np.shape(value))[:batch_ndim]
    for path, value, _ in specs.flatten_with_paths(tree, spec)
  }
  distinct = set(shapes.values())
  if len(distinct) > 1:
    raise ValueError(f"leaves disagree on their leading (time/batch) dimensions: {shapes}")
  shape = distinct.pop() if distinct else ()
  if len(shape) != batch_ndim:
    raise ValueError(f"expected {batch_ndim} leading dimension(s), got leaf shapes {shapes}")
  return shape


def _tokenize_batched(
  observation, action, observation_spec, action_spec, batch_ndim: int, separator: bool = True
):
  """Tokenizes timesteps whose leaves carry `batch_ndim` leading dims -> TokenGroup [*B, L]."""
  leaves = list(specs.flatten_with_paths(observation, observation_spec))
  action_leaves = []
  if action is not None:
    if action_spec is None:
      raise ValueError("an action was given without an action_spec")
    specs.action_leaf_specs(action_spec)
    action_leaves = list(specs.flatten_with_paths(action, action_spec))
  xp = _arrays.namespace(*[v for _, v, _ in leaves + action_leaves if not _is_text_value(v)])
  batch_shape = _batch_shape(
    {"o": observation, "a": action} if action is not None else {"o": observation},
    {"o": observation_spec, "a": action_spec} if action is not None else {"o": observation_spec},
    batch_ndim,
  )

  ids, kinds, patches, rows, cols = [], [], [], [], []
  for path, x, leaf_spec in leaves:
    leaf_ids, kind, leaf_patches = _leaf_tokens(path, x, leaf_spec, batch_shape, xp, False)
    ids.append(leaf_ids)
    kinds.append(np.full(leaf_ids.shape[-1], kind, np.int32))
    if leaf_patches is not None:
      patches.append(leaf_patches)
      height, width = np.shape(x)[-3:-1]
      leaf_rows, leaf_cols = images.patch_intervals(height, width, leaf_spec.patch_size)
      rows.append(leaf_rows)
      cols.append(leaf_cols)
  num_observation = sum(k.size for k in kinds)

  if separator or action_leaves:
    ids.append(xp.full((*batch_shape, 1), SEPARATOR_ID, dtype=xp.int32))
    kinds.append(np.full(1, TokenKind.SEPARATOR, np.int32))
  for path, x, leaf_spec in action_leaves:
    leaf_ids, kind, _ = _leaf_tokens(path, x, leaf_spec, batch_shape, xp, True)
    ids.append(leaf_ids)
    kinds.append(np.full(leaf_ids.shape[-1], kind, np.int32))
  kinds = np.concatenate(kinds)
  num_tokens = kinds.size

  local_positions = np.full(num_tokens, NO_LOCAL_POSITION, np.int32)
  local_positions[:num_observation] = np.arange(num_observation)
  is_action = np.arange(num_tokens) > num_observation
  loss_mask = (kinds == TokenKind.TEXT) | is_action

  if patches:
    dims = {p.shape[-1] for p in patches}
    if len(dims) > 1:
      raise ValueError(
        f"all images of a timestep must give patches of one size, got sizes {sorted(dims)}"
        " (images with different channel counts or patch sizes)"
      )
    patches = xp.concatenate(patches, axis=-2)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
  else:
    patches = xp.zeros((*batch_shape, 0, 0), xp.float32)
    rows = cols = np.zeros((0, 2), np.float32)

  def broadcast(static: np.ndarray):
    return xp.array(xp.broadcast_to(xp.asarray(static), (*batch_shape, *static.shape)))

  return TokenGroup(
    tokens=xp.concatenate(ids, axis=-1),
    kinds=broadcast(kinds),
    local_positions=broadcast(local_positions),
    loss_mask=broadcast(loss_mask),
    timesteps=xp.zeros((*batch_shape, num_tokens), xp.int32),
    patches=patches,
    patch_rows=broadcast(rows),
    patch_cols=broadcast(cols),
  )


def tokenize_timestep(
  observation: Any,
  action: Any,
  observation_spec: Any,
  action_spec: Any = None,
  text_tokenizer=None,
  separator: bool = True,
) -> TokenGroup:
  """Tokenizes one timestep: observation tokens, `|`, action tokens.

  Args:
    observation: a nested dict of arrays (or one array) matching `observation_spec`. Text
      leaves are strings (host only) or int id arrays; images uint8 [H, W, C].
    action: the action matching `action_spec`, or None for an observation awaiting its action
      (the token group then ends with the separator, ready for decoding).
    observation_spec: leaf specs mirroring `observation`.
    action_spec: leaf specs (DiscreteSpec / ContinuousSpec) mirroring `action`.
    text_tokenizer: used for string text leaves; defaults to the packaged TextTokenizer.
    separator: False drops the `|` when there is no action, for observation-only examples
      such as an (image, caption) pair.

  Returns:
    A TokenGroup [L]; numpy on the host path, jax arrays when any input is a jax array.
  """
  observation = _encode_text_leaves(observation, observation_spec, 0, text_tokenizer)
  return _tokenize_batched(observation, action, observation_spec, action_spec, 0, separator)


def concat_token_groups(groups: Sequence[TokenGroup]) -> TokenGroup:
  """Concatenates unbatched groups along the token axis; timestep indices are renumbered."""
  if not groups:
    raise ValueError("concat_token_groups needs at least one group")
  if not _arrays.is_host(_arrays.namespace(*[g.tokens for g in groups])):
    raise TypeError("concat_token_groups runs on the host; under jit use tokenize_episode")
  offset, timesteps = 0, []
  for group in groups:
    timesteps.append(group.timesteps + offset)
    if group.num_tokens:
      offset += int(group.timesteps.max()) + 1
  with_patches = [g for g in groups if g.patches.shape[0]]
  dims = {g.patches.shape[-1] for g in with_patches}
  if len(dims) > 1:
    raise ValueError(f"cannot concatenate groups whose patches differ in size: {sorted(dims)}")
  if with_patches:
    patches = np.concatenate([g.patches for g in with_patches])
    rows = np.concatenate([g.patch_rows for g in with_patches])
    cols = np.concatenate([g.patch_cols for g in with_patches])
  else:
    patches = np.zeros((0, 0), np.float32)
    rows = cols = np.zeros((0, 2), np.float32)
  return TokenGroup(
    tokens=np.concatenate([g.tokens for g in groups]),
    kinds=np.concatenate([g.kinds for g in groups]),
    local_positions=np.concatenate([g.local_positions for g in groups]),
    loss_mask=np.concatenate([g.loss_mask for g in groups]),
    timesteps=np.concatenate(timesteps),
    patches=patches,
    patch_rows=rows,
    patch_cols=cols,
  )


def tokenize_episode(
  observations: Any,
  actions: Any,
  observation_spec: Any,
  action_spec: Any = None,
  text_tokenizer=None,
) -> TokenGroup:
  """Tokenizes an episode whose leaves carry a leading time axis [T, ...].

  Timesteps are tokenized as one vectorised batch and concatenated in time order. On the host,
  text leaves may be a list of T strings; if their lengths differ the episode is tokenized
  timestep by timestep instead. `actions` may be None (observations only, each followed by `|`).

  Returns:
    A TokenGroup [sum of timestep lengths], with `timesteps` numbering the timesteps from 0.
  """
  observations = _encode_text_leaves(observations, observation_spec, 1, text_tokenizer)
  ragged = any(
    isinstance(v, list) for _, v, _ in specs.flatten_with_paths(observations, observation_spec)
  )
  if ragged:
    leaves = list(specs.flatten_with_paths(observations, observation_spec))
    num_steps = len(leaves[0][1])
    groups = []
    for t in range(num_steps):
      obs_t = specs.unflatten(observation_spec, [v[t] for _, v, _ in leaves])
      act_t = None
      if actions is not None:
        act_leaves = [v[t] for _, v, _ in specs.flatten_with_paths(actions, action_spec)]
        act_t = specs.unflatten(action_spec, act_leaves)
      groups.append(_tokenize_batched(obs_t, act_t, observation_spec, action_spec, 0))
    return concat_token_groups(groups)

  group = _tokenize_batched(observations, actions, observation_spec, action_spec, 1)
  xp = _arrays.namespace(group.tokens)
  num_steps, length = group.tokens.shape
  # Every field is [T, n, ...]: merging the two leading axes concatenates the timesteps.
  flat = jax.tree.map(lambda a: a.reshape((num_steps * a.shape[1],) + a.shape[2:]), group)
  return flat.replace(timesteps=xp.repeat(xp.arange(num_steps, dtype=xp.int32), length))


def detokenize_action(ids, action_spec: Any):
  """Action tokens -> the action: ids [..., num_action_tokens] -> a tree like `action_spec`.

  Discrete leaves get int32 values; continuous leaves get bin centres, passed through the
  inverse mu-law if their spec has mu_law=True.
  """
  leaves = specs.action_leaf_specs(action_spec)
  xp = _arrays.namespace(ids)
  ids = _arrays.as_int32(ids, "action ids", xp)
  expected = specs.num_action_tokens(action_spec)
  if ids.ndim < 1 or ids.shape[-1] != expected:
    raise ValueError(f"the action spec takes {expected} tokens, got ids of shape {ids.shape}")
  batch = ids.shape[:-1]
  out, start = [], 0
  for path, leaf in leaves:
    size = int(np.prod(leaf.shape, dtype=np.int64))
    chunk = ids[..., start : start + size]
    start += size
    if isinstance(leaf, specs.DiscreteSpec):
      _arrays.check_range(
        chunk, VALUE_OFFSET, VALUE_OFFSET + leaf.num_values, f"action ids {path!r}", xp
      )
      value = values.detokenize_discrete(chunk)
    else:
      value = values.detokenize_continuous(chunk, mu_law=leaf.mu_law)
    out.append(value.reshape((*batch, *leaf.shape)))
  return specs.unflatten(action_spec, out)
