"""The path layer: every file the library reads or writes, on a local disk or a bucket (gs://).

A path is a string: a local path (`~` expanded, made absolute by `resolve`) or a URI such as
`gs://bucket/run`, which is left as it is. Local paths go through `os`; URIs through
`etils.epath`, which orbax and TFDS use too, set up here to reach Google Cloud Storage through
gcsfs rather than TensorFlow (`EPATH_USE_TF=false`, unless the environment says otherwise):
TensorFlow's GCS client ignores the emulator variables tests use, and orbax saves through gcsfs
in a fraction of the time. gcsfs and google-cloud-storage honour `STORAGE_EMULATOR_HOST`.

Writes are atomic: a reader, or a run resumed after a kill, never sees half a file. Locally a
file is written beside its target and renamed over it; on a bucket a single object upload is
atomic already, so the object is written directly. Appending to an object rewrites it whole
(objects cannot grow), which suits the small logs appended to (metrics, TensorBoard scalars).
"""

import json
import logging
import os
import pickle
import shutil
from typing import Any, Iterator

# etils.epath reads this once, at its first gs:// path; orbax's paths go through it as well.
os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs's probe for zonal buckets calls the Storage Control API, which fails (and warns on every
# path) wherever it is not enabled, the emulator included; plain buckets need no probe.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def is_remote(path: Any) -> bool:
  """Whether `path` is a URI (gs://bucket/...) rather than a local path."""
  return "://" in os.fspath(path)


def resolve(path: Any) -> str:
  """`path` as the library stores it: local paths absolute with `~` expanded, URIs unchanged
  (but a trailing slash)."""
  path = os.fspath(path)
  if is_remote(path):
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{rest.rstrip('/')}"
  return os.path.abspath(os.path.expanduser(path))


def join(path: Any, *parts: str) -> str:
  """`os.path.join` for local paths and URIs alike."""
  path = os.fspath(path)
  if is_remote(path):
    return "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])
  return os.path.join(path, *parts)


def epath(path: Any):
  """`path` as an `etils.epath.Path` (imported here: the package import stays light)."""
  from etils import epath as epath_lib  # pylint: disable=g-import-not-at-top

  # gcsfs logs each failed request's traceback before raising; the error this module raises
  # carries the cause in one line, so those tracebacks would only bury it on the console.
  logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
  return epath_lib.Path(resolve(path))


def exists(path: Any) -> bool:
  return epath(path).exists() if is_remote(path) else os.path.exists(os.path.expanduser(path))


def isdir(path: Any) -> bool:
  return epath(path).is_dir() if is_remote(path) else os.path.isdir(os.path.expanduser(path))


def makedirs(path: Any) -> str:
  """Creates folder `path` and its parents if missing (on a bucket folders need no object: a
  no-op); returns `resolve(path)`."""
  path = resolve(path)
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)
  return path


def listdir(path: Any) -> list[str]:
  """The names in folder `path`, sorted; [] when it does not exist."""
  if is_remote(path):
    folder = epath(path)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
  path = os.path.expanduser(path)
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def open_file(path: Any, mode: str = "r"):
  """`open(path, mode)` on a local path or a URI (a bucket object is uploaded when closed)."""
  if is_remote(path):
    return epath(path).open(mode)
  return open(os.path.expanduser(path), mode)  # pylint: disable=unspecified-encoding


def read_bytes(path: Any) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: Any) -> str:
  return read_bytes(path).decode()


def read_json(path: Any) -> Any:
  return json.loads(read_bytes(path))


def remove(path: Any) -> None:
  """Removes file or folder `path` with everything in it; nothing if it does not exist."""
  if is_remote(path):
    target = epath(path)
    if target.is_dir():
      target.rmtree()
    elif target.exists():
      target.unlink()
    return
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    shutil.rmtree(path)
  elif os.path.exists(path):
    os.remove(path)


def move(source: Any, destination: Any) -> str:
  """Moves file or folder `source` to `destination` (whose parent is created); returns it.

  Locally a rename (atomic). A bucket has no folders to rename: each object is copied, then the
  source removed, so a kill in between leaves both copies, never neither.
  """
  source, destination = resolve(source), resolve(destination)
  if is_remote(source) or is_remote(destination):
    if is_remote(source) != is_remote(destination):
      raise ValueError(f"cannot move {source} to {destination}: one is local, one a bucket")
    for path in walk_files(source):
      epath(path).copy(epath(destination + path[len(source) :]), overwrite=True)
    remove(source)
    return destination
  os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
  os.replace(os.path.expanduser(source), destination)
  return destination


def walk_files(path: Any) -> Iterator[str]:
  """The files under folder `path`, recursively, as paths."""
  if is_remote(path):
    path = resolve(path)
    scheme = path.split("://", 1)[0]
    import fsspec  # pylint: disable=g-import-not-at-top

    # fsspec lists a whole prefix in one request; etils.epath refuses recursive globs.
    for name in fsspec.filesystem(scheme).find(path):
      yield f"{scheme}://{name}"
    return
  for folder, _, names in os.walk(os.path.expanduser(path)):
    for name in names:
      yield os.path.join(folder, name)


def write_bytes(path: Any, payload: bytes) -> str:
  """Writes `payload` to `path` atomically (see the module docstring); returns `path`."""
  path = os.fspath(path)
  if is_remote(path):
    try:
      epath(path).write_bytes(payload)  # One object upload: all of it or nothing.
    except Exception as e:  # gcsfs raises HttpError, OSError and more for one failed upload.
      raise OSError(f"could not write {path}: {_first_line(e)}") from e
    return path
  # `~` expanded as every read does: else "~/run" (a flag the shell left alone) is written to a
  # folder named "~" under the working directory, where no reader looks.
  path = os.path.expanduser(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(f"{path}.tmp", "wb") as f:
    f.write(payload)
  os.replace(f"{path}.tmp", path)  # Atomic on POSIX: the old file or the new, never a mix.
  return path


def append_bytes(path: Any, data: bytes) -> None:
  """Appends `data` to file `path` whole, or on an error leaves it as it was and raises an
  OSError naming it (half a record would join the next one into an unreadable line)."""
  path = os.fspath(path)
  if is_remote(path):
    target = epath(path)
    try:
      before = target.read_bytes() if target.exists() else b""
      target.write_bytes(before + data)
    except Exception as e:  # gcsfs raises HttpError, OSError and more for one failed upload.
      raise OSError(f"could not append to {path}: {_first_line(e)}") from e
    return
  path = os.path.expanduser(path)
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    try:
      written = 0
      while written < len(data):
        written += os.write(fd, data[written:])
    except OSError as e:
      try:
        os.ftruncate(fd, size)
      except OSError:
        pass  # A reader skips the torn line; the write's own error is what to report.
      raise OSError(e.errno, f"could not append to {path}: {e.strerror}", path) from None
  finally:
    os.close(fd)


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def write_json(path: Any, value: Any) -> str:
  """`write_bytes` of `value` as indented JSON with sorted keys (stable, diffable files); numpy
  scalars and arrays are written as their Python values."""
  payload = json.dumps(value, indent=2, sort_keys=True, default=_builtin)
  return write_bytes(path, payload.encode())


def _builtin(value: Any) -> Any:
  if hasattr(value, "tolist"):  # numpy scalars and arrays
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_pickle(path: Any, value: Any) -> str:
  return write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def local_only(path: Any, what: str, fix: str) -> str:
  """`resolve(path)`, or a ValueError naming `what` cannot live on a bucket and `fix`."""
  if is_remote(path):
    raise ValueError(f"{what} must be on a local disk, not {path}; {fix}")
  return resolve(path)
