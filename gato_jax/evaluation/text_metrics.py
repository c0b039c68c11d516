"""Scores of generated text: BLEU-4 and CIDEr-D for captions, exact-match VQA accuracy, perplexity.

BLEU-4 and CIDEr-D are the COCO caption evaluation's own scorers (`pycocoevalcap`, pure Python),
so the numbers are comparable with published captioning results. COCO tokenizes with a Java PTB
tokenizer first; `normalize` stands in for it in Python: lower case, the same punctuation
removed, whitespace split (the scorers split on whitespace). CIDEr-D weighs n-grams by their
document frequency over the evaluated references, so it is a property of the whole evaluation set,
not an average of per-image numbers computed alone.
"""

import math
import re
from typing import Sequence

# The punctuation COCO's PTBTokenizer drops, as characters.
_PUNCTUATION = re.compile(r"[\"'`.?!,:;\-()\[\]{}]")


def normalize(text: str) -> str:
  """Lower case, COCO's punctuation removed, single spaces."""
  if not isinstance(text, str):
    raise TypeError(f"text must be a string, got {type(text).__name__}")
  return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def _coco_inputs(references: Sequence[Sequence[str]], hypotheses: Sequence[str]):
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference sets")
  if not hypotheses:
    raise ValueError("caption scores need at least one hypothesis")
  if any(isinstance(refs, str) or not refs for refs in references):
    raise ValueError("each hypothesis needs a non-empty list of reference strings")
  gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
  res = {i: [normalize(h)] for i, h in enumerate(hypotheses)}
  return gts, res


def bleu4(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
  """Corpus BLEU-4 (COCO's: n-gram counts summed over the corpus, closest-length brevity)."""
  from pycocoevalcap.bleu.bleu import Bleu

  gts, res = _coco_inputs(references, hypotheses)
  scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
  return float(scores[3])


def cider(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
  """CIDEr-D (COCO's: 1-4-grams, tf-idf over the references, clipped, length penalty, x10)."""
  from pycocoevalcap.cider.cider import Cider

  gts, res = _coco_inputs(references, hypotheses)
  score, _ = Cider().compute_score(gts, res)
  return float(score)


def exact_match_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
  """The fraction of predictions equal to their answer after `normalize`."""
  if len(predictions) != len(answers):
    raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
  if not answers:
    raise ValueError("accuracy of no answers")
  return sum(normalize(p) == normalize(a) for p, a in zip(predictions, answers)) / len(answers)


def perplexity(total_nll: float, num_tokens: int) -> float:
  """exp(mean negative log-likelihood per token) of `num_tokens` tokens summing to `total_nll`."""
  if num_tokens < 1:
    raise ValueError("perplexity of no tokens")
  return math.exp(total_nll / num_tokens)
