"""Non-control evaluation: caption and VQA metrics on hand-made inputs, perplexity against an
independent computation, cached generation against full forward passes, and the evaluator's
text / vision-language results on generated held-out data."""

import functools
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from gato_jax import tokenizer as T
from gato_jax.sources import shape_scenes
from gato_jax.evaluation import evaluator, non_control, reports, text_metrics
from gato_jax.inference.decode import mask_to_range
from gato_jax.model import Gato, ModelConfig, batch_from_token_groups, init_variables
from gato_jax.tokenizer.timestep import TokenGroup, concat_token_groups

CFG = ModelConfig.from_size("tiny", max_decode_length=96)


@pytest.fixture(scope="module")
def params():
  return nn.unbox(jax.jit(lambda r: init_variables(CFG, r))(jax.random.key(11)))["params"]


@pytest.fixture(scope="module")
def text_tokenizer():
  return T.TextTokenizer()


# --- Metrics ------------------------------------------------------------------------------------


def test_bleu4_on_hand_computed_pairs():
  # One pair: clipped n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty.
  assert text_metrics.bleu4([["a b c d f"]], ["a b c d e"]) == pytest.approx(0.2**0.25, abs=1e-8)
  assert text_metrics.bleu4(
    [["the cat sat on the mat"]], ["the cat sat on the mat"]
  ) == pytest.approx(1.0, abs=1e-8)
  # Corpus level: counts are summed over pairs before the geometric mean. The second pair adds
  # 4/4, 3/3, 2/2, 1/1 matches: precisions 8/9, 6/7, 4/5, 2/3.
  corpus = text_metrics.bleu4([["a b c d f"], ["w x y z"]], ["a b c d e", "w x y z"])
  assert corpus == pytest.approx((8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25, abs=1e-8)
  # A short hypothesis is penalised: 2 words against 4, BP = exp(1 - 4/2). It has no 3- or
  # 4-grams, whose precisions COCO smooths to tiny / small = 1e-15 / 1e-9.
  assert text_metrics.bleu4([["a b c d"]], ["a b"]) == pytest.approx(
    np.exp(1 - 4 / 2) * (1e-6 * 1e-6) ** 0.25, rel=1e-6
  )
  # Case and COCO's punctuation do not count.
  assert text_metrics.bleu4(
    [["A red circle, on the left."]], ["a red circle on the left"]
  ) == pytest.approx(1.0, abs=1e-8)


def test_cider_on_hand_computed_pairs():
  # Two images; n-gram weights are tf * (log 2 - log df) over the 2 reference sets.
  # Image 2, "c d" vs "c d": unigrams and the bigram agree (cosine 1), no 3/4-grams: mean over
  # n = 1..4 is 0.5, x10 = 5. Image 1, "a b" vs "a c": the unigram "c" is in both references
  # (weight 0), "b" in none; cosine of unigrams 1/sqrt(2), bigrams 0: 10 * (1/sqrt(2)) / 4.
  expected = (10 * 2**-0.5 / 4 + 5.0) / 2
  assert text_metrics.cider([["a c"], ["c d"]], ["a b", "c d"]) == pytest.approx(
    expected, abs=1e-12
  )
  assert text_metrics.cider([["a b"], ["c d"]], ["a b", "c d"]) == pytest.approx(5.0, abs=1e-12)
  assert text_metrics.cider([["a b"], ["c d"]], ["x y", "z w"]) == 0.0


def test_vqa_accuracy_and_bad_inputs():
  assert text_metrics.exact_match_accuracy(
    ["Two", "top left.", "no"], ["two", "top left", "yes"]
  ) == pytest.approx(2 / 3)
  assert text_metrics.normalize("  Top-Left?  ") == "top left"
  with pytest.raises(ValueError, match="2 predictions for 1 answers"):
    text_metrics.exact_match_accuracy(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="non-empty list of reference strings"):
    text_metrics.bleu4(["a b"], ["a b"])  # References must be lists per hypothesis.
  with pytest.raises(ValueError, match="1 hypotheses for 2 reference sets"):
    text_metrics.cider([["a"], ["b"]], ["a"])
  with pytest.raises(ValueError, match="no tokens"):
    text_metrics.perplexity(1.0, 0)
  assert text_metrics.perplexity(2 * np.log(3.0), 2) == pytest.approx(3.0)


# --- Perplexity ---------------------------------------------------------------------------------


def _document(ids) -> TokenGroup:
  n = len(ids)
  return TokenGroup(
    tokens=np.asarray(ids, np.int32),
    kinds=np.full(n, T.TokenKind.TEXT, np.int32),
    local_positions=np.full(n, -1, np.int32),
    loss_mask=np.ones(n, bool),
    timesteps=np.zeros(n, np.int32),
    patches=np.zeros((0, 0), np.float32),
    patch_rows=np.zeros((0, 2), np.float32),
    patch_cols=np.zeros((0, 2), np.float32),
  )


@functools.partial(jax.jit, static_argnames=("model",))
def _logits(params, batch, *, model):
  return model.apply({"params": params}, batch)


def _independent_nlls(params, documents) -> list[tuple[float, int]]:
  """Per document: summed NLL of tokens 1.. given their prefixes, and their count.

  One forward pass with the documents right-padded to 32 tokens (causal attention: padding after
  a document changes nothing before it), then a float64 numpy log-softmax.
  """
  rows = list(documents) + [_document([1])] * (8 - len(documents))
  batch = batch_from_token_groups(rows, 32, 0, CFG.patch_dim)
  all_logits = np.asarray(_logits(params, batch, model=Gato(CFG)), np.float64)
  out = []
  for document, logits in zip(documents, all_logits):
    logits = logits[: document.num_tokens - 1]
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = document.tokens[1:]
    out.append((float(-log_probs[np.arange(targets.size), targets].sum()), int(targets.size)))
  return out


def test_perplexity_is_exp_of_mean_token_nll(params):
  rng = np.random.default_rng(0)
  documents = [_document(rng.integers(3, 32000, n)) for n in (5, 17, 9, 30)]
  long = documents[3]
  pieces = [_document(long.tokens[s : s + 12]) for s in (0, 12, 24)]
  parts = _independent_nlls(params, documents + pieces)
  result = non_control.evaluate_text(CFG, params, documents, seq_len=32, batch_size=3)
  total, count = sum(p[0] for p in parts[:4]), sum(p[1] for p in parts[:4])
  assert result["tokens"] == count == 5 + 17 + 9 + 30 - 4
  assert result["perplexity"] == pytest.approx(np.exp(total / count), rel=1e-4)
  assert result["nll_per_token"] == pytest.approx(total / count, rel=1e-4)
  # A document longer than seq_len is scored in independent consecutive chunks.
  chunked = non_control.evaluate_text(CFG, params, [long], seq_len=12, batch_size=2)
  assert chunked["tokens"] == 11 + 11 + 5
  assert chunked["nll_per_token"] == pytest.approx(sum(p[0] for p in parts[4:]) / 27, rel=1e-4)


# --- Generation ---------------------------------------------------------------------------------


def _scene_context(seed, question=None, text_tokenizer=None):
  example = shape_scenes.make_example(seed)
  text = np.zeros(0, np.int32) if question is None else question
  return T.tokenize_timestep(
    {"image": example["image"], "text": text},
    None,
    non_control.VL_SPEC,
    text_tokenizer=text_tokenizer,
    separator=False,
  )


def test_cached_generation_equals_greedy_full_forward(params, text_tokenizer):
  contexts = [
    _scene_context(1),
    _scene_context(2, "how many circles are there?", text_tokenizer),
    _scene_context(3, "is there a red square?", text_tokenizer),
  ]
  num_tokens = 6
  cached = non_control.generate_text(CFG, params, contexts, num_tokens)
  assert cached.shape == (3, num_tokens)
  model = Gato(CFG)
  groups = list(contexts)
  for step in range(num_tokens):
    batch = batch_from_token_groups(
      groups, CFG.max_decode_length, 16, CFG.patch_dim, pad_side="left"
    )
    logits = _logits(params, batch, model=model)[:, -1]
    ids = np.asarray(np.argmax(mask_to_range(logits, 0, T.TEXT_VOCAB_SIZE), -1), np.int32)
    np.testing.assert_array_equal(cached[:, step], ids)
    # The generated token continues the observation's local positions, as a caption's does.
    groups = [
      concat_token_groups(
        [
          g,
          _document([i]).replace(
            local_positions=np.array([int(g.local_positions.max()) + 1], np.int32)
          ),
        ]
      ).replace(timesteps=np.zeros(g.num_tokens + 1, np.int32))
      for g, i in zip(groups, ids)
    ]
  with pytest.raises(ValueError, match="exceed max_decode_length"):
    non_control.generate_text(CFG, params, contexts, 90)


def test_caption_and_vqa_scores_of_a_model(params, text_tokenizer):
  scenes = [shape_scenes.make_example(100 + i) for i in range(4)]
  captions = non_control.evaluate_vision_language(
    CFG,
    params,
    [{"image": s["image"], "caption": s["caption"]} for s in scenes],
    text_tokenizer,
    batch_size=4,
  )
  assert captions["examples"] == 4 and len(captions["samples"]) == 4
  references = [[s["reference"]] for s in captions["samples"]]
  generated = [s["generated"] for s in captions["samples"]]
  assert captions["bleu4"] == text_metrics.bleu4(references, generated)
  assert captions["cider"] == text_metrics.cider(references, generated)
  assert captions["generated_tokens"] == max(
    len(text_tokenizer.encode(s["caption"])) for s in scenes
  )

  questions = [
    dict(image=s["image"], question=q, answer=a, question_type=kind)
    for s in scenes[:2]
    for kind, q, a in s["qa"]
  ]
  vqa = non_control.evaluate_vision_language(CFG, params, questions, text_tokenizer, batch_size=4)
  assert vqa["examples"] == len(questions)
  assert 0.0 <= vqa["vqa_accuracy"] <= 1.0
  assert set(vqa["accuracy_by_type"]) <= set(shape_scenes.QUESTION_TYPES)
  for sample, question in zip(vqa["samples"], questions):
    # The prediction is exactly as many tokens as the answer.
    assert sample["answer"] == question["answer"]
    assert (
      len(text_tokenizer.encode(sample["predicted"]))
      <= len(text_tokenizer.encode(question["answer"])) + 1
    )


# --- The evaluator on generated held-out data ---------------------------------------------------


def _config(data_dir, **eval_overrides):
  from gato_jax.configs import gato

  config = gato.get_config("tiny")
  config.data.data_dir = str(data_dir)
  config.model.max_decode_length = CFG.max_decode_length
  config.train.seq_len = 64
  for key, value in eval_overrides.items():
    config.eval[key] = value
  return config


def _write_text_set(data_dir):
  """A small stand-in for text/cpython_docs, stored where its generator would put it."""
  from gato_jax.data import rlds_io
  from gato_jax.sources import example_sets

  tfds = rlds_io.import_tfds()
  docs = lambda tag, n: [{"text": f"{tag} document {i}: return the value of x."} for i in range(n)]
  example_sets.write_examples(
    {"train": docs("train", 3), "validation": docs("held out", 5)},
    {"text": tfds.features.Text()},
    str(data_dir),
    "gato_text",
    rlds_io.config_name("text/cpython_docs"),
  )


def test_evaluate_reports_text_and_vision_language(tmp_path, params):
  from gato_jax.sources import example_sets

  for task in ("vision_language/shapes_captions", "vision_language/shapes_vqa"):
    example_sets.generate_task(task, str(tmp_path), num_items=20, progress=lambda _: None)
  _write_text_set(tmp_path)
  tasks = "text/cpython_docs,vision_language/shapes_captions,vision_language/shapes_vqa"
  config = _config(tmp_path, tasks=tasks, non_control_examples=4, batch_size=4)
  assert evaluator.eval_tasks(config) == []
  assert evaluator.non_control_tasks(config) == tasks.split(",")
  results = evaluator.evaluate(config, str(tmp_path / "run"), params=params, step=9)
  text = results["text"]["text/cpython_docs"]
  assert text["documents"] == 4 and text["split"] == "validation" and text["perplexity"] > 1
  captions = results["vision_language"]["vision_language/shapes_captions"]
  assert captions["examples"] == 2  # The validation split holds a tenth of the 20 scenes.
  # Held-out scenes: the references are the validation scenes' own captions.
  from gato_jax.sources import vision_language

  held_out = [
    shape_scenes.make_example(vision_language.scene_seed(0, "validation", i))["caption"]
    for i in range(2)
  ]
  assert [s["reference"] for s in captions["samples"]] == held_out
  vqa = results["vision_language"]["vision_language/shapes_vqa"]
  assert vqa["examples"] == 4 and 0 <= vqa["vqa_accuracy"] <= 1
  assert results["overall"] is None and results["tasks"] == {}
  metrics = evaluator.scalar_metrics(results)
  assert metrics["eval/text/cpython_docs/perplexity"] == text["perplexity"]
  assert metrics["eval/vision_language/shapes_captions/cider"] == captions["cider"]
  assert metrics["eval/vision_language/shapes_vqa/vqa_accuracy"] == vqa["vqa_accuracy"]

  directory = reports.results_dir(str(tmp_path / "run"), 9)
  loaded = reports.load(directory)
  assert (
    loaded["vision_language"]["vision_language/shapes_captions"]["samples"] == captions["samples"]
  )
  table = (pathlib.Path(directory) / reports.TABLE_FILE).read_text()
  assert "| text/cpython_docs | 4 |" in table and "Sample captions" in table
  assert held_out[0] in table
  reports.regenerate(directory)
  assert (pathlib.Path(directory) / reports.TABLE_FILE).read_text() == table

  # The mixture's text and vision-language tasks are evaluated when eval.tasks is empty.
  mixture = "text/cpython_docs=1,vision_language/shapes_vqa=1"
  config = _config(tmp_path, non_control_examples=2)
  config.data.mixture = mixture
  assert evaluator.non_control_tasks(config) == ["text/cpython_docs", "vision_language/shapes_vqa"]
  config.eval.non_control_examples = 0
  assert evaluator.non_control_tasks(config) == []


def test_non_control_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown task 'text/nope'"):
    evaluator.non_control_tasks(_config(tmp_path, tasks="text/nope"))
  config = _config(tmp_path, tasks="vision_language/shapes_vqa")
  with pytest.raises(FileNotFoundError, match="generate_data.py --domain=vision_language"):
    evaluator.evaluate_non_control_task("vision_language/shapes_vqa", config, CFG, None)
  with pytest.raises(ValueError, match="nothing to evaluate"):
    evaluator.evaluate(
      _config(tmp_path, tasks="text/cpython_docs", non_control_examples=0), str(tmp_path), params={}
    )
