"""Mu-law, binning and value-token ids: exact values, edges and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T


def _f(x, mu=100.0, m=256.0):
  return math.copysign(math.log(abs(x) * mu + 1) / math.log(m * mu + 1), x)


def test_constants():
  assert (T.TEXT_VOCAB_SIZE, T.VALUE_OFFSET, T.NUM_BINS, T.SEPARATOR_ID) == (
    32000,
    32000,
    1024,
    33024,
  )
  assert T.VOCAB_SIZE == 33025
  assert T.padded_vocab_size() == 33152  # 259 * 128
  assert T.padded_vocab_size() % 128 == 0


@pytest.mark.parametrize("x", [0.0, 0.01, -0.01, 0.5, 1.0, -1.0, 10.0, -37.5, 256.0, -256.0])
def test_mu_law_known_points(x):
  got = T.mu_law_encode(np.float32(x))
  assert got == pytest.approx(_f(x), rel=1e-6, abs=1e-7)


def test_mu_law_reference_values():
  # log(101)/log(25601) and log(2)/log(25601), worked by hand.
  np.testing.assert_allclose(
    T.mu_law_encode(np.array([1.0, 0.01])), [0.4546742, 0.0682877], rtol=1e-6
  )
  np.testing.assert_array_equal(T.mu_law_encode(np.array([256.0, -256.0, 0.0])), [1.0, -1.0, 0.0])


def test_mu_law_parameters_and_inverse():
  x = np.linspace(-300, 300, 2001, dtype=np.float32)
  for mu, m in [(100.0, 256.0), (10.0, 8.0)]:
    y = T.mu_law_encode(x, mu=mu, m=m)
    np.testing.assert_allclose(T.mu_law_decode(y, mu=mu, m=m), x, rtol=2e-5, atol=1e-5)
  assert T.mu_law_encode(np.float32(8.0), mu=10.0, m=8.0) == pytest.approx(1.0)


def test_discretize_edges():
  n = 1024
  edges = (-1.0 + 2.0 * np.arange(n) / n).astype(np.float32)
  np.testing.assert_array_equal(T.discretize(edges), np.arange(n))  # An edge opens its bin.
  just_below = np.nextafter(edges[1:], np.float32(-np.inf))
  np.testing.assert_array_equal(T.discretize(just_below), np.arange(n - 1))
  just_above = np.nextafter(edges, np.float32(np.inf))
  np.testing.assert_array_equal(T.discretize(just_above), np.arange(n))
  special = np.array(
    [
      -1.0,
      0.0,
      np.nextafter(np.float32(0), np.float32(-1)),
      1.0,
      np.nextafter(np.float32(1), np.float32(0)),
      1.5,
      -7.0,
      np.inf,
      -np.inf,
      -1e-30,
    ],
    np.float32,
  )
  np.testing.assert_array_equal(
    T.discretize(special), [0, 512, 511, 1023, 1023, 1023, 0, 1023, 0, 511]
  )
  assert T.discretize(np.float32(0.0)).dtype == np.int32


def test_discretize_other_bin_counts():
  np.testing.assert_array_equal(
    T.discretize(np.array([-1.0, -0.01, 0.0, 0.99, 1.0]), num_bins=4), [0, 1, 2, 3, 3]
  )
  np.testing.assert_array_equal(
    T.discretize(np.array([-1.0, -0.34, -0.33, 0.34, 1.0]), num_bins=3), [0, 0, 1, 2, 2]
  )
  with pytest.raises(ValueError, match="num_bins"):
    T.discretize(np.zeros(3), num_bins=1)


def test_undiscretize_centres():
  np.testing.assert_allclose(
    T.undiscretize(np.array([0, 511, 512, 1023])),
    [-1 + 1 / 1024, -1 / 1024, 1 / 1024, 1 - 1 / 1024],
    rtol=0,
    atol=1e-7,
  )
  with pytest.raises(ValueError, match=r"\[0, 1024\)"):
    T.undiscretize(np.array([1024]))


def test_continuous_ids_and_round_trip_error():
  rng = np.random.default_rng(0)
  actions = rng.uniform(-1, 1, 10000).astype(np.float32)
  ids = T.tokenize_continuous(actions, mu_law=False)
  assert ids.dtype == np.int32 and ids.min() >= 32000 and ids.max() < 33024
  back = T.detokenize_continuous(ids, mu_law=False)
  assert np.abs(back - actions).max() <= 1 / 1024 + 1e-7  # Half a bin width.

  observations = (rng.standard_normal(10000) * 30).astype(np.float32)
  ids = T.tokenize_continuous(observations)
  assert ids.min() >= 32000 and ids.max() < 33024
  back = T.detokenize_continuous(ids)
  # The bound holds in companded space, where the bins are uniform.
  err = np.abs(T.mu_law_encode(back) - T.mu_law_encode(observations))
  assert err.max() <= 1 / 1024 + 1e-6
  # Near zero the mu-law spends its bins finely: 0.01 comes back within 0.0015.
  assert abs(T.detokenize_continuous(T.tokenize_continuous(np.float32(0.01))) - 0.01) < 1.5e-3


def test_continuous_extremes_clip():
  ids = T.tokenize_continuous(np.array([-1e6, -256, 0.0, 256, 1e6], np.float32))
  np.testing.assert_array_equal(ids, [32000, 32000, 32512, 33023, 33023])
  np.testing.assert_array_equal(
    T.tokenize_continuous(np.array([-2.0, 2.0]), mu_law=False), [32000, 33023]
  )


def test_discrete_ids():
  x = np.array([[0, 1], [1023, 7]])
  ids = T.tokenize_discrete(x)
  np.testing.assert_array_equal(ids, [[32000, 32001], [33023, 32007]])
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(T.detokenize_discrete(ids), x)
  np.testing.assert_array_equal(T.tokenize_discrete(np.array([True, False])), [32001, 32000])


def test_bad_input_errors():
  with pytest.raises(ValueError, match="must lie in \\[0, 1024\\).*1024"):
    T.tokenize_discrete(np.array([3, 1024]))
  with pytest.raises(ValueError, match="-1"):
    T.tokenize_discrete(np.array([-1]))
  with pytest.raises(TypeError, match="integers"):
    T.tokenize_discrete(np.array([1.0, 2.0]))
  with pytest.raises(ValueError, match="NaN"):
    T.tokenize_continuous(np.array([0.0, np.nan]))
  with pytest.raises(ValueError, match="NaN"):
    T.mu_law_encode(np.array([np.nan]))
  with pytest.raises(TypeError, match="real numbers"):
    T.tokenize_continuous(np.array(["a"]))
  with pytest.raises(TypeError, match="real numbers"):
    T.tokenize_continuous(np.array([1 + 2j]))
  with pytest.raises(ValueError, match="continuous value ids"):
    T.detokenize_continuous(np.array([31999]))
  with pytest.raises(ValueError, match="discrete value ids"):
    T.detokenize_discrete(np.array([33024]))


def test_jit_and_vmap_match_numpy():
  rng = np.random.default_rng(1)
  x = np.concatenate(
    [
      (rng.standard_normal(4096) * 10).astype(np.float32),
      (-1.0 + 2.0 * np.arange(1024) / 1024).astype(np.float32),
    ]
  )
  for fn in [
    T.mu_law_encode,
    lambda v: T.discretize(v),
    lambda v: T.tokenize_continuous(v, mu_law=False),
  ]:
    host = fn(x)
    device = jax.jit(fn)(jnp.asarray(x))
    mapped = jax.vmap(fn)(jnp.asarray(x))
    assert isinstance(device, jax.Array)
    if host.dtype == np.float32:
      np.testing.assert_allclose(device, host, rtol=2e-7, atol=1e-7)
    else:
      np.testing.assert_array_equal(device, host)
      np.testing.assert_array_equal(mapped, host)
  np.testing.assert_array_equal(
    jax.jit(T.tokenize_continuous)(jnp.asarray(x)), T.tokenize_continuous(x)
  )
  ints = rng.integers(0, 1024, 500)
  np.testing.assert_array_equal(
    jax.jit(T.tokenize_discrete)(jnp.asarray(ints)), T.tokenize_discrete(ints)
  )
  ids = T.tokenize_continuous(x)
  np.testing.assert_allclose(
    jax.jit(T.detokenize_continuous)(jnp.asarray(ids)), T.detokenize_continuous(ids), rtol=1e-6
  )
  np.testing.assert_array_equal(
    jax.vmap(T.detokenize_discrete)(jnp.asarray(ids)), T.detokenize_discrete(ids)
  )


def test_device_path_clips_discrete_instead_of_failing():
  # Under jit values are unknown at trace time; out-of-range values clip (documented).
  np.testing.assert_array_equal(jax.jit(T.tokenize_discrete)(jnp.array([-3, 5000])), [32000, 33023])
  with pytest.raises(TypeError, match="integers"):
    jax.jit(T.tokenize_discrete)(jnp.array([1.5]))


def test_wide_integers_are_checked_before_the_int32_cast():
  # Each of these used to wrap silently into range (2**32 -> 0, 2**32 + 2 -> 2).
  for value, dtype in [
    (2**32, np.int64),
    (2**32 + 2, np.int64),
    (2**63 - 1, np.int64),
    (2**64 - 1, np.uint64),
    (-(2**40), np.int64),
  ]:
    with pytest.raises(ValueError, match=f"must lie in \\[0, 1024\\); found {value} at index"):
      T.tokenize_discrete(np.array([value], dtype))
  with pytest.raises(ValueError, match="found 2147483649 at"):  # Not -2147483647.
    T.tokenize_discrete(np.array([2**31 + 1], np.uint32))
  with pytest.raises(ValueError, match="found 4294999298"):
    T.detokenize_discrete(np.array([32000 + 2**32 + 2], np.int64))
  np.testing.assert_array_equal(T.tokenize_discrete(np.array([5, 1023], np.uint64)), [32005, 33023])


def test_inf_is_refused_like_nan_for_mu_law_unless_allowed():
  with pytest.raises(ValueError, match="contains inf .*index \\(1,\\)"):
    T.tokenize_continuous(np.array([0.0, np.inf]))
  with pytest.raises(ValueError, match="contains -inf"):
    T.mu_law_encode(np.array([-np.inf]))
  with pytest.raises(ValueError, match="contains NaN"):
    T.tokenize_continuous(np.array([np.nan]), allow_inf=True)
  ids = T.tokenize_continuous(np.array([-np.inf, np.inf]), allow_inf=True)
  np.testing.assert_array_equal(ids, [32000, 33023])
  # Actions (no mu-law) clip to [-1, 1], as any out-of-range action does.
  np.testing.assert_array_equal(T.tokenize_continuous(np.array([np.inf]), mu_law=False), [33023])


def test_bfloat16_is_accepted_like_float32():
  import ml_dtypes

  x = np.array([-1.0, 0.0, 0.5, 3.0], np.float32)
  np.testing.assert_array_equal(
    T.tokenize_continuous(x.astype(ml_dtypes.bfloat16)), T.tokenize_continuous(x)
  )
  np.testing.assert_array_equal(
    T.tokenize_continuous(jnp.asarray(x, jnp.bfloat16)), T.tokenize_continuous(x)
  )
