"""Episodes, their TFDS storage and generation; TensorFlow is imported only by rlds_io, lazily."""
