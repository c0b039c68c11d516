"""A launched run's output: progress and tables on the console, every library's log in a file.

orbax logs its options and every save step, TFDS its builder's internals, both through absl at
INFO. `log_to_file` keeps all of it, at the run's verbosity, in absl's log file under the
workdir, and lets onto the console only this project's log lines (but those logged with
`extra={"console": False}`) and anyone's errors.
"""

import logging as std_logging
import os
import sys

from absl import logging

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
  log_dir = os.path.join(os.path.expanduser(workdir), "logs")
  os.makedirs(log_dir, exist_ok=True)
  logging.get_absl_handler().use_absl_log_file(program, log_dir)
  console = std_logging.StreamHandler(sys.stderr)
  console.setFormatter(logging.PythonFormatter())
  launcher_dir = os.path.dirname(os.path.abspath(sys.argv[0]))
  console.addFilter(_OursOrErrors((_PACKAGE_DIR, launcher_dir)))
  std_logging.getLogger().addHandler(console)
  std_logging.captureWarnings(True)
  return log_dir
