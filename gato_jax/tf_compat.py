"""The one place gato_jax imports TensorFlow, so that TensorFlow never takes an accelerator.

TensorFlow serves only the input pipeline (tf.data, TFDS, SeqIO); JAX owns every GPU/TPU. If
TensorFlow initialised its GPU runtime it would reserve most of the GPU memory JAX needs.
"""

import functools
import os


@functools.cache
def import_tensorflow():
  """Imports TensorFlow with accelerators hidden from it, and returns the module."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    # RuntimeError: the runtime is already initialised (someone imported TF before us); the
    # devices it saw are then fixed. ValueError: this build knows no such device type.
    pass
  return tf
