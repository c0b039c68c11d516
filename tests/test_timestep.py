"""Timestep and episode token groups: order, kinds, masks, positions, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.tokenizer import TokenKind as K

OBS_SPEC = {
  "text": T.TextSpec(),
  "pixels": {"front": T.ImageSpec(), "aux": T.ImageSpec()},
  "proprio": T.ContinuousSpec((3,)),
  "grid": T.DiscreteSpec((2, 2)),
}
ACT_SPEC = {
  "torque": T.ContinuousSpec((2,), mu_law=False),
  "button": T.DiscreteSpec((), num_values=6),
}


def _observation(text="go to the red door"):
  front = np.zeros((32, 16, 3), np.uint8)
  front[16:] = 255
  return {
    "text": text,
    "pixels": {"front": front, "aux": np.full((16, 16, 3), 128, np.uint8)},
    "proprio": np.array([0.0, 1.0, -256.0], np.float32),
    "grid": np.array([[1, 2], [3, 4]]),
  }


ACTION = {"torque": np.array([1.0, -1.0], np.float32), "button": np.int32(5)}


def test_timestep_with_every_kind():
  text_ids = T.TextTokenizer().encode("go to the red door")
  group = T.tokenize_timestep(_observation(), ACTION, OBS_SPEC, ACT_SPEC)
  n_text = len(text_ids)
  # Lexicographic key order: grid, pixels/aux, pixels/front, proprio, text; then |; then
  # button, torque.
  expected_tokens = np.concatenate(
    [
      [32001, 32002, 32003, 32004],  # grid, row-major
      [0],  # pixels/aux: 1 patch
      [0, 0],  # pixels/front: 2 patches
      [32512, 32000 + 744, 32000],  # proprio: mu-law(0)=0 -> 512, mu-law(1) -> bin 744, -256 -> 0
      text_ids,
      [33024],
      [32005],  # button
      [33023, 32000],  # torque +1, -1
    ]
  )
  np.testing.assert_array_equal(group.tokens, expected_tokens)
  expected_kinds = (
    [K.VALUE] * 4
    + [K.IMAGE_PATCH] * 3
    + [K.VALUE] * 3
    + [K.TEXT] * n_text
    + [K.SEPARATOR]
    + [K.VALUE] * 3
  )
  np.testing.assert_array_equal(group.kinds, expected_kinds)
  num_obs = 10 + n_text
  np.testing.assert_array_equal(group.local_positions, list(range(num_obs)) + [-1] * 4)
  np.testing.assert_array_equal(group.loss_mask, [0] * 10 + [1] * n_text + [0] + [1] * 3)
  np.testing.assert_array_equal(group.action_mask, [0] * (num_obs + 1) + [1] * 3)
  np.testing.assert_array_equal(group.timesteps, 0)
  # Patches in slot order: aux (grey), then front top (black) and bottom (white).
  assert group.patches.shape == (3, 768)
  np.testing.assert_allclose(group.patches[0], (128 / 127.5 - 1) / 4, rtol=1e-6)
  np.testing.assert_allclose(group.patches[1], -0.25)
  np.testing.assert_allclose(group.patches[2], 0.25)
  np.testing.assert_allclose(group.patch_rows, [[0, 1], [0, 0.5], [0.5, 1]])
  np.testing.assert_allclose(group.patch_cols, [[0, 1], [0, 1], [0, 1]])
  for field in ("tokens", "kinds", "local_positions", "timesteps"):
    assert getattr(group, field).dtype == np.int32
  assert group.loss_mask.dtype == bool


def test_decode_action_inverts():
  group = T.tokenize_timestep(_observation(), ACTION, OBS_SPEC, ACT_SPEC)
  decoded = T.detokenize_action(group.tokens[group.action_mask], ACT_SPEC)
  assert decoded["button"] == 5 and decoded["button"].dtype == np.int32
  np.testing.assert_allclose(decoded["torque"], [1 - 1 / 1024, -1 + 1 / 1024])
  # mu-law action specs decode through the inverse mu-law; batches keep their leading dims.
  spec = T.ContinuousSpec((2, 2), mu_law=True)
  x = np.array([[[3.0, -40.0], [0.5, 0.0]]] * 5, np.float32)
  back = T.detokenize_action(T.tokenize_continuous(x).reshape(5, 4), spec)
  assert back.shape == (5, 2, 2)
  np.testing.assert_allclose(back, x, rtol=0.02, atol=1e-3)
  assert T.num_action_tokens(ACT_SPEC) == 3
  np.testing.assert_array_equal(
    T.action_token_id_ranges(ACT_SPEC), [[32000, 32006], [32000, 33024], [32000, 33024]]
  )


def test_observation_without_action_ends_with_separator():
  group = T.tokenize_timestep({"x": np.float32(0.5)}, None, {"x": T.ContinuousSpec()})
  np.testing.assert_array_equal(group.tokens[-1:], [T.SEPARATOR_ID])
  assert not group.loss_mask.any()
  assert group.patches.shape == (0, 0)


def test_nested_key_order_is_lexicographic_by_path():
  spec = {
    "b": T.DiscreteSpec(),
    "a": {"z": T.DiscreteSpec(), "c": T.DiscreteSpec()},
    "aa": T.DiscreteSpec(),
  }
  obs = {"b": 4, "a": {"z": 2, "c": 1}, "aa": 3}
  group = T.tokenize_timestep(jax.tree.map(np.int32, obs), None, spec)
  np.testing.assert_array_equal(group.tokens[:-1] - 32000, [1, 2, 3, 4])  # a/c, a/z, aa, b


def _device_observation():
  obs = _observation()
  obs["text"] = T.TextTokenizer().encode(obs["text"])
  return obs


def test_jit_matches_numpy():
  host = T.tokenize_timestep(_device_observation(), ACTION, OBS_SPEC, ACT_SPEC)
  fn = jax.jit(lambda o, a: T.tokenize_timestep(o, a, OBS_SPEC, ACT_SPEC))
  device = fn(jax.tree.map(jnp.asarray, _device_observation()), jax.tree.map(jnp.asarray, ACTION))
  assert isinstance(device.tokens, jax.Array)
  for name in (
    "tokens",
    "kinds",
    "local_positions",
    "loss_mask",
    "timesteps",
    "patch_rows",
    "patch_cols",
  ):
    np.testing.assert_array_equal(getattr(device, name), getattr(host, name), err_msg=name)
  np.testing.assert_array_equal(device.patches, host.patches)
  decode = jax.jit(lambda ids: T.detokenize_action(ids, ACT_SPEC))
  np.testing.assert_allclose(decode(device.tokens[-3:])["torque"], [1 - 1 / 1024, -1 + 1 / 1024])


def _episode(num_steps=4, seed=0):
  rng = np.random.default_rng(seed)
  obs = {
    "text": np.stack([T.TextTokenizer().encode("pick up the ball")] * num_steps),
    "pixels": {
      "front": rng.integers(0, 256, (num_steps, 32, 16, 3), dtype=np.uint8),
      "aux": rng.integers(0, 256, (num_steps, 16, 16, 3), dtype=np.uint8),
    },
    "proprio": rng.standard_normal((num_steps, 3)).astype(np.float32),
    "grid": rng.integers(0, 1024, (num_steps, 2, 2)),
  }
  act = {
    "torque": rng.uniform(-1, 1, (num_steps, 2)).astype(np.float32),
    "button": rng.integers(0, 6, num_steps).astype(np.int32),
  }
  return obs, act


def test_vmap_matches_per_timestep_numpy():
  obs, act = _episode()
  batched = jax.vmap(lambda o, a: T.tokenize_timestep(o, a, OBS_SPEC, ACT_SPEC))(
    jax.tree.map(jnp.asarray, obs), jax.tree.map(jnp.asarray, act)
  )
  for t in range(4):
    step = T.tokenize_timestep(
      jax.tree.map(lambda v: v[t], obs), jax.tree.map(lambda v: v[t], act), OBS_SPEC, ACT_SPEC
    )
    np.testing.assert_array_equal(batched.tokens[t], step.tokens)
    np.testing.assert_array_equal(batched.loss_mask[t], step.loss_mask)
    np.testing.assert_array_equal(batched.patches[t], step.patches)


def test_episode_concatenates_timesteps():
  obs, act = _episode()
  episode = T.tokenize_episode(obs, act, OBS_SPEC, ACT_SPEC)
  steps = [
    T.tokenize_timestep(
      jax.tree.map(lambda v: v[t], obs), jax.tree.map(lambda v: v[t], act), OBS_SPEC, ACT_SPEC
    )
    for t in range(4)
  ]
  expected = T.concat_token_groups(steps)
  length = steps[0].num_tokens
  assert episode.num_tokens == 4 * length
  np.testing.assert_array_equal(episode.timesteps, np.repeat(np.arange(4), length))
  for name in (
    "tokens",
    "kinds",
    "local_positions",
    "loss_mask",
    "timesteps",
    "patches",
    "patch_rows",
    "patch_cols",
  ):
    np.testing.assert_array_equal(getattr(episode, name), getattr(expected, name), err_msg=name)
  jitted = jax.jit(lambda o, a: T.tokenize_episode(o, a, OBS_SPEC, ACT_SPEC))(
    jax.tree.map(jnp.asarray, obs), jax.tree.map(jnp.asarray, act)
  )
  np.testing.assert_array_equal(jitted.tokens, episode.tokens)
  np.testing.assert_array_equal(jitted.timesteps, episode.timesteps)


def test_episode_with_ragged_text_strings():
  spec = {"mission": T.TextSpec(), "grid": T.DiscreteSpec((2,))}
  obs = {"mission": ["go", "open the door please"], "grid": np.array([[1, 2], [3, 4]])}
  act = np.array([0, 2], np.int32)
  act_spec = T.DiscreteSpec((), num_values=7)
  episode = T.tokenize_episode(obs, act, spec, act_spec)
  tok = T.TextTokenizer()
  first = np.concatenate([[32001, 32002], tok.encode("go"), [33024, 32000]])
  second = np.concatenate([[32003, 32004], tok.encode("open the door please"), [33024, 32002]])
  np.testing.assert_array_equal(episode.tokens, np.concatenate([first, second]))
  np.testing.assert_array_equal(episode.timesteps, [0] * len(first) + [1] * len(second))
  np.testing.assert_array_equal(episode.local_positions[len(first) : len(first) + 3], [0, 1, 2])


def test_bad_timesteps_raise_clear_errors():
  obs = _observation()
  with pytest.raises(KeyError, match=r"missing \['text'\]"):
    T.tokenize_timestep({k: v for k, v in obs.items() if k != "text"}, ACTION, OBS_SPEC, ACT_SPEC)
  with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
    T.tokenize_timestep({**obs, "extra": 1}, ACTION, OBS_SPEC, ACT_SPEC)
  with pytest.raises(ValueError, match=r"'proprio' must have shape \[3\]"):
    T.tokenize_timestep({**obs, "proprio": np.zeros(4, np.float32)}, ACTION, OBS_SPEC, ACT_SPEC)
  with pytest.raises(ValueError, match="NaN"):
    T.tokenize_timestep(
      {**obs, "proprio": np.array([0, np.nan, 0], np.float32)}, ACTION, OBS_SPEC, ACT_SPEC
    )
  with pytest.raises(ValueError, match=r"discrete values 'button' must lie in \[0, 6\)"):
    T.tokenize_timestep(obs, {**ACTION, "button": np.int32(6)}, OBS_SPEC, ACT_SPEC)
  with pytest.raises(TypeError, match="integers"):
    T.tokenize_timestep({**obs, "grid": np.zeros((2, 2), np.float32)}, ACTION, OBS_SPEC, ACT_SPEC)
  with pytest.raises(ValueError, match="multiples of 16"):
    T.tokenize_timestep(
      {**obs, "pixels": {"front": np.zeros((20, 16, 3), np.uint8), "aux": obs["pixels"]["aux"]}},
      ACTION,
      OBS_SPEC,
      ACT_SPEC,
    )
  with pytest.raises(ValueError, match="patches of one size"):
    T.tokenize_timestep(
      {**obs, "pixels": {"front": np.zeros((16, 16, 1), np.uint8), "aux": obs["pixels"]["aux"]}},
      ACTION,
      OBS_SPEC,
      ACT_SPEC,
    )
  with pytest.raises(TypeError, match="actions must be DiscreteSpec or ContinuousSpec"):
    T.tokenize_timestep(obs, "x", OBS_SPEC, T.TextSpec())
  with pytest.raises(ValueError, match="without an action_spec"):
    T.tokenize_timestep(obs, ACTION, OBS_SPEC)
  with pytest.raises(ValueError, match=r"text ids 'text' must lie in \[0, 32000\)"):
    T.tokenize_timestep({**obs, "text": np.array([5, 32000])}, ACTION, OBS_SPEC, ACT_SPEC)
  with pytest.raises(ValueError, match="takes 3 tokens"):
    T.detokenize_action(np.array([32000, 32001]), ACT_SPEC)
  with pytest.raises(ValueError, match=r"action ids 'button'"):
    T.detokenize_action(np.array([32010, 32001, 32001]), ACT_SPEC)
  with pytest.raises(ValueError, match="num_values"):
    T.DiscreteSpec((), num_values=2000)
  obs_ep, act_ep = _episode()
  act_ep["button"] = act_ep["button"][:3]
  with pytest.raises(ValueError, match="disagree on their leading"):
    T.tokenize_episode(obs_ep, act_ep, OBS_SPEC, ACT_SPEC)


def test_observation_only_example_without_separator():
  spec = {"image": T.ImageSpec(), "text": T.TextSpec()}
  group = T.tokenize_timestep(
    {"image": np.zeros((16, 32, 3), np.uint8), "text": "a red ball"}, None, spec, separator=False
  )
  n_text = len(T.TextTokenizer().encode("a red ball"))
  np.testing.assert_array_equal(group.kinds, [K.IMAGE_PATCH] * 2 + [K.TEXT] * n_text)
  np.testing.assert_array_equal(group.local_positions, np.arange(2 + n_text))
  np.testing.assert_array_equal(group.loss_mask, [0, 0] + [1] * n_text)
