"""A launched run's output: progress and tables on the console, every library's log in a file.

orbax logs its options and every save step, TFDS its builder's internals, both through absl at
INFO. `log_to_file` keeps all of it, at the run's verbosity, in absl's log file under the
workdir, and lets onto the console only this project's log lines (but those logged with
`extra={"console": False}`) and anyone's errors.

absl writes its log file with local file calls: for a workdir on a bucket the file is written in
a local folder and copied to `<workdir>/logs/` every LOG_UPLOAD_S seconds and when the launcher
ends (`upload_logs`, which `launch.run` calls).
"""

import logging as std_logging
import math
import os
import sys
import tempfile
import threading
import time

from absl import logging

from gato_jax import files

LOG_UPLOAD_S = 60.0
_uploads: list[tuple[str, str]] = []  # (local log folder, its bucket folder).

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _OursOrErrors(std_logging.Filter):
  def __init__(self, roots: tuple[str, ...]):
    super().__init__()
    self.roots = roots

  def filter(self, record: std_logging.LogRecord) -> bool:
    ours = os.path.abspath(record.pathname).startswith(self.roots)
    return (ours and getattr(record, "console", True)) or record.levelno >= std_logging.ERROR


def log_to_file(workdir: str, program: str) -> str:
  """Sends every log line to `<workdir>/logs/<program>.INFO`; returns that folder.

  Call it in a launcher's main (after absl parsed its flags). Warnings of the `warnings`
  module go to the file as well.
  """
  log_dir = files.join(files.resolve(workdir), "logs")
  local_dir = log_dir
  if files.is_remote(log_dir):
    local_dir = tempfile.mkdtemp(prefix=f"gato_jax_{program}_logs_")
    if not _uploads:
      threading.Thread(target=_upload_periodically, name="log-upload", daemon=True).start()
    _uploads.append((local_dir, log_dir))
  os.makedirs(local_dir, exist_ok=True)
  logging.get_absl_handler().use_absl_log_file(program, local_dir)
  console = std_logging.StreamHandler(sys.stderr)
  console.setFormatter(logging.PythonFormatter())
  launcher_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
  console.addFilter(_OursOrErrors((_PACKAGE_DIR, launcher_dir)))
  std_logging.getLogger().addHandler(console)
  std_logging.captureWarnings(True)
  return log_dir


def upload_logs() -> None:
  """Copies the log files of a bucket workdir (see the module docstring) to the bucket."""
  logging.flush()
  for local_dir, log_dir in _uploads:
    try:
      for name in os.listdir(local_dir):
        path = os.path.join(local_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):  # absl's links: the same files.
          with open(path, "rb") as f:
            files.write_bytes(files.join(log_dir, name), f.read())
    except OSError:
      print(f"could not copy the logs in {local_dir} to {log_dir}", file=sys.stderr, flush=True)


def _upload_periodically() -> None:
  while True:
    time.sleep(LOG_UPLOAD_S)
    upload_logs()


def duration(seconds: float) -> str:
  """1h02m03s; "?" for an unknown (non-finite) time."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class Pace:
  """A long loop's ETA, extrapolated from its own pace since this process first reported.

  Work a killed run finished before this process started is not counted as done here, so a
  resumed run's ETA is its own. `due` says whether a console line is due (at most one per
  `every_s` seconds, and the last one), so a fast loop does not flood the console.
  """

  def __init__(self, total: int, every_s: float = 60.0):
    self.total = total
    self.every_s = every_s
    self._start: tuple[int, float] | None = None
    self._last_report = -math.inf

  def eta(self, done: int) -> float:
    """Seconds left for `total` once `done` units are done (NaN before any progress)."""
    now = time.time()
    if self._start is None:
      self._start = (done, now)
    first, start = self._start
    rate = (done - first) / (now - start) if now > start else 0.0
    return (self.total - done) / rate if rate > 0 else float("nan")

  def due(self, done: int) -> bool:
    now = time.time()
    if done < self.total and now - self._last_report < self.every_s:
      return False
    self._last_report = now
    return True

  def line(self, done: int) -> str:
    """Progress text: done of total and the ETA, e.g. "400/1,000, eta 0h12m00s"."""
    return f"{done:,}/{self.total:,}, eta {duration(self.eta(done))}"
