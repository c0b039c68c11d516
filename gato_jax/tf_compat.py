"""The one place gato_jax imports TensorFlow, so that TensorFlow never takes an accelerator.

TensorFlow serves only the input pipeline (tf.data, TFDS, SeqIO); JAX owns every GPU/TPU. If
TensorFlow initialised its GPU runtime it would reserve most of the GPU memory JAX needs.
"""

import contextlib
import functools
import os
import sys
import tempfile

from absl import logging


@functools.cache
def import_tensorflow():
  """Imports TensorFlow with accelerators hidden from it, and returns the module."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with _stderr_to_log():
    import tensorflow as tf

    try:
      tf.config.set_visible_devices([], "GPU")
      tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
      # RuntimeError: the runtime is already initialised (someone imported TF before us); the
      # devices it saw are then fixed. ValueError: this build knows no such device type.
      pass
  return tf


@contextlib.contextmanager
def _stderr_to_log():
  """Sends what is written to file descriptor 2 meanwhile to the log instead of the console.

  TensorFlow's runtime probes for CUDA when it loads and prints what it finds ("Could not find
  cuda drivers", "failed call to cuInit") straight to descriptor 2, before its logging is set
  up, so TF_CPP_MIN_LOG_LEVEL cannot hold those lines back.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        logging.info("tensorflow: %s", line, extra={"console": False})
