"""The Gato network: sizes, embeddings, causality, packing, loss masking, learning."""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import sharding
from gato_jax import tokenizer as T
from gato_jax.model import (
  NOMINAL_PARAMS,
  SIZES,
  Gato,
  ModelConfig,
  batch_from_token_groups,
  init_variables,
)
from gato_jax.model.embeddings import (
  VALUE_INIT_LENGTH_SCALE,
  patch_position_bins,
  token_table_init,
)
from gato_jax.training.optimizer import OptimizerConfig, learning_rate_schedule
from gato_jax.training.step import (
  Budget,
  abstract_param_count,
  batch_loads,
  bucket,
  create_train_state,
  loss_and_metrics,
  make_train_step,
  masked_next_token_loss,
  target_positions,
)

from helpers.scripts import run_python

ROOT = pathlib.Path(__file__).parents[1]
TINY = ModelConfig.from_size("tiny", stochastic_depth=0.0)

# Exact counts pin the architecture: a change to any of them must be deliberate.
EXPECTED_PARAMS = {
  "tiny": 576_976,
  "mini": 1_756_704,
  "small": 5_218_304,
  "79m": 73_706_880,
  "364m": 336_193_152,
  "1.18b": 1_077_617_792,
}


def test_parameter_counts_of_every_size():
  for size in SIZES:
    count = abstract_param_count(ModelConfig.from_size(size))
    assert count == EXPECTED_PARAMS[size], size
    if size in NOMINAL_PARAMS:
      assert abs(count / NOMINAL_PARAMS[size] - 1) < 0.10, size
  assert EXPECTED_PARAMS["tiny"] < 1_000_000


