"""The paper's optimiser: AdamW with linear warm-up, cosine decay and global-norm clipping.

docs/design.md, Training: beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1; warm-up over 15,000
steps from 1e-7 to 1e-4, then cosine decay by 10x over 1,000,000 steps; clipping at norm 1.0.
"""

import dataclasses
from typing import Any, Mapping

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  peak_learning_rate: float = 1e-4
  initial_learning_rate: float = 1e-7
  warmup_steps: int = 15_000
  decay_steps: int = 1_000_000  # Total schedule length, warm-up included.
  decay_factor: float = 10.0  # The final learning rate is peak / decay_factor.
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  grad_clip_norm: float = 1.0

  @classmethod
  def from_dict(cls, fields: Mapping[str, Any]) -> "OptimizerConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown optimizer config fields {unknown}; known: {sorted(known)}")
    return cls(**dict(fields))


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  if cfg.warmup_steps >= cfg.decay_steps:
    raise ValueError(
      f"warmup_steps ({cfg.warmup_steps}) must be below decay_steps ({cfg.decay_steps})"
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=cfg.initial_learning_rate,
    peak_value=cfg.peak_learning_rate,
    warmup_steps=cfg.warmup_steps,
    decay_steps=cfg.decay_steps,
    end_value=cfg.peak_learning_rate / cfg.decay_factor,
  )


def _decay_mask(params):
  """Weight decay on matrices and tables only: not on biases or LayerNorm/GroupNorm scales."""

  def decays(path, _):
    # The last dict key names the parameter; boxed (annotated) params add a `.value` after it.
    names = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
    return not names or names[-1] not in ("bias", "scale")

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: OptimizerConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(cfg)
  tx = optax.chain(
    optax.clip_by_global_norm(cfg.grad_clip_norm),
    optax.adamw(
      schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask
    ),
  )
  return tx, schedule
