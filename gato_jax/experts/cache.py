"""The on-disk cache of trained experts: parameters and metadata, written atomically."""

import importlib.metadata
import os
from typing import Any

from flax import serialization
import jax

from gato_jax import files

PARAMS_FILE = "params.msgpack"
META_FILE = "expert.json"


def write_expert(directory: str, params: Any, meta: dict) -> str:
  """Writes params and metadata (temp files, then rename: never half a file); returns directory."""
  files.write_bytes(os.path.join(directory, PARAMS_FILE),
                    serialization.to_bytes(jax.device_get(params)))
  files.write_json(os.path.join(directory, META_FILE), meta)
  return directory


def package_versions(*packages: str) -> dict[str, str]:
  """Installed versions, recorded with an expert so a stale cache can be told apart."""
  return {p: importlib.metadata.version(p) for p in packages}
