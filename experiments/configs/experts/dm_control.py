"""Entry point of `--config=experiments/configs/experts/dm_control.py:TASK`
(gato_jax/configs/experts/dm_control.py)."""

from gato_jax.configs.experts.dm_control import RECIPES, get_config  # noqa: F401
