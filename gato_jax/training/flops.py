"""Model FLOPs per token and device peaks, for throughput and MFU reporting."""

import jax

from gato_jax.model.config import ModelConfig

# Dense bf16 peak FLOP/s per device, by `device_kind`. CPUs have no entry: MFU is then unknown
# unless the caller supplies a peak.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}


def peak_flops(override_tflops: float | None = None) -> float | None:
  """Peak FLOP/s of all devices together, or None where unknown."""
  if override_tflops:
    return override_tflops * 1e12
  per_device = PEAK_FLOPS.get(jax.devices()[0].device_kind)
  return per_device * jax.device_count() if per_device else None


def train_flops_per_token(cfg: ModelConfig, num_params: int, seq_len: int) -> float:
  """6 N for the weights' forward and backward passes plus causal attention's 6 L T H Dh."""
  return 6.0 * num_params + 6.0 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
