"""Entry point of `--config=experiments/configs/experts/gymnax.py:TASK`
(gato_jax/configs/experts/gymnax.py)."""

from gato_jax.configs.experts.gymnax import MINATAR, RECIPES, get_config  # noqa: F401
