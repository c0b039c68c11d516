"""Atari 2600 games through the Arcade Learning Environment (ale-py, which ships the ROMs).

Preprocessing follows the standard ALE protocol (Machado et al., 2018), shaped for Gato:
  - one agent step is 4 emulator frames with the action repeated; the observation is the
    pixel-wise max of the last two, which removes the sprite flicker of many games;
  - sticky actions: with probability 0.25 the emulator repeats the previous action instead
    (the ALE v5 protocol, and how the DQN Replay data behind RL Unplugged Atari was recorded);
  - frames stay RGB and are resized (area averaging) from 210x160 to 80x80, a multiple of
    Gato's 16x16 patches: 25 image tokens a step. **Decision**: the paper fixes only
    the patches (docs/design.md, Tokens); RGB keeps the 16x16x3 patch vectors that the model
    shares with vision-language data, and 80x80 is the multiple of 16 nearest the usual 84x84;
  - no frame stacking: Gato's context holds the history;
  - an episode ends when the game does (all lives lost) or after 27,000 steps (108,000 frames,
    30 minutes of play) and its reward is the raw game score, unclipped.

Actions are the full set of 18 joystick/button combinations for every game. **Decision**: one
action id then means the same input in every game, which a single policy across games needs;
games that ignore some inputs treat them as the nearest one they use. Data recorded with a
game's minimal action set (RL Unplugged) is mapped with `minimal_action_ids`.

There is no Atari expert: a credible one (DQN, Muesli) takes far more compute than this project
has; `gato_jax.sources.rl_unplugged` imports public expert episodes instead.
"""

import dataclasses
import re
import warnings

import numpy as np

from gato_jax import tokenizer
from gato_jax.envs import base

# Games of the classic DQN evaluation that RL Unplugged Atari also covers.
TASKS = (
  "Pong",
  "Breakout",
  "SpaceInvaders",
  "Seaquest",
  "MsPacman",
  "Boxing",
  "Qbert",
  "Asterix",
  "BeamRider",
  "Enduro",
)
NUM_ACTIONS = 18  # ale_py.Action: NOOP, FIRE, UP, RIGHT, ..., DOWNLEFTFIRE.
SCREEN_SHAPE = (210, 160)  # Every Atari 2600 ROM renders 210 rows x 160 columns.


@dataclasses.dataclass(frozen=True)
class AtariConfig:
  """Preprocessing of one Atari task; the defaults are the protocol in the module docstring."""

  frame_size: tuple[int, int] = (80, 80)  # (height, width), multiples of the 16-pixel patch.
  frame_skip: int = 4  # Emulator frames per agent step.
  sticky_action_probability: float = 0.25  # 0.0 for deterministic emulation.
  max_episode_steps: int = 27_000  # Agent steps (= 108,000 frames at frame_skip 4).


def rom_id(game: str) -> str:
  """ "SpaceInvaders" -> "space_invaders", ale_py's ROM name."""
  return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower()


def rom_path(game: str) -> str:
  """The path of a game's ROM inside ale_py, with a clear error for games it lacks."""
  from ale_py import roms

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # get_rom_path warns, then returns None, for unknown ROMs.
    path = roms.get_rom_path(rom_id(game))
  if path is None:
    raise ValueError(
      f"ale_py ships no ROM for Atari game {game!r} (looked for"
      f" {rom_id(game)!r}); known ROMs: {sorted(roms.get_all_rom_ids())}"
    )
  return str(path)


def _area_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
  """Area averaging along one axis: (source indices, weights), both [target, taps].

  Output pixel i averages the source pixels that its interval [i, i + 1) * source / target
  covers, weighted by overlap (OpenCV's INTER_AREA). Each covers only a few source pixels, so
  a handful of weighted gathers do the resize: matrix products would be simpler, but OpenBLAS
  threads make such small ones ~50x slower on a busy machine.
  """
  edges = np.arange(target + 1, dtype=np.float64) * (source / target)
  starts, ends = edges[:-1, None], edges[1:, None]
  pixels = np.arange(source, dtype=np.float64)[None, :]
  overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
  weights = overlap / overlap.sum(axis=1, keepdims=True)  # [target, source], banded.
  taps = int((weights > 0).sum(axis=1).max())
  first = np.argmax(weights > 0, axis=1)
  indices = np.minimum(first[:, None] + np.arange(taps)[None, :], source - 1)
  tap_weights = np.take_along_axis(weights, indices, axis=1)
  # A clamped duplicate index past the band carries weight 0 there already.
  tap_weights[first[:, None] + np.arange(taps)[None, :] >= source] = 0.0
  return indices, tap_weights.astype(np.float32)


