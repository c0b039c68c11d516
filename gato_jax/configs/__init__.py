"""The run presets, importable: `gato` (model sizes and recipes), `sweep` (scaling ladders) and
`experts` (the trained experts' recipes).

Launchers load them by path as ml_collections' config_flags does, through the thin entry points
in experiments/configs (`--config=experiments/configs/gato.py:tiny,smoke`); the library and tests
import them (`from gato_jax.configs import gato`). Each module imports only light code, so
reading a preset loads no TensorFlow, SeqIO or environment package.
"""
