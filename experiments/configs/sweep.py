"""Entry point of `--config=experiments/configs/sweep.py:LADDER` (gato_jax/configs/sweep.py)."""

from gato_jax.configs.sweep import LADDERS, get_config  # noqa: F401
