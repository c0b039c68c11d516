"""Evaluation beyond control: text perplexity, image captioning and VQA on held-out splits.

Training reads the "train" split of every task (its derived store, `data.pipeline.open_store`);
the text and vision-language sets also store a "validation" split that it never sees (CPython
documents held out by a hash of their text, `text_data.split_of`; scenes drawn from seeds of their
own split, `vision_language.scene_seed`). Everything here reads that split.

  * Text: perplexity exp(total NLL / targets) over held-out documents, tokenized as in training
    (EOS closes each document) and scored with the training loss's own target mask. A document
    longer than `seq_len` is cut into consecutive chunks scored independently (the first token
    of a chunk has no context and is not a target).
  * Captioning: the caption greedily decoded with the key/value cache after the image's patches,
    as many text tokens as the longest reference (or until EOS), scored with BLEU-4 and CIDEr-D
    (`text_metrics`).
  * VQA: after the image and the question, the greedy continuation as many tokens long as the
    answer must spell the answer exactly (LAMBADA-style exact match: the stored texts end with
    no end-of-text token, so a model trained on them never learned where an answer stops).
"""

import functools
from typing import Any, Sequence

import jax
import numpy as np

from gato_jax.data import sequences
from gato_jax.evaluation import text_metrics
from gato_jax.evaluation.context import empty_group
from gato_jax.inference.decode import generate_text
from gato_jax.model.config import ModelConfig
from gato_jax.model.gato import Gato
from gato_jax.model.inputs import Batch, batch_from_token_groups
from gato_jax.tokenizer import specs as token_specs
from gato_jax.tokenizer.timestep import TokenGroup, tokenize_timestep
from gato_jax.training.loss import masked_next_token_loss

HELD_OUT_SPLIT = "validation"
# Image first, then text: the vision-language tasks' observation (data.vision_language).
VL_SPEC = {"image": token_specs.ImageSpec(), "text": token_specs.TextSpec()}
NUM_SAMPLES = 5  # Generated captions / answers shown in the reports.

# --- Perplexity ---------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model",))
def _row_nll(params, batch: Batch, *, model: Gato):
  """(summed NLL, target count) per row, with the training loss's target definition."""
  _, metrics = masked_next_token_loss(model.apply({"params": params}, batch), batch)
  return metrics["row_loss_sum"], metrics["row_targets"]


def document_chunks(documents: Sequence[TokenGroup], seq_len: int) -> list[TokenGroup]:
  """Each document cut into consecutive pieces of at most `seq_len` tokens."""
  if seq_len < 2:
    raise ValueError(f"seq_len must be at least 2 to have a target, got {seq_len}")
  chunks = []
  for document in documents:
    if document.patches.shape[0]:
      raise ValueError("perplexity is of text documents; this one has image patches")
    chunks += [
      sequences.token_slice(document, start, start + seq_len)
      for start in range(0, document.num_tokens, seq_len)
    ]
  return chunks


def text_nll(
  model_config: ModelConfig,
  params: Any,
  documents: Sequence[TokenGroup],
  seq_len: int,
  batch_size: int = 16,
) -> tuple[float, int]:
  """(total NLL in nats, number of target tokens) of `documents` under the model.

  Rows are padded to `seq_len` and batches to `batch_size` rows (padding has no targets), so
  every call has one shape.
  """
  if not documents:
    raise ValueError("text_nll needs at least one document")
  model = Gato(model_config)
  chunks = document_chunks(documents, seq_len)
  total, count = 0.0, 0
  for start in range(0, len(chunks), batch_size):
    rows = chunks[start : start + batch_size]
    rows += [empty_group()] * (batch_size - len(rows))
    batch = batch_from_token_groups(rows, seq_len, 0, model_config.patch_dim)
    nll, targets = jax.device_get(_row_nll(params, batch, model=model))
    total += float(np.sum(nll, dtype=np.float64))
    count += int(np.sum(targets))
  return total, count


