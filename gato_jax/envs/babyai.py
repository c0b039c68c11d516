"""BabyAI (minigrid): mission text plus the symbolic egocentric grid, and the BabyAI bot expert.

Gato's BabyAI data comes from the levels' bot (docs/design.md, Data mixture). Observations are
what a BabyAI agent sees: the mission string (text tokens) and the 7x7 view in front of the agent
as (object, colour, state) triples (discrete value tokens). Actions are the 7 minigrid actions
(left, right, forward, pickup, drop, toggle, done), which every BabyAI level uses.

The bot plans on the full environment state (privileged, as in the BabyAI paper); it is the
expert, not something Gato sees.
"""

import contextlib
import io

import numpy as np

from gato_jax import tokenizer
from gato_jax.envs import base, policies

# The levels of the BabyAI paper (Chevalier-Boisvert et al., 2019, Table 1), easiest first; the
# bot solves all of them. minigrid registers each as "BabyAI-<level>-v0".
TASKS = (
  "GoToObj",
  "GoToRedBallGrey",
  "GoToRedBall",
  "GoToLocal",
  "PutNextLocal",
  "PickupLoc",
  "GoToObjMaze",
  "GoTo",
  "Pickup",
  "UnblockPickup",
  "Open",
  "Unlock",
  "GoToSeq",
  "Synth",
  "SynthLoc",
  "SynthSeq",
  "GoToImpUnlock",
  "BossLevel",
)

VIEW_SIZE = 7  # minigrid's default agent view (agent_view_size=7).
NUM_ACTIONS = 7  # minigrid.core.actions.Actions: left, right, forward, pickup, drop, toggle, done.
# Grid cells are (object, colour, state) with object ids up to 10 ("agent"), colours up to 5 and
# door states up to 2 (minigrid.core.constants); one num_values covers every channel.
NUM_GRID_VALUES = 11
# Breadth-first searches the bot may run for one action before it counts as stuck (normal
# steps need at most about 11 on the hardest levels; see BabyAIBotPolicy).
MAX_BOT_SEARCHES_PER_STEP = 200


class BabyAIEnv(base.Environment):
  """One BabyAI level as a Gato task, e.g. "babyai/GoToRedBall".

  `max_episode_steps` is the level's own time limit, which BabyAI sets at every reset from the
  maze size and the mission; it is read from the simulator after each reset.
  """

  def __init__(self, level: str):
    if level not in TASKS:
      raise ValueError(f"unknown BabyAI level {level!r}; known levels: {list(TASKS)}")
    import gymnasium as gym
    import minigrid  # Registers the BabyAI-* environments with gymnasium.

    del minigrid
    self.level = level
    self.name = f"babyai/{level}"
    self.gym_env = gym.make(f"BabyAI-{level}-v0")
    self.observation_spec = {
      "grid": tokenizer.DiscreteSpec((VIEW_SIZE, VIEW_SIZE, 3), num_values=NUM_GRID_VALUES),
      "mission": tokenizer.TextSpec(),
    }
    self.action_spec = tokenizer.DiscreteSpec((), num_values=NUM_ACTIONS)
    # A first reset sets the level's time limit, so the attribute is meaningful before use.
    self.reset(0)

  @property
  def max_episode_steps(self) -> int:
    return int(self.gym_env.unwrapped.max_steps)

  def _observation(self, obs) -> dict:
    grid = np.asarray(obs["image"], np.uint8)
    if grid.shape != (VIEW_SIZE, VIEW_SIZE, 3) or grid.max() >= NUM_GRID_VALUES:
      raise ValueError(
        f"unexpected minigrid observation in {self.name}: shape {grid.shape},"
        f" max value {grid.max()}"
      )
    return {"grid": grid, "mission": str(obs["mission"])}

  def reset(self, seed: int) -> dict:
    # Level generation prints every rejected sample ("Sampling rejected: ..."); silence it.
    with contextlib.redirect_stdout(io.StringIO()):
      obs, _ = self.gym_env.reset(seed=int(seed))
    return self._observation(obs)

  def step(self, action) -> base.StepResult:
    action = int(np.asarray(action))
    if not 0 <= action < NUM_ACTIONS:
      raise ValueError(f"BabyAI actions are integers in [0, {NUM_ACTIONS}), got {action}")
    obs, reward, terminated, truncated, info = self.gym_env.step(action)
    # BabyAI pays 1 - 0.9 * steps / max_steps on success and 0 otherwise.
    success = bool(terminated and reward > 0)
    return base.StepResult(
      observation=self._observation(obs),
      reward=float(reward),
      terminated=bool(terminated),
      truncated=bool(truncated),
      info={**info, "success": success},
    )

  def close(self) -> None:
    self.gym_env.close()


class BabyAIBotPolicy(policies.Policy):
  """minigrid's BabyAI bot (minigrid.utils.baby_ai_bot.BabyAIBot), replanning every step."""

  name = "babyai_bot"

  def __init__(self, env: BabyAIEnv):
    if not isinstance(env, BabyAIEnv):
      raise TypeError(f"the BabyAI bot needs a BabyAIEnv, got {type(env).__name__}")
    self._env = env
    self._bot = None
    self._searches = 0

  def reset(self, seed: int) -> None:
    from minigrid.utils.baby_ai_bot import BabyAIBot

    del seed  # The bot is deterministic given the level state.
    # The bot parses the mission of the episode that env.reset just started.
    self._bot = BabyAIBot(self._env.gym_env)
    search = self._bot._breadth_first_search  # pylint: disable=protected-access

    def bounded_search(*args, **kwargs):
      # On rare seeds (e.g. GoToImpUnlock) the bot's replanning loop never settles on an
      # action; a normal step needs a handful of searches, so a budget turns a hang into a
      # failed episode.
      self._searches += 1
      if self._searches > MAX_BOT_SEARCHES_PER_STEP:
        raise policies.PolicyGaveUp(
          f"BabyAI bot found no action after {MAX_BOT_SEARCHES_PER_STEP} searches in"
          f" {self._env.name}"
        )
      return search(*args, **kwargs)

    self._bot._breadth_first_search = bounded_search  # pylint: disable=protected-access

  def act(self, observation) -> np.ndarray:
    del observation  # The bot reads the simulator's full state.
    if self._bot is None:
      raise RuntimeError("BabyAIBotPolicy.reset must be called after env.reset, before act")
    self._searches = 0
    return np.int32(int(self._bot.replan()))


def make_env(task: str) -> BabyAIEnv:
  return BabyAIEnv(task)


def make_expert(env: BabyAIEnv) -> BabyAIBotPolicy:
  return BabyAIBotPolicy(env)
