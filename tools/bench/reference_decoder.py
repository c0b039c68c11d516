"""A minimal decoder in plain JAX: the limit our train step is measured against on CPU.

Embedding table (shared with the output projection), local-position table, pre-norm blocks of
causal attention and a GELU MLP, final LayerNorm, logits at the targets only, masked
cross-entropy, AdamW: the work Gato's step must do at a config's shapes, written without Flax,
sharding annotations, metrics or options. tools/bench/train_step.py times it beside ours on the
same batches (`--cases=gato,reference`).
"""

import functools

import jax
import jax.numpy as jnp
import optax

from gato_jax.model.config import ModelConfig
from gato_jax.tokenizer.constants import padded_vocab_size


def init_params(cfg: ModelConfig, rng):
  vocab = padded_vocab_size(cfg.vocab_multiple)
  e, h, d, f, n = cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.num_layers
  keys = iter(jax.random.split(rng, 8))
  normal = lambda shape, fan_in: jax.random.normal(next(keys), shape) * fan_in**-0.5
  norm = lambda *shape: (jnp.ones(shape), jnp.zeros(shape))  # Fresh arrays: each is donated.
  return {
    "embedding": normal((vocab, e), e),
    "local": normal((cfg.num_local_positions, e), 50 * 50),
    "qkv": normal((n, 3, e, h, d), e),
    "out": normal((n, h, d, e), h * d),
    "up": normal((n, e, f), e),
    "up_bias": jnp.zeros((n, f)),
    "down": normal((n, f, e), f),
    "down_bias": jnp.zeros((n, e)),
    "norm1": norm(n, e),
    "norm2": norm(n, e),
    "final_norm": norm(e),
  }


def _norm(x, scale_bias):
  scale, bias = scale_bias
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias


def loss_fn(params, tokens, local_positions, segment_ids, positions, targets, weights):
  """Masked next-token cross-entropy with logits at `positions` [B, K] only."""
  x = params["embedding"][tokens] + jnp.where(  # [B, T, E]
    local_positions[..., None] >= 0, params["local"][jnp.maximum(local_positions, 0)], 0
  )
  t = tokens.shape[1]
  mask = (segment_ids[:, :, None] == segment_ids[:, None, :]) & jnp.tril(jnp.ones((t, t), bool))
  for i in range(params["qkv"].shape[0]):
    h = _norm(x, (params["norm1"][0][i], params["norm1"][1][i]))
    q, k, v = jnp.einsum("bte,cehd->cbthd", h, params["qkv"][i])  # 3 x [B, T, H, D]
    scores = jnp.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5
    scores = jnp.where(mask[:, None], scores, -1e9)
    attn = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, -1), v)
    x = x + jnp.einsum("bthd,hde->bte", attn, params["out"][i])
    h = _norm(x, (params["norm2"][0][i], params["norm2"][1][i]))
    h = jax.nn.gelu(h @ params["up"][i] + params["up_bias"][i])
    x = x + h @ params["down"][i] + params["down_bias"][i]
  x = jnp.take_along_axis(x, positions[..., None], axis=1)  # [B, K, E]
  logits = _norm(x, params["final_norm"]) @ params["embedding"].T  # [B, K, V]
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_step(learning_rate: float = 1e-4, weight_decay: float = 0.1):
  """(init_opt_state, step): step(params, opt_state, arrays) -> (params, opt_state, loss)."""
  tx = optax.adamw(learning_rate, b1=0.9, b2=0.95, eps=1e-8, weight_decay=weight_decay)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, arrays):
    loss, grads = jax.value_and_grad(loss_fn)(params, *arrays)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx.init, step
