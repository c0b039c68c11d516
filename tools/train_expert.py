r"""Trains, evaluates and caches PPO experts for gymnax tasks (classic control, MinAtar).

Usage (one task, its recipe from gato_jax/configs/experts/gymnax.py):
  python tools/train_expert.py --env=CartPole-v1 --workdir=~/.cache/gato_jax/experts

Several tasks in turn, or an explicit config with overrides:
  python tools/train_expert.py --env=CartPole-v1,Acrobot-v1,Pendulum-v1
  python tools/train_expert.py --config=experiments/configs/experts/gymnax.py:Breakout-MinAtar \
      --config.ppo.total_timesteps=1000000

A task whose expert is already cached is skipped unless --overwrite (or --config.overwrite);
--reevaluate re-runs only its evaluation (e.g. after changing --config.eval.deterministic).
Prints one JSON summary line per task (expert, random and reference returns, wall time).

DM Control SAC experts (recipes in gato_jax/configs/experts/dm_control.py) take --domain:
  python tools/train_expert.py --domain=dm_control --env=cartpole-balance,point_mass-easy
  python tools/train_expert.py --domain=dm_control \
      --config=experiments/configs/experts/dm_control.py:walker-stand
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from gato_jax import launch, recipes

_DOMAIN = flags.DEFINE_enum(
  "domain",
  "gymnax",
  ["gymnax", "dm_control"],
  "Which domain's experts: gymnax (PPO) or dm_control (SAC).",
)
_ENV = flags.DEFINE_string(
  "env",
  None,
  "Comma-separated task names: gymnax ids (CartPole-v1) or DM Control tasks (cartpole-balance).",
)
_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/experts", "Expert cache directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Retrain experts that are already cached.")
_REEVALUATE = flags.DEFINE_bool(
  "reevaluate", False, "Re-run the evaluation of cached experts (no training)."
)
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Expert config file:preset.", lock_config=True
)


def _recipe(env_id: str):
  # Accept the registry's full name too (dm_control/cartpole-balance).
  return recipes.expert_recipe(f"{_DOMAIN.value}/{env_id.removeprefix(_DOMAIN.value + '/')}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DOMAIN.value == "dm_control":
    os.environ.setdefault("MUJOCO_GL", "disable")  # State observations need no renderer.
    from gato_jax.experts import dm_control_experts as experts
  else:
    from gato_jax.experts import gymnax_experts as experts

  if (_CONFIG.value is None) == (_ENV.value is None):
    raise app.UsageError("give exactly one of --env and --config")
  configs = (
    [_CONFIG.value]
    if _CONFIG.value is not None
    else [_recipe(name.strip()) for name in _ENV.value.split(",") if name.strip()]
  )
  for config in configs:
    expected_field = "task" if _DOMAIN.value == "dm_control" else "env_id"
    if expected_field not in config:
      raise app.UsageError(
        f"this config has no {expected_field!r} field, so it is not a"
        f" {_DOMAIN.value} expert recipe; pass the matching --domain"
      )
    if _OVERWRITE.value:
      config.unlock()
      config.overwrite = True
    summary = experts.train_expert(config, _WORKDIR.value, _REEVALUATE.value)
    print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
  launch.run(main)
