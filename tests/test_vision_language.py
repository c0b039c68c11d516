"""Procedural shape scenes, their captions and questions, TFDS storage, coco_captions loading."""

import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.data import rlds_io
from gato_jax.sources import example_sets
from gato_jax.sources import shape_scenes as S
from gato_jax.data import examples as E
from gato_jax.sources import vision_language as V


def _same_example(a, b):
  assert a["caption"] == b["caption"] and a["qa"] == b["qa"] and a["scene"] == b["scene"]
  np.testing.assert_array_equal(a["image"], b["image"])


def test_scenes_are_deterministic_given_a_seed():
  _same_example(S.make_example(7), S.make_example(7))
  captions = {S.make_example(seed)["caption"] for seed in range(20)}
  assert len(captions) > 15
  example = S.make_example(3, image_size=96)
  assert example["image"].shape == (96, 96, 3) and example["image"].dtype == np.uint8


@pytest.mark.parametrize("image_size", [64, 96])
def test_captions_and_answers_agree_with_the_pixels(image_size):
  for seed in range(40):
    example = S.make_example(seed, image_size)
    # Recover the objects from the image alone, then describe and question them again.
    recovered = S.scene_from_image(example["image"])
    drawn = [(o.shape, o.color, o.row, o.col) for o in example["scene"].objects]
    assert [(o.shape, o.color, o.row, o.col) for o in recovered.objects] == drawn, seed
    assert S.caption(recovered) == example["caption"]
    rng = np.random.default_rng(seed)
    S.sample_scene(rng, image_size)  # Advance to where the questions were drawn.
    assert S.questions(recovered, rng) == example["qa"]


def test_caption_and_question_wording():
  objects = (
    S.SceneObject("circle", "red", 0, 0),
    S.SceneObject("square", "blue", 1, 1),
    S.SceneObject("circle", "red", 2, 0),
    S.SceneObject("triangle", "green", 2, 2),
  )
  scene = S.Scene(64, 200, objects)
  assert S.caption(scene) == (
    "two red circles on the left, a blue square in the middle and a green triangle on the right"
  )
  qa = S.questions(scene, np.random.default_rng(0))
  assert [kind for kind, _, _ in qa] == list(S.QUESTION_TYPES)
  answers = {
    "how many circles are there?": "two",
    "how many red objects are there?": "two",
    "how many objects are there?": "four",
    "how many purple objects are there?": "zero",
    "what color is the square?": "blue",
    "what shape is the green object?": "triangle",
    "where is the blue square?": "center",
    "where is the triangle?": "bottom right",
  }
  for seed in range(60):
    for _, question, answer in S.questions(scene, np.random.default_rng(seed)):
      if question in answers:
        assert answers[question] == answer, question
      # The two red circles share colour and shape: no question may single one out that way.
      assert "the red circle" not in question and question != "what color is the circle?"


def test_examples_tokenize_with_the_image_and_text_specs():
  example = S.make_example(1)
  for stored in (
    {"image": example["image"], "caption": example["caption"]},
    {"image": example["image"], "question": "what shape is the red object?", "answer": "circle"},
  ):
    group = T.tokenize_timestep(V.observation(stored), None, V.OBSERVATION_SPEC)
    kinds = np.asarray(group.kinds)
    assert (kinds == T.TokenKind.IMAGE_PATCH).sum() == 16  # 64x64 -> 4x4 patches.
    assert kinds[0] == T.TokenKind.IMAGE_PATCH and kinds[-2] == T.TokenKind.TEXT
    assert group.num_tokens == V.num_tokens(stored) + 1  # + the separator.


def test_generation_round_trips_resumes_and_is_deterministic(tmp_path, monkeypatch):
  task = "vision_language/shapes_vqa"
  kwargs = dict(num_items=10, seed=3, shard_items=4, progress=lambda line: None)
  original = example_sets.write_examples
  monkeypatch.setattr(
    example_sets, "write_examples", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
  )
  with pytest.raises(KeyboardInterrupt):  # "Killed" after staging every shard.
    example_sets.generate_task(task, str(tmp_path / "a"), **kwargs)
  staging = tmp_path / "a" / "gato_meta" / "staging" / "gato_vision_language" / "shapes_vqa"
  assert len(list(staging.glob("*.pkl"))) == 3 + 1  # train 10 in shards of 4, validation 1.
  monkeypatch.setattr(example_sets, "write_examples", original)
  resumed = example_sets.generate_task(task, str(tmp_path / "a"), **kwargs)
  fresh = example_sets.generate_task(task, str(tmp_path / "b"), **kwargs)
  assert resumed.status == fresh.status == "generated" and not staging.exists()
  assert (resumed.episodes, resumed.steps, resumed.tokens) == (
    fresh.episodes,
    fresh.steps,
    fresh.tokens,
  )
  assert resumed.episodes == 11 and resumed.steps >= 4 * 11
  assert example_sets.generate_task(task, str(tmp_path / "a"), **kwargs).status == "existing"
  with pytest.raises(ValueError, match="generated with"):
    example_sets.generate_task(task, str(tmp_path / "a"), **dict(kwargs, seed=4))

  read = lambda *args, **kwargs: [
    E.to_python(x) for x in rlds_io.import_tfds().as_numpy(E.load_split(*args, **kwargs))
  ]
  stored = read("gato_vision_language/shapes_vqa", "validation", data_dir=str(tmp_path / "a"))
  again = read(resumed.dataset_dir, "validation")
  expected = V.ShapesVQA().examples("validation", 0, seed=3)
  assert len(stored) == len(again) == len(expected)
  for got, other, want in zip(stored, again, expected):
    np.testing.assert_array_equal(got["image"], want["image"])  # PNG: lossless.
    np.testing.assert_array_equal(other["image"], want["image"])
    assert (got["question"], got["answer"]) == (want["question"], want["answer"])
    assert got["objects"]["color"] == want["objects"]["color"]
  # The captioning task stores the same scenes.
  captions = example_sets.generate_task(
    "vision_language/shapes_captions", str(tmp_path / "a"), **kwargs
  )
  assert captions.steps == captions.episodes == 11
  pairs = list(
    E.read(
      E.load_captioning(
        "gato_vision_language/shapes_captions", "train", data_dir=str(tmp_path / "a")
      ),
      limit=2,
    )
  )
  for index, pair in enumerate(pairs):
    scene = S.make_example(V.scene_seed(3, "train", index))
    assert pair["caption"] == scene["caption"]
    np.testing.assert_array_equal(pair["image"], scene["image"])


