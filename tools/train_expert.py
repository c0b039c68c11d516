r"""Trains, evaluates and caches PPO experts for gymnax tasks (classic control, MinAtar).

Usage (one task, its recipe from experiments/configs/experts/gymnax.py):
  python tools/train_expert.py --env=CartPole-v1 --workdir=~/.cache/gato_jax/experts

Several tasks in turn, or an explicit config with overrides:
  python tools/train_expert.py --env=CartPole-v1,Acrobot-v1,Pendulum-v1
  python tools/train_expert.py --config=experiments/configs/experts/gymnax.py:Breakout-MinAtar \
      --config.ppo.total_timesteps=1000000

A task whose expert is already cached is skipped unless --overwrite (or --config.overwrite);
--reevaluate re-runs only its evaluation (e.g. after changing --config.eval.deterministic).
Prints one JSON summary line per task (expert, random and reference returns, wall time).
"""

import importlib.util
import json
import os

from absl import app, flags
from ml_collections import config_flags

_RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "experiments", "configs", "experts", "gymnax.py")

_ENV = flags.DEFINE_string("env", None, "Comma-separated gymnax ids, e.g. CartPole-v1.")
_WORKDIR = flags.DEFINE_string("workdir", "~/.cache/gato_jax/experts", "Expert cache directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Retrain experts that are already cached.")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False,
                                "Re-run the evaluation of cached experts (no training).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Expert config file:preset.",
                                          lock_config=True)


def _recipe(env_id: str):
  spec = importlib.util.spec_from_file_location("gymnax_expert_recipes", _RECIPES)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(env_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gato_jax.experts import gymnax_experts

  if (_CONFIG.value is None) == (_ENV.value is None):
    raise app.UsageError("give exactly one of --env and --config")
  configs = [_CONFIG.value] if _CONFIG.value is not None else [
      _recipe(name.strip()) for name in _ENV.value.split(",") if name.strip()]
  for config in configs:
    if _OVERWRITE.value:
      config.unlock()
      config.overwrite = True
    summary = gymnax_experts.train_and_evaluate(config, _WORKDIR.value, _REEVALUATE.value)
    print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
