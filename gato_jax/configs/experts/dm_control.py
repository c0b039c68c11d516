r"""SAC expert recipes for the DM Control tasks (state observations), one preset per task.

The argument names the task (gato_jax.envs.dm_control_envs.TASKS):

  python tools/train_expert.py --domain=dm_control --env=cartpole-balance
  python tools/train_expert.py --domain=dm_control \
      --config=experiments/configs/experts/dm_control.py:cartpole-swingup \
      --config.sac.total_env_steps=200000

Budgets are sized for a 2-core CPU shared with other work (roughly 5-10 minutes per task);
action repeat (`dm_control_envs.ACTION_REPEAT`, PlaNet's values: 8 for cartpole, 4 for reacher
and point_mass, 2 for walker-stand) buys most of that, as each agent step then covers several
control steps. References are state-based
SAC returns from the literature: the "State SAC" row of CURL (Laskin et al., 2020, Table 1;
the same numbers appear in DrQ) at 500k environment steps where it lists the task, otherwise
the D4PG state curves of the DM Control report (Tassa et al., 2018), read off approximately.
"""

import ml_collections

from gato_jax.envs import dm_control_envs

# Per-task overrides of the SAC defaults below, with the published reference the trained expert
# is compared with.
RECIPES = {
  "cartpole-balance": dict(
    reference_return=1000.0,
    reference="D4PG state, Tassa et al. 2018 (~1000, approx.)",
    sac=dict(total_env_steps=40_000, random_steps=1_000),
  ),
  "cartpole-swingup": dict(
    reference_return=848.0,
    reference="State SAC at 500k steps, CURL Table 1 (848 +- 15)",
    sac=dict(total_env_steps=160_000, random_steps=1_000),
  ),
  "point_mass-easy": dict(
    reference_return=900.0,
    reference="D4PG state, Tassa et al. 2018 (~900, approx.)",
    sac=dict(total_env_steps=100_000, random_steps=2_000),
  ),
  "reacher-easy": dict(
    reference_return=923.0,
    reference="State SAC at 500k steps, CURL Table 1 (923 +- 64)",
    sac=dict(total_env_steps=200_000, random_steps=2_000),
  ),
  "finger-spin": dict(
    reference_return=923.0,
    reference="State SAC at 500k steps, CURL Table 1 (923 +- 21)",
    # 300k steps of 128x128 networks at lr 1e-3 plateaued near 520 (567 greedy), 150k at lr 3e-4
    # reached 371. The reference's budget with cheetah-run's recipe (one agent step per control
    # step), which took that task from 55% to 98% of its reference: 882.2 (96%, seed 0).
    sac=dict(total_env_steps=500_000, random_steps=5_000),
  ),
  "walker-stand": dict(
    reference_return=980.0,
    reference="D4PG state, Tassa et al. 2018 (~980, approx.)",
    sac=dict(total_env_steps=200_000, random_steps=2_000),
  ),
  "walker-walk": dict(
    reference_return=948.0,
    reference="State SAC at 500k steps, CURL Table 1 (948 +- 54)",
    # Action repeat 2 with 128x128 networks: 200k steps reached 780 (82%), 500k steps 750.0 (seed
    # 0, 2026-12-05). cheetah-run's recipe (every control step an agent step): 965.8 (102%).
    sac=dict(total_env_steps=500_000, random_steps=5_000),
  ),
  "cheetah-run": dict(
    reference_return=795.0,
    reference="State SAC at 500k steps, CURL Table 1 (795 +- 30)",
    # The reference's budget. With action repeat 4 (PlaNet's and DrQ's for cheetah; 125k updates)
    # 128x128 networks gave 439.8 and 432.3 (seeds 0, 1) and 256x256 412.2 (seed 0): about 55%
    # whatever the width (2026-12-05). Every control step an agent step, as state SAC runs it
    # (four times the updates): 779.1 with seed 0 (98%; 825 s on two shared cores).
    sac=dict(total_env_steps=500_000, random_steps=5_000),
  ),
}


def get_config(arg: str = "cartpole-balance") -> ml_collections.ConfigDict:
  """The recipe for task `arg`, a DM Control task name such as "cartpole-balance"."""
  if arg not in RECIPES:
    raise ValueError(f"no expert recipe for {arg!r}; recipes exist for: {', '.join(RECIPES)}")
  recipe = RECIPES[arg]
  config = ml_collections.ConfigDict()
  config.task = arg  # gato_jax.envs.dm_control_envs.TASKS entry.
  config.seed = 0  # Seeds parameters, exploration, replay sampling and training episodes.
  # Seeds seed, seed + 1, ... are trained in turn, at most num_seeds, until one reaches
  # target_return (default 90% of the reference); the best is kept: one SAC seed is not robust
  # across CPUs (walker-stand 950.6 on one machine, 727.0 on another).
  config.num_seeds = recipe.get("num_seeds", 3)
  config.target_return = ml_collections.config_dict.placeholder(float)
  config.target_return = recipe.get("target_return", 0.9 * recipe["reference_return"])
  config.reference_return = recipe["reference_return"]  # Published state-based return.
  config.reference = recipe["reference"]  # Where reference_return comes from.
  config.log_every = 10_000  # Environment steps between progress lines.
  config.overwrite = False  # Retrain even if workdir already caches this expert.

  config.sac = ml_collections.ConfigDict()  # gato_jax.experts.sac.SACConfig fields.
  config.sac.total_env_steps = 100_000  # Control steps, action repeats included.
  # Control steps each agent action is held for: the task's interval, which its environment
  # then acts at (one stored timestep per decision).
  config.sac.action_repeat = dm_control_envs.ACTION_REPEAT[arg]
  config.sac.random_steps = 2_000  # Agent steps of uniform random actions before learning.
  config.sac.batch_size = 256  # Transitions per gradient step.
  config.sac.buffer_size = 1_000_000  # Replay capacity (agent steps).
  # Narrower than the usual 256-1024 units: a 128x128 update is ~3x faster on our CPUs, and
  # these state-based tasks have at most 24 observation dims.
  config.sac.hidden_sizes = (128, 128)
  config.sac.actor_lr = 3e-4  # Adam step sizes.
  config.sac.critic_lr = 3e-4
  config.sac.temperature_lr = 3e-4
  config.sac.gamma = 0.99  # Discount per agent step.
  config.sac.tau = 0.005  # Polyak rate of the target critics.
  config.sac.init_temperature = 0.1  # Initial entropy temperature alpha.
  config.sac.target_entropy = None  # None: -action_dim.
  config.sac.updates_per_step = 1  # Gradient steps per agent step.
  config.sac.update_every = 50  # Agent steps between jitted blocks of updates.
  config.sac.log_std_min = -5.0  # Range of the actor's log standard deviation.
  config.sac.log_std_max = 2.0
  config.sac.update(recipe["sac"])

  config.eval = ml_collections.ConfigDict()
  # Episodes of the expert's baseline (episodes.expert_baseline); 50, as the data statistics.
  config.eval.num_episodes = 50
  return config
