"""Cached decoding for acting: prefill, masked token-by-token action decoding."""

from gato_jax.inference.decode import CachedDecoder, decode_action, init_cache, prefill
