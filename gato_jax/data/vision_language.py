"""Vision-language data: procedural shape scenes for captioning and VQA, and TFDS coco_captions.

Two tasks store the same scenes (`shape_scenes`; scene i of a split depends on (seed, split, i)
alone) as TFDS datasets under gato_vision_language/:

  shapes_captions: {"image": uint8 [64, 64, 3] (PNG, lossless), "caption": str,
                    "scene_id": int64, "objects": Sequence({"shape", "color": str,
                    "row", "col": int32})}
  shapes_vqa:      {"image", "question": str, "answer": str, "question_type": str,
                    "scene_id", "objects"}, one example per question (4-5 a scene)

with splits "train" (the requested number of scenes) and "validation" (a tenth of it).
`load_captioning` reads these or TFDS's `coco_captions` (Karpathy splits train/val/test/restval,
several captions per image), mapped to one layout, {"image": uint8 [S, S, 3], "caption": str},
one example per caption, COCO images resized (shorter side) and centre-cropped to S.
`observation` turns an example into what the tokenizer takes with OBSERVATION_SPEC: the image,
then the text (caption, or question and answer), as Gato's image-text pairs.
"""

import functools

import numpy as np

from gato_jax import tf_compat
from gato_jax import tokenizer
from gato_jax.data import episodes, example_sets, shape_scenes

IMAGE_SIZE = 64  # 4x4 patches of 16x16.
VALIDATION_SHARE = 10  # One validation scene per this many training scenes.
# Keys sort "image" < "text": image patches come first, then the text that describes them.
OBSERVATION_SPEC = {"image": tokenizer.ImageSpec(), "text": tokenizer.TextSpec()}


def scene_seed(seed: int, split: str, index: int) -> int:
  """The seed of scene `index` of `split`, shared by the captioning and VQA tasks."""
  return episodes.episode_seed(seed, f"vision_language/shapes/{split}", index)


def observation(example: dict) -> dict:
  """{"image", "text"} for the tokenizer: the caption, or the question followed by its answer."""
  if "caption" in example:
    text = example["caption"]
  elif "question" in example and "answer" in example:
    text = f"{example['question']} {example['answer']}"
  else:
    raise KeyError(
      f"a vision-language example has a caption or a question and answer; got"
      f" keys {sorted(example)}"
    )
  return {"image": np.asarray(example["image"]), "text": text}


@functools.cache
def _text_tokenizer():
  return tokenizer.TextTokenizer()


def num_tokens(example: dict) -> int:
  """Image patches plus text tokens of one example (without the separator)."""
  obs = observation(example)
  height, width = obs["image"].shape[:2]
  return tokenizer.num_patches(height, width) + len(_text_tokenizer().encode(obs["text"]))


class _ShapeScenes(example_sets.ExampleTask):
  dataset = "gato_vision_language"
  source = "procedural"
  image_size = IMAGE_SIZE

  def features(self, tfds) -> dict:
    size = self.image_size
    return {
      "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
      "scene_id": np.int64,
      "objects": tfds.features.Sequence(
        {
          "shape": tfds.features.Text(),
          "color": tfds.features.Text(),
          "row": np.int32,
          "col": np.int32,
        }
      ),
    }

  def split_sizes(self, num_items: int, seed: int) -> dict[str, int]:
    del seed
    return {"train": num_items, "validation": max(1, num_items // VALIDATION_SHARE)}

  def scene(self, split: str, index: int, seed: int) -> dict:
    example = shape_scenes.make_example(scene_seed(seed, split, index), self.image_size)
    objects = example["scene"].objects
    example["common"] = {
      "image": example["image"],
      "scene_id": np.int64(index),
      "objects": {
        "shape": [o.shape for o in objects],
        "color": [o.color for o in objects],
        "row": np.array([o.row for o in objects], np.int32),
        "col": np.array([o.col for o in objects], np.int32),
      },
    }
    return example

  def num_tokens(self, example: dict) -> int:
    return num_tokens(example)


class ShapesCaptions(_ShapeScenes):
  """One example per scene: the image and its caption."""

  name = "vision_language/shapes_captions"

  def features(self, tfds) -> dict:
    return dict(super().features(tfds), caption=tfds.features.Text())

  def examples(self, split: str, index: int, seed: int) -> list[dict]:
    scene = self.scene(split, index, seed)
    return [dict(scene["common"], caption=scene["caption"])]


class ShapesVQA(_ShapeScenes):
  """One example per question about a scene."""

  name = "vision_language/shapes_vqa"

  def features(self, tfds) -> dict:
    return dict(
      super().features(tfds),
      question=tfds.features.Text(),
      answer=tfds.features.Text(),
      question_type=tfds.features.Text(),
    )

  def examples(self, split: str, index: int, seed: int) -> list[dict]:
    scene = self.scene(split, index, seed)
    return [
      dict(scene["common"], question_type=kind, question=question, answer=answer)
      for kind, question, answer in scene["qa"]
    ]


TASKS = {"shapes_captions": ShapesCaptions, "shapes_vqa": ShapesVQA}


def _fit_image(image, size: int):
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
  ds = example_sets.load_split(source, split, data_dir)
  spec = ds.element_spec
  if "image" not in spec or not ({"caption", "captions"} & set(spec)):
    raise KeyError(
      f"{source!r} is not a captioning set: it has features {sorted(spec)}, not"
      " 'image' with 'caption' (ours) or 'captions' (coco_captions)"
    )
  if "caption" in spec:
    return ds.map(
      lambda ex: {"image": _fit_image(ex["image"], image_size), "caption": ex["caption"]}
    )

  def per_caption(ex):
    # COCO: {"image", "image/id", "image/filename", "objects", "captions": {"text", "id"}}.
    image = _fit_image(ex["image"], image_size)
    texts = ex["captions"]["text"] if all_captions else ex["captions"]["text"][:1]
    return tf.data.Dataset.from_tensor_slices(texts).map(
      lambda text: {"image": image, "caption": text}
    )

  return ds.flat_map(per_caption)


def load_vqa(
  source: str = "gato_vision_language/shapes_vqa", split: str = "train", data_dir: str | None = None
):
  """A tf.data.Dataset of {"image", "question", "answer", "question_type"} (our VQA layout)."""
  ds = example_sets.load_split(source, split, data_dir)
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
    yield example_sets.to_python(element)