def evaluate_text(
  model_config: ModelConfig,
  params: Any,
  documents: Sequence[TokenGroup],
  seq_len: int,
  batch_size: int = 16,
) -> dict:
  """{"perplexity", "nll_per_token", "tokens", "documents"} of held-out documents."""
  total, count = text_nll(model_config, params, documents, seq_len, batch_size)
  return {
    "perplexity": text_metrics.perplexity(total, count),
    "nll_per_token": total / count,
    "tokens": count,
    "documents": len(documents),
    "split": HELD_OUT_SPLIT,
  }


def _until_eos(ids: np.ndarray, eos_id: int) -> np.ndarray:
  stops = np.flatnonzero(ids == eos_id)
  return ids[: stops[0]] if stops.size else ids


def _generate_in_batches(
  model_config: ModelConfig,
  params: Any,
  contexts: Sequence[TokenGroup],
  num_tokens: int,
  batch_size: int,
) -> np.ndarray:
  """`generate_text` over batches of `batch_size` rows, the last one padded (one shape)."""
  out = []
  for start in range(0, len(contexts), batch_size):
    rows = list(contexts[start : start + batch_size])
    filled = len(rows)
    rows += [rows[0]] * (batch_size - filled)
    out.append(generate_text(model_config, params, rows, num_tokens)[:filled])
  return np.concatenate(out)


def evaluate_vision_language(
  model_config: ModelConfig,
  params: Any,
  examples: Sequence[dict],
  text_tokenizer,
  batch_size: int = 16,
) -> dict:
  """Greedy text after each example's image (and question), scored as the examples ask.

  {"image", "caption"} examples: BLEU-4 and CIDEr-D of the captions, each generated for as many
  tokens as the longest reference. {"image", "question", "answer"} examples: exact-match accuracy
  of answers cut to their reference's length, overall and per "question_type".
  """
  if not examples:
    raise ValueError("evaluate_vision_language needs at least one example")
  vqa = "question" in examples[0]
  truth = [str(ex["answer" if vqa else "caption"]) for ex in examples]
  lengths = [len(text_tokenizer.encode(t)) for t in truth]
  contexts = [
    tokenize_timestep(
      {
        "image": np.asarray(ex["image"]),
        "text": str(ex["question"]) if vqa else np.zeros(0, np.int32),
      },
      None,
      VL_SPEC,
      text_tokenizer,
      separator=False,
    )
    for ex in examples
  ]
  # One generated length for every batch: one compilation per context length.
  num_tokens = max(lengths)
  ids = _generate_in_batches(model_config, params, contexts, num_tokens, batch_size)
  common = {"examples": len(examples), "split": HELD_OUT_SPLIT}
  if not vqa:
    generated = [text_tokenizer.decode(_until_eos(row, text_tokenizer.eos_id)) for row in ids]
    references = [[t] for t in truth]
    return {
      "bleu4": text_metrics.bleu4(references, generated),
      "cider": text_metrics.cider(references, generated),
      "generated_tokens": num_tokens,
      **common,
      "samples": [{"reference": t, "generated": g} for t, g in zip(truth[:NUM_SAMPLES], generated)],
    }
  predictions = [text_tokenizer.decode(row[:n]) for row, n in zip(ids, lengths)]
  by_type: dict[str, list[bool]] = {}
  for ex, predicted, answer in zip(examples, predictions, truth):
    by_type.setdefault(str(ex.get("question_type", "all")), []).append(
      text_metrics.normalize(predicted) == text_metrics.normalize(answer)
    )
  return {
    "vqa_accuracy": text_metrics.exact_match_accuracy(predictions, truth),
    "accuracy_by_type": {k: float(np.mean(v)) for k, v in sorted(by_type.items())},
    **common,
    "samples": [
      {"question": str(ex["question"]), "answer": answer, "predicted": predicted}
      for ex, answer, predicted in zip(examples[:NUM_SAMPLES], truth, predictions)
    ],
  }
