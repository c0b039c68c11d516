"""Evaluation: prompted rollouts in the real environments, normalised scores, reports."""

from gato_jax.evaluation.evaluator import evaluate, restore_params, scalar_metrics
from gato_jax.evaluation.model_agent import ModelAgent
from gato_jax.evaluation.rollouts import eval_seeds, run_task
