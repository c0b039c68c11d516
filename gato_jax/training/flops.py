"""Model FLOPs per token and device peaks, for throughput and MFU reporting."""

import jax

from gato_jax.model.config import ModelConfig
from gato_jax.tokenizer.constants import padded_vocab_size

# Dense bf16 peak FLOP/s per device, by `device_kind`. CPUs have no entry: MFU is then unknown
# unless the caller supplies a peak. libtpu names v5e "TPU v5 lite", v5p "TPU v5", v6e "TPU v6 lite".
PEAK_FLOPS = {
  "NVIDIA H100 80GB HBM3": 989e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100-SXM4-80GB": 312e12,
  "NVIDIA A100-SXM4-40GB": 312e12,
  "TPU v4": 275e12,
  "TPU v5e": 197e12,
  "TPU v5 lite": 197e12,
  "TPU v5p": 459e12,
  "TPU v5": 459e12,
  "TPU v6 lite": 918e12,
}

# TPU chips' HBM (bytes) and its bandwidth (bytes/s), from Google Cloud's TPU pages; the
# ahead-of-time compiler (tools/aot_compile.py) reports memory against them.
TPU_HBM_BYTES = {
  "TPU v4": 32 * 2**30,
  "TPU v5 lite": 16 * 2**30,
  "TPU v5": 95 * 2**30,
  "TPU v6 lite": 32 * 2**30,
}
# The part of it a program may use, as libtpu 0.0.42.1's compiler reports it ("exceeds available
# HBM") when an oversized program is compiled for each chip: the runtime keeps the rest. The
# compiler itself checks only temporaries against it, so tools/aot_compile.py checks the total.
TPU_HBM_USABLE_BYTES = {
  "TPU v4": 30.75 * 2**30,
  "TPU v5 lite": 15.75 * 2**30,
  "TPU v5": 95.74 * 2**30,
  "TPU v6 lite": 31.25 * 2**30,
}
TPU_HBM_BANDWIDTH = {
  "TPU v4": 1.2e12,
  "TPU v5 lite": 8.19e11,
  "TPU v5": 2.765e12,
  "TPU v6 lite": 1.64e12,
}
# Bytes/s one chip sends (while it receives as much) over its inter-chip interconnect (ICI), by
# `device_kind`: half the "bidirectional ICI bandwidth per chip" of the Cloud TPU
# system-architecture pages (v5e 400 GB/s, v5p 1,200 GB/s, v6e 800 GB/s). The v4 page gives no
# per-chip figure, so v4 takes its "all-reduce bandwidth per Pod" over the Pod's chips
# (1.1 PB/s / 4,096), the ratio that also gives v5e's (51.2 TB/s / 256) and v6e's figures.
TPU_ICI_BANDWIDTH = {
  "TPU v4": 1.1e15 / 4096,
  "TPU v5 lite": 2.0e11,
  "TPU v5": 6.0e11,
  "TPU v6 lite": 4.0e11,
}


def peak_flops(override_tflops: float | None = None) -> float | None:
  """Peak FLOP/s of all devices together, or None where unknown."""
  if override_tflops:
    return override_tflops * 1e12
  per_device = PEAK_FLOPS.get(jax.devices()[0].device_kind)
  return per_device * jax.device_count() if per_device else None


def train_flops_per_token(
  cfg: ModelConfig, num_params: int, seq_len: int, logits_per_row: float | None = None
) -> float:
  """6 N for the weights' forward and backward passes plus causal attention's 6 L T H Dh.

  N is the exact parameter count, so the feed-forward counts as built: for geglu the up-
  projection's value and gate halves (E x F) and the down-projection (F/2 x E). The token table
  counts once, as the output projection at every position; `logits_per_row` (logits at targets
  only, K of the T positions) takes off the (T - K) / T share of it that is not computed. The
  patch ResNet's convolutions are not counted.
  """
  flops = 6.0 * num_params + 6.0 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
  if logits_per_row is not None:
    vocab = padded_vocab_size(cfg.vocab_multiple)
    flops -= 6.0 * vocab * cfg.width * (seq_len - logits_per_row) / seq_len
  return flops