class FrameResizer:
  """Resizes uint8 images [..., H, W, C] to `size` by area averaging."""

  def __init__(self, source: tuple[int, int], size: tuple[int, int]):
    if any(s < 1 for s in tuple(source) + tuple(size)):
      raise ValueError(f"image sizes must be positive, got {source} -> {size}")
    self.source, self.size = tuple(source), tuple(size)
    self._rows = _area_weights(self.source[0], self.size[0])
    self._cols = _area_weights(self.source[1], self.size[1])

  def __call__(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim < 3 or image.shape[-3:-1] != self.source:
      raise ValueError(
        f"expected images [..., {self.source[0]}, {self.source[1]}, channels],"
        f" got shape {image.shape}"
      )
    x = image.astype(np.float32)
    (row_index, row_weight), (col_index, col_weight) = self._rows, self._cols
    # [..., H, W, C] -> [..., h, W, C]
    x = sum(
      np.take(x, row_index[:, k], axis=-3) * row_weight[:, k, None, None]
      for k in range(row_index.shape[1])
    )
    # [..., h, W, C] -> [..., h, w, C]
    x = sum(
      np.take(x, col_index[:, k], axis=-2) * col_weight[:, k, None]
      for k in range(col_index.shape[1])
    )
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def minimal_action_ids(game: str) -> np.ndarray:
  """int32 [n]: the full-set action id of each index of the game's minimal action set.

  Agents trained on the minimal set (Dopamine's DQN, hence RL Unplugged) record an index into
  this list; `minimal_action_ids(game)[index]` is the same input in our 18-action space.
  """
  from ale_py import ALEInterface, LoggerMode

  ALEInterface.setLoggerMode(LoggerMode.Error)
  ale = ALEInterface()
  ale.loadROM(rom_path(game))
  return np.asarray([action.value for action in ale.getMinimalActionSet()], np.int32)


class AtariEnv(base.Environment):
  """One Atari game as a Gato task, e.g. "atari/Pong": 80x80 RGB frames, 18 discrete actions."""

  def __init__(self, game: str, config: AtariConfig = AtariConfig()):
    if game not in TASKS:
      raise ValueError(f"unknown Atari game {game!r}; known games: {list(TASKS)}")
    for side in config.frame_size:
      if side < 1 or side % tokenizer.PATCH_SIZE:
        raise ValueError(
          f"Atari frame sides must be positive multiples of {tokenizer.PATCH_SIZE},"
          f" got frame_size={config.frame_size}"
        )
    if config.frame_skip < 1 or config.max_episode_steps < 1:
      raise ValueError(f"frame_skip and max_episode_steps must be positive, got {config}")
    if not 0.0 <= config.sticky_action_probability <= 1.0:
      raise ValueError(f"sticky_action_probability must be in [0, 1], got {config}")
    from ale_py import ALEInterface, LoggerMode

    ALEInterface.setLoggerMode(LoggerMode.Error)  # Otherwise every ROM load prints a banner.
    self.game = game
    self.config = config
    self.name = f"atari/{game}"
    self._rom = rom_path(game)
    self._ale = ALEInterface()
    self._ale.setFloat("repeat_action_probability", float(config.sticky_action_probability))
    self._ale.setInt("frame_skip", 1)  # We skip frames ourselves, to max-pool the last two.
    self._resize = FrameResizer(SCREEN_SHAPE, config.frame_size)
    self._screens = np.zeros((2, *SCREEN_SHAPE, 3), np.uint8)
    self._steps = 0
    self._loaded = False
    self.observation_spec = {"image": tokenizer.ImageSpec()}
    self.action_spec = tokenizer.DiscreteSpec((), num_values=NUM_ACTIONS)
    self.max_episode_steps = config.max_episode_steps

  def _observation(self, screen: np.ndarray) -> dict:
    return {"image": self._resize(screen)}

  def reset(self, seed: int) -> dict:
    # The ALE draws sticky actions (and some games their randomness) from the generator that
    # loadROM seeds; reloading makes each episode a function of its seed alone (~0.2 s).
    self._ale.setInt("random_seed", int(seed) % 2**31)
    self._ale.loadROM(self._rom)
    self._loaded = True
    self._steps = 0
    self._ale.getScreenRGB(self._screens[0])
    return self._observation(self._screens[0])

  def step(self, action) -> base.StepResult:
    if not self._loaded:
      raise RuntimeError(f"{self.name}: call reset(seed) before step")
    action = np.asarray(action)
    if action.shape != () or action.dtype.kind not in "iu" or not 0 <= int(action) < NUM_ACTIONS:
      raise ValueError(f"Atari actions are integer scalars in [0, {NUM_ACTIONS}), got {action!r}")
    reward, frames = 0.0, self.config.frame_skip
    self._screens[0] = 0  # A one-frame step (frame_skip 1) max-pools with black.
    for frame in range(frames):
      reward += self._ale.act(int(action))
      if frame >= frames - 2:
        self._ale.getScreenRGB(self._screens[frame - frames + 2])
      if self._ale.game_over():
        # The last frame is the final screen; pooling it with an older one would mix times.
        self._ale.getScreenRGB(self._screens[0])
        self._ale.getScreenRGB(self._screens[1])
        break
    self._steps += 1
    terminated = bool(self._ale.game_over())
    return base.StepResult(
      observation=self._observation(np.maximum(self._screens[0], self._screens[1])),
      reward=float(reward),
      terminated=terminated,
      truncated=not terminated and self._steps >= self.max_episode_steps,
      info={"lives": int(self._ale.lives())},
    )


def make_env(task: str) -> AtariEnv:
  return AtariEnv(task)
