"""Runs the repo's programs as a user does: a new Python process from the repo root, with the repo
importable (tests import this as `helpers.scripts`; pytest puts tests/ on the path)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]


def run_python(
  *args: str,
  env: dict[str, str] | None = None,
  drop: tuple[str, ...] = (),
  check: bool = True,
  timeout: float | None = 900,
) -> subprocess.CompletedProcess:
  """`python ARGS` (a script and its flags, or "-c", code) with stdout and stderr captured as text.

  Args:
    env: variables set on top of this process's environment and PYTHONPATH=ROOT (a PYTHONPATH
      here replaces it: include ROOT).
    drop: variables removed from the environment.
    check: raise CalledProcessError on a non-zero exit; with False the caller reads returncode.
  """
  environment = {k: v for k, v in os.environ.items() if k not in drop}
  environment.update({"PYTHONPATH": str(ROOT), **(env or {})})
  return subprocess.run(
    [sys.executable, *map(str, args)],
    cwd=ROOT,
    env=environment,
    capture_output=True,
    text=True,
    check=check,
    timeout=timeout,
  )
