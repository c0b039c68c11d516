"""What every absl launcher shares: `run(main)` in place of `app.run(main)`.

A launcher's user needs the cause of a failure in the last line, not at the end of a chain of
tracebacks. `run` parses the flags, naming a misspelled config field the way it was typed
(`unknown config field train.stepz; did you mean train.steps?`), and reports the errors a user
can fix (a busy workdir, an unusable checkpoint, a full disk, a bad config or missing data) as
one line and exit status 1. A run stopped by a preemption notice (SIGTERM), after saving its
checkpoint, ends with one line and exit status `preemption.PREEMPTED_EXIT_CODE` (42): rerun the
same command to resume. Any other exception keeps its traceback: it is a bug to report.
"""

import functools
import os
import re
import sys
from typing import Callable, Sequence

from absl import app, flags, logging

from gato_jax import checkpoint, console, workdir_lock
from gato_jax.training import preemption

# What a user can fix from the message alone; each carries its cause in its text.
USER_ERRORS = (workdir_lock.WorkdirLockedError, checkpoint.CheckpointError, OSError, ValueError)

_DID_YOU_MEAN = re.compile(r"'(?P<key>[^'\\]+)'.*Did you mean \"(?P<suggestion>[^\"]+)\"", re.S)


def config_override_error(argv: Sequence[str], error: Exception) -> str | None:
  """The one-line message for an override of a config field that does not exist, else None.

  ml_collections reports only the unknown key ("'stepz' Did you mean "steps"?"); the override
  in `argv` that names it gives the full path.
  """
  text = str(error.args[0]) if error.args else str(error)
  text = text.replace("\\n", "\n").replace("\\'", "'")
  match = _DID_YOU_MEAN.search(text)
  key = match["key"] if match else text.strip("'\" \n")
  for arg in argv[1:]:
    flag = arg.lstrip("-").split("=", 1)[0]
    if not arg.startswith("-") or "." not in flag:
      continue
    name, *path = flag.split(".")
    if key in path:
      field = ".".join(path)
      message = f"unknown config field {field} (in --{flag})"
      if match:
        fixed = ".".join(match["suggestion"] if part == key else part for part in path)
        message = f"unknown config field {field}; did you mean {fixed}? (in --{flag})"
      return message
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a misspelled `--config.a.b` override reported in one line."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # How ml_collections refuses an unknown field.
    message = config_override_error(argv, e)
    if message is None:
      raise
    sys.exit(f"error: {message}")


def argv_without(argv: Sequence[str], names: Sequence[str]) -> list[str]:
  """`argv` less the flags `names` (`--NAME=V`, `--NAME V`, and a boolean's `--NAME` or
  `--noNAME`): what a launcher passes on to the command it prints or starts."""
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    base = name[2:] if name.startswith("no") and name[2:] in names else name
    if not arg.startswith("-") or base not in names:
      kept.append(arg)
      continue
    boolean = base in flags.FLAGS and flags.FLAGS[base].boolean
    skip = "=" not in arg and not boolean  # "--workdir DIR" spends the next argument too.
  return kept


def _report_user_errors(main: Callable[[list[str]], None], argv: list[str]) -> None:
  try:
    main(argv)
  except preemption.Preempted as e:
    logging.flush()
    sys.stdout.flush()
    print(str(e), file=sys.stderr, flush=True)
    import jax  # pylint: disable=g-import-not-at-top

    if jax.distributed.is_initialized():
      # Leave the job together: a host that vanished first would look failed to the others.
      jax.distributed.shutdown()
    console.upload_logs()  # os._exit runs no atexit hook.
    os._exit(preemption.PREEMPTED_EXIT_CODE)  # pylint: disable=protected-access
  except USER_ERRORS as e:
    logging.debug("the error's traceback:", exc_info=True)  # Shown with --verbosity=1.
    logging.flush()
    sys.stdout.flush()
    console.upload_logs()  # os._exit runs no atexit hook; first, so the error stays last.
    print(f"error: {e}", file=sys.stderr, flush=True)
    # Not sys.exit: at interpreter shutdown orbax's and asyncio's leftovers of a failed save print
    # their own tracebacks ("Event loop is closed"), which would bury this line again.
    os._exit(1)  # pylint: disable=protected-access


# Compiled programs outlive the process: a resumed run, or the evaluation after training, loads
# its train steps and decoders from here instead of compiling them again (about a minute each on
# two cores, once per logits and patch budget). Unbounded (a size limit needs the filelock
# package); a small model's train step is a few MB.
COMPILATION_CACHE = "~/.cache/gato_jax/jax_compilation_cache"


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache in COMPILATION_CACHE, unless JAX_COMPILATION_CACHE_DIR
  (or jax.config) already names one."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(COMPILATION_CACHE))


def _launched(
  main: Callable[[list[str]], None], logs_in_workdir: Callable[[], bool], argv: list[str]
) -> None:
  workdir = flags.FLAGS["workdir"].value if "workdir" in flags.FLAGS else None
  if workdir and logs_in_workdir():
    program = os.path.splitext(os.path.basename(argv[0]))[0]
    log_dir = console.log_to_file(workdir, program)
    # On stderr: stdout may be a product (sweep.py --dispatch=print's commands).
    print(f"full logs in {log_dir}", file=sys.stderr, flush=True)
  try:
    _report_user_errors(main, argv)
  finally:  # Before the interpreter's shutdown, which stops gcsfs's event loop.
    console.upload_logs()


def run(
  main: Callable[[list[str]], None], logs_in_workdir: Callable[[], bool] = lambda: True
) -> None:
  """`app.run(main)` with flag typos and user errors reported as one final line, JAX's
  persistent compilation cache on (`enable_compilation_cache`), and, for a launcher with a
  --workdir (a local path or gs://...), library logs in `<workdir>/logs/<launcher>.INFO` rather
  than on the console (`console.log_to_file`).

  Args:
    main: the launcher's main(argv).
    logs_in_workdir: called once the flags are parsed; False where --workdir names a run folder
      this process does not write (a launcher that prints or starts the commands that do).
  """
  enable_compilation_cache()
  app.run(functools.partial(_launched, main, logs_in_workdir), flags_parser=parse_flags)