def test_geglu_feed_forward():
  """The paper sizes use GEGLU: down(value * gelu(gate)), value and gate halves of mlp_dim."""
  from gato_jax.model.transformer import Mlp

  assert [SIZES[s].get("mlp_activation", "gelu") for s in SIZES] == ["gelu"] * 3 + ["geglu"] * 3
  cfg = ModelConfig.from_size("tiny", mlp_activation="geglu")
  x = jax.random.normal(jax.random.key(0), (2, 3, cfg.width))
  params = nn.unbox(Mlp(cfg).init(jax.random.key(1), x))["params"]
  assert {k: v["kernel"].shape for k, v in params.items()} == {
    "up": (16, 32),
    "gate": (16, 32),
    "down": (32, 16),
  }
  assert nn.get_partition_spec(Mlp(cfg).init(jax.random.key(1), x))["params"]["gate"][
    "kernel"
  ] == jax.sharding.PartitionSpec("embed", "mlp")
  dense = lambda p, h: h @ p["kernel"] + p["bias"]
  expected = dense(params["down"], dense(params["up"], x) * jax.nn.gelu(dense(params["gate"], x)))
  np.testing.assert_allclose(Mlp(cfg).apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown mlp_activation 'swiglu'"):
    ModelConfig.from_size("tiny", mlp_activation="swiglu")


def test_model_summary_tool():
  out = run_python("tools/model_summary.py", "--config=experiments/configs/gato.py:tiny").stdout
  assert f"params: {EXPECTED_PARAMS['tiny']}\n" in out
  assert "decoder/attention" in out and "embedder" in out


def test_bad_model_configs():
  with pytest.raises(ValueError, match="unknown model size 'huge'"):
    ModelConfig.from_size("huge")
  with pytest.raises(ValueError, match="multiple of 32"):
    ModelConfig.from_size("tiny", patch_resnet_channels=48)
  with pytest.raises(ValueError, match="unknown model config fields"):
    ModelConfig.from_dict({"size": "tiny", "widht": 3})
  with pytest.raises(ValueError, match="unknown decode_cache 'ring'"):
    ModelConfig.from_size("tiny", decode_cache="ring")
  with pytest.raises(ValueError, match="unknown position_encoding 'alibi'"):
    ModelConfig.from_size("tiny", position_encoding="alibi")
  with pytest.raises(ValueError, match="rope rotates pairs of head dimensions; head_dim 7"):
    ModelConfig.from_size("tiny", position_encoding="rope", head_dim=7)
  with pytest.raises(ValueError, match="value_init_correlation must lie in"):
    ModelConfig.from_size("tiny", value_init_correlation=1.5)


def test_value_bins_start_correlated_with_their_neighbours_only_when_asked():
  key, shape, std = jax.random.key(3), (T.VOCAB_SIZE + 127, 64), 0.125
  plain = token_table_init(std, 0.0)(key, shape)
  np.testing.assert_array_equal(plain, nn.initializers.normal(std)(key, shape))
  table = np.asarray(token_table_init(std, 0.6)(key, shape))
  values = slice(T.VALUE_OFFSET, T.VALUE_OFFSET + T.NUM_BINS)
  others = np.r_[: T.VALUE_OFFSET, T.VALUE_OFFSET + T.NUM_BINS : shape[0]]
  np.testing.assert_array_equal(table[others], np.asarray(plain)[others])
  bins = table[values] / std
  assert abs(bins.std() - 1.0) < 0.1  # Every row keeps the scale of the other ids' rows.

  def correlation(lag):
    a, b = bins[: T.NUM_BINS - lag], bins[lag:]
    return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

  near, far = correlation(1), correlation(int(8 * VALUE_INIT_LENGTH_SCALE))
  assert 0.45 < near < 0.75 and abs(far) < 0.1, (near, far)
  iid = np.asarray(plain)[values]
  assert abs(np.mean(np.sum(iid[:-1] * iid[1:], 1))) / std**2 / shape[1] < 0.1


def _timestep_groups(num_steps=3, seed=0):
  """A real episode of image + proprio observations and 2-d continuous actions."""
  rng = np.random.default_rng(seed)
  spec = {"camera": T.ImageSpec(), "proprio": T.ContinuousSpec((3,))}
  obs = {
    "camera": rng.integers(0, 256, (num_steps, 32, 32, 3), dtype=np.uint8),
    "proprio": rng.standard_normal((num_steps, 3)).astype(np.float32),
  }
  act = rng.uniform(-1, 1, (num_steps, 2)).astype(np.float32)
  return T.tokenize_episode(obs, act, spec, T.ContinuousSpec((2,), mu_law=False))


def _batch(num_rows=2, seq_len=48, max_patches=16):
  groups = [_timestep_groups(seed=i) for i in range(num_rows)]
  return batch_from_token_groups(groups, seq_len, max_patches, TINY.patch_dim)


@pytest.fixture(scope="module")
def tiny_params():
  return nn.unbox(jax.jit(lambda r: init_variables(TINY, r))(jax.random.key(0)))["params"]


# Jitted, not op by op: a tiny model compiles in ~1 CPU-s, while eager calls compile each of its
# hundreds of primitives for every new shape (~6 CPU-s).
@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def _apply(config, params, batch, train=False, rngs=None):
  return Gato(config).apply({"params": params}, batch, train=train, rngs=rngs)


_loss = jax.jit(masked_next_token_loss)


def test_forward_shapes_and_padded_vocab(tiny_params):
  batch = _batch()
  logits = _apply(TINY, tiny_params, batch)
  assert logits.shape == (2, 48, T.padded_vocab_size()) and logits.dtype == jnp.float32
  assert np.all(np.asarray(logits[..., T.VOCAB_SIZE :]) <= -1e8)
  assert np.isfinite(np.asarray(logits[..., : T.VOCAB_SIZE])).all()


def test_causality_and_image_influence(tiny_params):
  batch = _batch()
  apply = lambda b: np.asarray(_apply(TINY, tiny_params, b))
  base = apply(batch)
  # Change the second image patch's pixels: logits before its slot stay, after it change.
  slot = int(np.flatnonzero(batch.kinds[0] == T.TokenKind.IMAGE_PATCH)[1])
  patches = batch.patches.copy()
  patches[0, 1] += 0.5
  changed = apply(batch.replace(patches=patches))
  np.testing.assert_allclose(changed[0, :slot], base[0, :slot], atol=1e-5)
  assert np.abs(changed[0, slot:] - base[0, slot:]).max() > 1e-3
  np.testing.assert_allclose(changed[1], base[1], atol=1e-5)  # Other rows untouched.


def test_packed_segments_do_not_attend_across(tiny_params):
  a, b = _timestep_groups(2, seed=1), _timestep_groups(2, seed=2)
  packed = T.concat_token_groups([a, b])
  # Row 0 packs a then b; row 1 holds b alone.
  batch = batch_from_token_groups([packed, b], 48, 16, TINY.patch_dim)
  segment_ids = batch.segment_ids.copy()
  segment_ids[0, a.num_tokens : b.num_tokens + a.num_tokens] = 2
  logits = _apply(TINY, tiny_params, batch.replace(segment_ids=segment_ids))
  # No global positions: the second segment sees exactly what it would see alone.
  np.testing.assert_allclose(
    logits[0, a.num_tokens : a.num_tokens + b.num_tokens], logits[1, : b.num_tokens], atol=1e-4
  )


def test_patch_position_bins():
  intervals = jnp.array([[0.0, 0.25], [0.5, 1.0], [0.9375, 1.0]])
  np.testing.assert_array_equal(patch_position_bins(intervals, 128, train=False), [16, 96, 124])
  samples = patch_position_bins(
    jnp.tile(intervals, (2000, 1, 1)), 128, train=True, rng=jax.random.key(0)
  )
  for i, (low, high) in enumerate([(0, 32), (64, 128), (120, 128)]):
    column = np.asarray(samples[:, i])
    assert column.min() == low and column.max() == high - 1  # Uniform over the whole interval.


def test_train_mode_is_stochastic_eval_is_not(tiny_params):
  cfg = ModelConfig.from_size("tiny", stochastic_depth=0.5)
  batch = _batch()
  run = lambda seed: _apply(
    cfg,
    tiny_params,
    batch,
    train=True,
    rngs={"dropout": jax.random.key(seed), "patch_positions": jax.random.key(seed)},
  )
  assert np.abs(np.asarray(run(0)) - np.asarray(run(1))).max() > 1e-4
  np.testing.assert_array_equal(_apply(cfg, tiny_params, batch), _apply(cfg, tiny_params, batch))


def test_loss_counts_only_text_and_action_targets():
  batch = _batch()
  logits = jax.random.normal(jax.random.key(0), (2, 48, T.padded_vocab_size()))
  loss, metrics = _loss(logits, batch)
  observation_slot = int(
    np.flatnonzero((batch.kinds[0] == T.TokenKind.VALUE) & ~batch.loss_mask[0])[1]
  )
  action_slot = int(np.flatnonzero(batch.loss_mask[0])[0])
  tokens = batch.tokens.copy()
  tokens[0, observation_slot] += 1
  assert _loss(logits, batch.replace(tokens=tokens))[0] == loss
  tokens = batch.tokens.copy()
  tokens[0, action_slot] += 1
  assert _loss(logits, batch.replace(tokens=tokens))[0] != loss
  assert metrics["target_tokens"] == batch.loss_mask.sum() == metrics["action_tokens"]
  assert metrics["text_tokens"] == 0


def test_schedule_matches_the_paper():
  schedule = learning_rate_schedule(OptimizerConfig())
  assert float(schedule(0)) == pytest.approx(1e-7)
  assert float(schedule(15_000)) == pytest.approx(1e-4)
  assert float(schedule(1_000_000)) == pytest.approx(1e-5)
  assert 1e-5 < float(schedule(500_000)) < 1e-4


def test_loss_decreases_when_overfitting_a_batch():
  mesh = sharding.create_mesh((1, 1, 1), jax.devices()[:1])
  # A high rate: the loss halves in a dozen steps (at 3e-3 it took 60, 4x the CPU time).
  opt = OptimizerConfig(peak_learning_rate=3e-2, warmup_steps=1, decay_steps=200, weight_decay=0.0)
  state, trainer = create_train_state(TINY, opt, mesh, "fsdp", jax.random.key(0))
  batch = _batch(num_rows=4)
  step = make_train_step(trainer, batch)
  losses = []
  for _ in range(14):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  # ln(33025) = 10.4 at chance; memorising 24 action tokens must get far below it.
  assert losses[0] > 9.0
  assert losses[-1] < 0.5 * losses[0], losses
  assert float(metrics["accuracy_action"]) > 0.3


def test_remat_unrolled_and_bf16_variants(tiny_params):
  batch = _mixed_batch()
  (base_loss, _), base_grads = _loss_and_grads(TINY, tiny_params, batch)
  remat = ModelConfig.from_size("tiny", stochastic_depth=0.0, remat_policy="full")
  _, remat_grads = _loss_and_grads(remat, tiny_params, batch)
  for a, b in zip(jax.tree.leaves(base_grads), jax.tree.leaves(remat_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Unrolled layers hold the same weights under per-layer names.
  unrolled = ModelConfig.from_size("tiny", stochastic_depth=0.0, scan_layers=False)
  layers = tiny_params["decoder"]["layers"]
  params = dict(
    tiny_params,
    decoder={f"layer_{i}": jax.tree.map(lambda x: x[i], layers) for i in range(TINY.num_layers)},
  )
  unrolled_loss = _loss(_apply(unrolled, params, batch), batch)[0]
  np.testing.assert_allclose(unrolled_loss, base_loss, rtol=1e-5)
  # bf16 compute keeps fp32 parameters and lands near the fp32 loss.
  bf16 = ModelConfig.from_size("tiny", stochastic_depth=0.0, dtype="bfloat16")
  bf16_loss = _loss(_apply(bf16, tiny_params, batch), batch)[0]
  assert abs(float(bf16_loss) - float(base_loss)) < 0.05 * float(base_loss)
  shapes = jax.eval_shape(lambda r: init_variables(bf16, r), jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(shapes))} == {jnp.dtype("float32")}


def _proprio_groups(num_steps=4, seed=0):
  """An episode without images: a row that needs no ResNet work."""
  rng = np.random.default_rng(seed)
  spec = {"proprio": T.ContinuousSpec((5,))}
  obs = {"proprio": rng.standard_normal((num_steps, 5)).astype(np.float32)}
  act = rng.uniform(-1, 1, (num_steps, 3)).astype(np.float32)
  return T.tokenize_episode(obs, act, spec, T.ContinuousSpec((3,), mu_law=False))


def _mixed_batch():
  """Rows 0 and 3 hold images (12 patches each); rows 1 and 2 none: the padded batch gives every
  row 16 patch slots, a budget embeds only the real ones."""
  rows = [_timestep_groups(seed=0), _proprio_groups(seed=1)]
  rows += [_proprio_groups(seed=2), _timestep_groups(seed=3)]
  return batch_from_token_groups(rows, 48, 16, TINY.patch_dim)


# One jitted function for the tests that compare gradients: those of the same config, shapes and
# budget (the full loss of `_mixed_batch`, most of all) compile once.
@functools.partial(jax.jit, static_argnums=(0, 3))
def _loss_and_grads(config, params, batch, budget=None):
  """((loss, metrics), gradients) of the training loss in evaluation mode."""
  loss = lambda p: loss_and_metrics(p, batch, jax.random.key(0), Gato(config), False, budget)
  return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_budgets_per_group_give_the_same_loss_gradients_and_row_losses(tiny_params, groups):
  batch = _mixed_batch()
  targets, patches = batch_loads(batch, groups)
  per_row_targets = np.asarray(batch.loss_mask[:, 1:]).sum(1)
  assert targets == per_row_targets.reshape(groups, -1).sum(1).max()
  assert patches == {1: 24, 2: 12, 4: 12}[groups]
  budget = Budget(groups, bucket(targets, 4 // groups * 48), bucket(patches, 4 // groups * 16))
  assert budget.patches == {1: 32, 2: 16, 4: 16}[groups]  # Of 64, 32 and 16 padded slots.
  (loss_a, metrics_a), grads_a = _loss_and_grads(TINY, tiny_params, batch)
  (loss_b, metrics_b), grads_b = _loss_and_grads(TINY, tiny_params, batch, budget)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  for key in ("target_tokens", "row_targets", "row_loss_sum", "loss_action"):
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-5, err_msg=key)
  np.testing.assert_array_equal(metrics_b["row_targets"], per_row_targets)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
  # Positions index each group's rows flattened: row r, column t is (r mod B/G) T + t.
  positions = np.asarray(target_positions(batch, budget.targets, groups))
  rows_per_group = 4 // groups
  for g in range(groups):
    want = [
      (r % rows_per_group) * 48 + t
      for r in range(g * rows_per_group, (g + 1) * rows_per_group)
      for t in np.flatnonzero(np.asarray(batch.loss_mask[r, 1:]))
    ]
    np.testing.assert_array_equal(positions[g, : len(want)], want)


def test_logits_at_targets_only_give_the_same_loss_and_gradients(tiny_params):
  batch = _mixed_batch()
  count = batch_loads(batch, groups=4)[0]
  k = bucket(count, batch.tokens.shape[1] - 1)
  assert count == 12 and k == 16
  # Logits at each row's first k target positions, every patch slot through the ResNet.
  np.testing.assert_array_equal(target_positions(batch, k), target_positions(batch, k, groups=4))
  (loss_a, metrics_a), grads_a = _loss_and_grads(TINY, tiny_params, batch)
  (loss_b, metrics_b), grads_b = _loss_and_grads(TINY, tiny_params, batch, Budget(4, targets=k))
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  assert metrics_a["target_tokens"] == metrics_b["target_tokens"] == 36
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)


def test_budget_loads_follow_the_microbatch_split():
  rows = [_timestep_groups(seed=i) if i in (0, 5) else _proprio_groups(seed=i) for i in range(8)]
  batch = batch_from_token_groups(rows, 48, 16, TINY.patch_dim)
  # 2 microbatches take rows (0, 2, 4, 6) and (1, 3, 5, 7); 2 groups of each: (0, 2), (4, 6)...
  targets = np.asarray(batch.loss_mask[:, 1:]).sum(1)
  split = [targets[[0, 2]], targets[[4, 6]], targets[[1, 3]], targets[[5, 7]]]
  assert batch_loads(batch, 2, 2) == (max(int(t.sum()) for t in split), 12)
  assert batch_loads(batch, 1, 4)[1] == 12  # Rows 0 and 5 fall in different microbatches.
  assert batch_loads(batch, 1, 1)[1] == 24
  with pytest.raises(ValueError, match="3 microbatches x 1 groups do not divide 8 rows"):
    batch_loads(batch, 1, 3)
  assert [bucket(n, 100) for n in (0, 1, 16, 17, 64, 65, 99)] == [0, 16, 16, 32, 64, 100, 100]
