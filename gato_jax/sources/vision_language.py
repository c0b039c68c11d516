"""Vision-language data: procedural shape scenes for captioning and VQA, and TFDS coco_captions.

Two tasks store the same scenes (`shape_scenes`; scene i of a split depends on (seed, split, i)
alone) as TFDS datasets under gato_vision_language/:

  shapes_captions: {"image": uint8 [64, 64, 3] (PNG, lossless), "caption": str,
                    "scene_id": int64, "objects": Sequence({"shape", "color": str,
                    "row", "col": int32})}
  shapes_vqa:      {"image", "question": str, "answer": str, "question_type": str,
                    "scene_id", "objects"}, one example per question (4-5 a scene)

with splits "train" (the requested number of scenes) and "validation" (a tenth of it).
`gato_jax.data.examples.load_captioning` reads these or TFDS's `coco_captions` (Karpathy splits train/val/test/restval,
several captions per image), mapped to one layout, {"image": uint8 [S, S, 3], "caption": str},
one example per caption, COCO images resized (shorter side) and centre-cropped to S.
`observation` turns an example into what the tokenizer takes with OBSERVATION_SPEC: the image,
then the text (caption, or question and answer), as Gato's image-text pairs.
"""

import functools

import numpy as np

from gato_jax import tokenizer
from gato_jax.data.examples import IMAGE_SIZE
from gato_jax.sources import episodes, example_sets, shape_scenes

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
