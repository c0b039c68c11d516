"""The one atomic file writer: a reader, or a run resumed after a kill, never sees half a file."""

import json
import os
import pickle
from typing import Any


def write_bytes(path: str, payload: bytes) -> str:
  """Writes `payload` to a temporary file beside `path`, then renames it; returns `path`."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(f"{path}.tmp", "wb") as f:
    f.write(payload)
  os.replace(f"{path}.tmp", path)  # Atomic on POSIX: the old file or the new, never a mix.
  return path


def write_json(path: str, value: Any) -> str:
  """`write_bytes` of `value` as indented JSON with sorted keys (stable, diffable files); numpy
  scalars and arrays are written as their Python values."""
  payload = json.dumps(value, indent=2, sort_keys=True, default=_builtin)
  return write_bytes(path, payload.encode())


def _builtin(value: Any) -> Any:
  if hasattr(value, "tolist"):  # numpy scalars and arrays
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_pickle(path: str, value: Any) -> str:
  return write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
