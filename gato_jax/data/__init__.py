"""Episodes and example sets (text, vision-language), their TFDS storage and generation.

TensorFlow is imported lazily, through gato_jax.tf_compat, only by the functions that read or
write TFDS datasets.
"""
