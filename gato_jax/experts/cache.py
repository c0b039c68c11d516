"""The on-disk cache of trained experts: parameters and metadata, written atomically."""

import importlib.metadata
import json
import os
from typing import Any

from flax import serialization
import jax

PARAMS_FILE = "params.msgpack"
META_FILE = "expert.json"


def write_expert(directory: str, params: Any, meta: dict) -> str:
  """Writes params and metadata (temp files, then rename: never half a file); returns directory."""
  os.makedirs(directory, exist_ok=True)
  for name, payload in ((PARAMS_FILE, serialization.to_bytes(jax.device_get(params))),
                        (META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())):
    tmp = os.path.join(directory, name + ".tmp")
    with open(tmp, "wb") as f:
      f.write(payload)
    os.replace(tmp, os.path.join(directory, name))
  return directory


def package_versions(*packages: str) -> dict[str, str]:
  """Installed versions, recorded with an expert so a stale cache can be told apart."""
  return {p: importlib.metadata.version(p) for p in packages}
