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
"""

import fcntl
import os
import socket
import threading

from absl import logging

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


_held: dict[str, tuple[int, int]] = {}  # Real lock path -> (file descriptor, hold count).
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
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    self.wait = wait
    name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.{process_index}"
    self.path = os.path.join(self.workdir, name)
    self._key: str | None = None

  def acquire(self) -> "WorkdirLock":
    if self._key is not None:
      return self
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

  def release(self) -> None:
    if self._key is None:
      return
    with _guard:
      fd, count = _held[self._key]
      if count > 1:
        _held[self._key] = (fd, count - 1)
      else:
        del _held[self._key]
        os.close(fd)  # Closing drops the flock; the file stays (removing it would race).
    self._key = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
