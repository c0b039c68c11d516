"""One process per workdir: an exclusive lock held for the life of a training or sweep process.

Two trainers writing one workdir silently mix their checkpoints and metrics, so the second one
must refuse at once. The lock is an `fcntl.flock` on `workdir/.lock`: the kernel releases it
when its holder exits by any means, `kill -9` included, so a dead holder never blocks a resume
and nothing has to judge whether a recorded pid is still alive. The file also records the
holder's pid and host, which the refusal names.

Writers of a shared cache (an expert, a generated dataset) take the same lock with `wait=True`:
a second process waits for the first and then finds its result, instead of training or
generating the same thing beside it.

Within one process the lock is reentrant: a sweep that holds a run's directory may call the
trainer on it. The processes of one multi-host job share a workdir, so each takes the lock of
its own process index: a second job still collides with the first on every process.

On a bucket (`gs://...`) there is no flock. The lock is the object `workdir/.lock`, created only
if absent (a generation-match precondition, so of two creators exactly one succeeds), naming its
holder's pid, host and time, and deleted on release. Its holder rewrites it every HEARTBEAT_S
seconds; a lock not rewritten for STALE_S seconds belongs to a holder that died without
releasing it (`kill -9`, a lost VM) and is taken over. Only process 0 of a multi-host job takes
it: the hosts of one pod are one holder.
"""

import datetime
import fcntl
import os
import socket
import threading
import time

from absl import logging

from gato_jax import files

LOCK_FILE = ".lock"
HEARTBEAT_S = 60.0  # How often the holder of a bucket lock rewrites it.
STALE_S = 300.0  # A bucket lock not rewritten for this long is taken over.


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


# Lock path -> (file descriptor, or the bucket lock object, and the hold count).
_held: dict[str, tuple] = {}
_guard = threading.Lock()


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or "an unknown process"
  except OSError:
    return "an unknown process"


class WorkdirLock:
  """Holds `workdir/.lock`; use as a context manager or call `acquire`/`release`.

  Args:
    workdir: the directory to hold (created if missing).
    process_index: this process's index in a multi-host job (`.lock.N` for N > 0).
    wait: block until the holder lets go (logging who it waits for) instead of refusing.

  Raises:
    WorkdirLockedError: from `acquire` when another process holds the lock (and not `wait`).
  """

  def __init__(self, workdir: str, process_index: int = 0, wait: bool = False):
    self.workdir = files.resolve(workdir)
    self.wait = wait
    self.remote = files.is_remote(self.workdir)
    # On a bucket the pod's process 0 holds the lock for all of its hosts.
    self.holds = not self.remote or process_index == 0
    name = LOCK_FILE if process_index == 0 or self.remote else f"{LOCK_FILE}.{process_index}"
    self.path = files.join(self.workdir, name)
    self._key: str | None = None

  def acquire(self) -> "WorkdirLock":
    if self._key is not None or not self.holds:
      return self
    if self.remote:
      return self._acquire_object()
    os.makedirs(self.workdir, exist_ok=True)
    key = os.path.realpath(self.path)
    with _guard:
      if key in _held:
        fd, count = _held[key]
        _held[key] = (fd, count + 1)
        self._key = key
        return self
      fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        if self.wait:
          logging.info("waiting for %s to finish with %s", _holder(key), self.workdir)
          fcntl.flock(fd, fcntl.LOCK_EX)
        else:
          os.close(fd)
          raise WorkdirLockedError(
            f"workdir {self.workdir} is in use by {_holder(key)}; wait for it to finish or"
            " use another --workdir"
          ) from None
      # Written only once locked; a reader may briefly see an empty file, never a mixed one.
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
      _held[key] = (fd, 1)
      self._key = key
    return self

  def _acquire_object(self) -> "WorkdirLock":
    with _guard:
      if self.path in _held:
        holder, count = _held[self.path]
        _held[self.path] = (holder, count + 1)
        self._key = self.path
        return self
      holder = _ObjectLock(self.path)
      while not holder.try_acquire():
        if not self.wait:
          raise WorkdirLockedError(
            f"workdir {self.workdir} is in use by {holder.holder}; wait for it to finish or use"
            f" another --workdir (a lock its holder stopped refreshing is taken over after"
            f" {STALE_S:.0f} s: delete {self.path} sooner only if that holder is dead)"
          )
        logging.info("waiting for %s to finish with %s", holder.holder, self.workdir)
        time.sleep(min(HEARTBEAT_S, 5.0))
      _held[self.path] = (holder, 1)
      self._key = self.path
    return self

  def release(self) -> None:
    if self._key is None:
      return
    with _guard:
      held, count = _held[self._key]
      if count > 1:
        _held[self._key] = (held, count - 1)
      else:
        del _held[self._key]
        if isinstance(held, _ObjectLock):
          held.release()
        else:
          os.close(held)  # Closing drops the flock; the file stays (removing it would race).
    self._key = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


class _ObjectLock:
  """The lock object `gs://bucket/.../.lock` of a bucket workdir (see the module docstring)."""

  def __init__(self, uri: str):
    from google.cloud import storage  # pylint: disable=g-import-not-at-top

    bucket, name = uri.split("://", 1)[1].split("/", 1)
    self.blob = storage.Client().bucket(bucket).blob(name)
    self.holder = "an unknown process"
    self._generation: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _text(self) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()} (refreshed {now})\n"

  def try_acquire(self) -> bool:
    """Creates the object if absent (or takes a stale one over); False if another holds it."""
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top

    try:
      self.blob.upload_from_string(self._text(), if_generation_match=0)
    except (exceptions.NotFound, exceptions.Forbidden, exceptions.Unauthorized) as e:
      uri = f"gs://{self.blob.bucket.name}/{self.blob.name}"
      cause = "no such bucket" if isinstance(e, exceptions.NotFound) else "permission denied"
      raise OSError(f"cannot write {uri}: {cause} (HTTP {e.code})") from None
    except exceptions.PreconditionFailed:
      try:
        self.blob.reload()
        text = self.blob.download_as_text(if_generation_match=self.blob.generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        return self.try_acquire() if self.blob.generation is None else False  # Changed meanwhile.
      self.holder = text.strip().split(" (refreshed")[0] or self.holder
      age = (datetime.datetime.now(datetime.timezone.utc) - self.blob.updated).total_seconds()
      if age < STALE_S:
        return False
      logging.warning(
        "taking over %s: %s has not refreshed it for %.0f s", self.blob.name, text, age
      )
      try:
        self.blob.delete(if_generation_match=self.blob.generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        return False  # Another process took it over first.
      return self.try_acquire()
    self._generation = self.blob.generation
    self._thread = threading.Thread(target=self._refresh, name="workdir-lock", daemon=True)
    self._thread.start()
    return True

  def _refresh(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self.blob.upload_from_string(self._text(), if_generation_match=self._generation)
        self._generation = self.blob.generation
      except Exception as e:  # pylint: disable=broad-except
        logging.error("could not refresh the workdir lock %s: %s", self.blob.name, e)

  def release(self) -> None:
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top

    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      self.blob.delete(if_generation_match=self._generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      logging.warning("workdir lock %s was taken over before its release", self.blob.name)
    except Exception as e:  # pylint: disable=broad-except
      logging.error("could not release the workdir lock %s: %s", self.blob.name, e)