def _coco_features(tfds):
  # TFDS coco_captions/2014 (tensorflow_datasets/object_detection/coco_captions.py), v1.1.0.
  return {
    "image": tfds.features.Image(encoding_format="jpeg"),
    "image/filename": tfds.features.Text(),
    "image/id": np.int64,
    "objects": tfds.features.Sequence(
      {
        "id": np.int64,
        "area": np.int64,
        "bbox": tfds.features.BBoxFeature(),
        "label": tfds.features.ClassLabel(num_classes=80),
        "is_crowd": np.bool_,
      }
    ),
    "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64}),
  }


def _coco_example(tfds, image_id, height, width, color, captions):
  return {
    "image": np.full((height, width, 3), color, np.uint8),
    "image/filename": f"COCO_val2014_{image_id:012d}.jpg",
    "image/id": image_id,
    "objects": {
      "id": [image_id * 10],
      "area": [100],
      "is_crowd": [False],
      "label": [17],
      "bbox": [tfds.features.BBox(0.1, 0.2, 0.5, 0.6)],
    },
    "captions": [{"text": text, "id": i} for i, text in enumerate(captions)],
  }


def test_coco_captions_load_in_our_layout(tmp_path):
  tfds = rlds_io.import_tfds()
  written = [
    _coco_example(tfds, 9, 48, 80, (200, 40, 40), ["A red wall.", "Something red."]),
    _coco_example(
      tfds, 25, 90, 30, (40, 40, 200), ["A blue door.", "Blue paint.", "A tall blue thing."]
    ),
  ]
  example_sets.write_examples(
    {"val": written}, _coco_features(tfds), str(tmp_path), "coco_captions", "2014", version="1.1.0"
  )
  for source in (
    "coco_captions/2014",
    "coco_captions",
    str(tmp_path / "coco_captions" / "2014" / "1.1.0"),
  ):
    pairs = list(E.read(E.load_captioning(source, "val", data_dir=str(tmp_path), image_size=32)))
    assert [p["caption"] for p in pairs] == [
      "A red wall.",
      "Something red.",
      "A blue door.",
      "Blue paint.",
      "A tall blue thing.",
    ]
    for pair, color in zip(pairs, [(200, 40, 40)] * 2 + [(40, 40, 200)] * 3):
      assert pair["image"].shape == (32, 32, 3) and pair["image"].dtype == np.uint8
      # JPEG and resizing keep a flat colour within a few levels.
      assert np.abs(pair["image"].astype(int) - color).max() <= 6
  first = list(
    E.read(
      E.load_captioning(
        "coco_captions", "val", data_dir=str(tmp_path), image_size=16, all_captions=False
      )
    )
  )
  assert [p["caption"] for p in first] == ["A red wall.", "A blue door."]
  group = T.tokenize_timestep(V.observation(first[0]), None, V.OBSERVATION_SPEC)
  assert (np.asarray(group.kinds) == T.TokenKind.IMAGE_PATCH).sum() == 1


def test_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown vision_language task"):
    example_sets.make_task("vision_language/clevr")
  with pytest.raises(ValueError, match="unknown example domain"):
    example_sets.list_tasks("audio")
  with pytest.raises(FileNotFoundError, match="not prepared"):
    E.load_captioning("coco_captions/2014", "val", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no dataset directory"):
    E.load_captioning(str(tmp_path / "nowhere"), "val")
  with pytest.raises(FileNotFoundError, match="no TFDS dataset"):
    E.load_captioning("gato_vision_language/nothing", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="at least 48"):
    S.sample_scene(np.random.default_rng(0), image_size=32)
  with pytest.raises(KeyError, match="caption or a question"):
    V.observation({"image": np.zeros((16, 16, 3), np.uint8)})
  tfds = rlds_io.import_tfds()
  example_sets.write_examples(
    {"train": [{"text": "no images here"}]},
    {"text": tfds.features.Text()},
    str(tmp_path),
    "plain",
    None,
  )
  with pytest.raises(KeyError, match="not a captioning set"):
    E.load_captioning("plain", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no split"):
    E.load_captioning("plain", "validation", data_dir=str(tmp_path))
