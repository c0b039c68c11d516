"""Making episodes and examples: the code that needs environments (gato_jax.envs).

Episodes played by experts and random policies (`generation`, `episodes`), example sets of text
and image-text pairs (`example_sets`, `text_data`, `vision_language`, `shape_scenes`), public
expert data imported from RL Unplugged (`rl_unplugged`), and the registration of all of these as
the built-in tasks of the catalogue (`builtin`). The training side (gato_jax.data) reads what
they store and imports no environment.
"""
