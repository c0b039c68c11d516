"""Reading stored example sets (text documents, image-text pairs) as tf.data Datasets.

Our generated sets (gato_jax.sources.example_sets writes them) and public TFDS sets (lm1b, c4,
coco_captions) load through `load_split`; `load_captioning` and `load_vqa` map captioning and
VQA sets to one layout each. The training side (gato_jax.data.tasks) and evaluation read them
here, without the code that makes them.

TensorFlow is imported through gato_jax.tf_compat only, and only when a function here runs.
"""

from typing import Any, Mapping

import numpy as np

from gato_jax import tf_compat
from gato_jax.data import rlds_io

IMAGE_SIZE = 64  # 4x4 patches of 16x16.


def load_split(source: str, split: str = "train", data_dir: str | None = None):
  """A tf.data.Dataset of one split of a stored or public TFDS dataset, in stored order.

  Args:
    source: a dataset directory, one of ours by name ("gato_text/cpython_docs", found in
      `data_dir`), or a public TFDS name ("lm1b", "c4/en", "coco_captions/2014").
    split: the split, e.g. "train", "validation" ("val" for coco_captions).
    data_dir: where to look up names (TFDS's default, ~/tensorflow_datasets, when None).
  """
  builder = rlds_io.load_builder(source, data_dir)
  if not builder.is_prepared():
    # A registered public builder exists even when its data do not.
    raise FileNotFoundError(
      f"TFDS dataset {source!r} is not prepared in data_dir={data_dir!r} (looked in"
      f" {builder.data_dir}); build it first, e.g. `tfds build {source.split('/')[0]}"
      f" --data_dir=...`, or pass the data_dir that holds it"
    )
  if split not in builder.info.splits:
    raise ValueError(f"{source!r} has no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_dataset(split=split, shuffle_files=False)


def to_python(tree: Any) -> Any:
  """tf.data numpy output -> Python: bytes become str, arrays of bytes lists of str."""
  if isinstance(tree, Mapping):
    return {k: to_python(v) for k, v in tree.items()}
  if isinstance(tree, bytes):
    return tree.decode("utf-8")
  if isinstance(tree, np.ndarray) and tree.dtype.kind in "OS":
    return [to_python(v) for v in tree.tolist()]
  return tree


def fit_image(image, size: int):
  """uint8 [size, size, 3]: the shorter side resized to `size`, then a centre crop.

  Images already of that size pass through untouched (exact pixels for our scenes).
  """
  tf = tf_compat.import_tensorflow()
  if tuple(image.shape[:2]) == (size, size):
    return image
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = size / tf.minimum(height, width)
  new_size = tf.cast(tf.math.ceil(tf.stack([height * scale, width * scale])), tf.int32)
  resized = tf.image.resize(image, tf.maximum(new_size, size), antialias=True)
  cropped = tf.image.resize_with_crop_or_pad(resized, size, size)
  return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)


def load_captioning(
  source: str,
  split: str = "train",
  data_dir: str | None = None,
  image_size: int = IMAGE_SIZE,
  all_captions: bool = True,
):
  """A tf.data.Dataset of {"image": uint8 [S, S, 3], "caption": string}, in stored order.

  Args:
    source: "gato_vision_language/shapes_captions" (ours), "coco_captions" or
      "coco_captions/2014" (TFDS), or a dataset directory of either layout.
    split: e.g. "train", "validation" (ours), "val", "test", "restval" (coco_captions).
    data_dir: where to look up names.
    image_size: side S of the square images.
    all_captions: for datasets with several captions an image (coco_captions), one example per
      caption; otherwise the first caption only.
  """
  tf = tf_compat.import_tensorflow()
  ds = load_split(source, split, data_dir)
  spec = ds.element_spec
  if "image" not in spec or not ({"caption", "captions"} & set(spec)):
    raise KeyError(
      f"{source!r} is not a captioning set: it has features {sorted(spec)}, not"
      " 'image' with 'caption' (ours) or 'captions' (coco_captions)"
    )
  if "caption" in spec:
    return ds.map(
      lambda ex: {"image": fit_image(ex["image"], image_size), "caption": ex["caption"]}
    )

  def per_caption(ex):
    # COCO: {"image", "image/id", "image/filename", "objects", "captions": {"text", "id"}}.
    image = fit_image(ex["image"], image_size)
    texts = ex["captions"]["text"] if all_captions else ex["captions"]["text"][:1]
    return tf.data.Dataset.from_tensor_slices(texts).map(
      lambda text: {"image": image, "caption": text}
    )

  return ds.flat_map(per_caption)


def load_vqa(
  source: str = "gato_vision_language/shapes_vqa", split: str = "train", data_dir: str | None = None
):
  """A tf.data.Dataset of {"image", "question", "answer", "question_type"} (our VQA layout)."""
  ds = load_split(source, split, data_dir)
  keys = ("image", "question", "answer", "question_type")
  missing = [k for k in keys if k not in ds.element_spec]
  if missing:
    raise KeyError(f"{source!r} lacks VQA features {missing}; it has {sorted(ds.element_spec)}")
  return ds.map(lambda ex: {k: ex[k] for k in keys})


def read(ds, limit: int | None = None):
  """Yields a tf.data.Dataset's elements as numpy dicts with str text, e.g. for `observation`."""
  if limit is not None:
    ds = ds.take(limit)
  for element in ds.as_numpy_iterator():
    yield to_python(element)
