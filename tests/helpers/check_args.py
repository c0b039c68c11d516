"""Checks several command lines of one absl program in one process, as `python SCRIPT ARGS
--only_check_args` would each: run by tests/test_documented_commands.py.

Usage: python check_args.py SCRIPT < JSON list of argument lists (each after SCRIPT)
Prints one JSON line per argument list: {"returncode": ..., "stderr": ...}. The program's imports
are paid once; between runs its flags are forgotten (their values, and the definitions its own
file makes again), so each run parses only its own words. Run from the repository root without
PYTHONPATH, like a user's command: sys.path[0] is the script's folder, as `python SCRIPT` sets it.
"""

import json
import os
import runpy
import sys
import tempfile
import traceback

script, argvs = sys.argv[1], json.load(sys.stdin)
sys.path[0] = os.path.dirname(os.path.abspath(script))
results = os.fdopen(os.dup(1), "w")  # The program's own prints go to stderr with its errors.
os.dup2(2, 1)

from absl import flags  # noqa: E402

# Modules whose flags each run defines anew: the script, and absl's Flag class, which the config
# flags (ml_collections) name as the definer of a `--config.a.b` override's flag.
DEFINED_PER_RUN = (script, "absl.flags._flag")


def check(argv: list[str]) -> int:
  """The exit status of `python SCRIPT ARGV --only_check_args`."""
  sys.argv = [script, *argv, "--only_check_args"]
  try:
    runpy.run_path(script, run_name="__main__")
  except SystemExit as exit_:
    if isinstance(exit_.code, str):  # As the interpreter reports sys.exit("message").
      print(exit_.code, file=sys.stderr)
    return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
  except BaseException:  # noqa: BLE001  (a crash, reported as the interpreter would)
    traceback.print_exc()
    return 1
  return 0


for argv in argvs:
  # Everything written to the process's stderr during the run, by Python or by native code.
  with tempfile.TemporaryFile("w+") as captured:
    saved = os.dup(2)
    os.dup2(captured.fileno(), 2)
    try:
      returncode = check(argv)
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    stderr = captured.read()
  results.write(json.dumps({"returncode": returncode, "stderr": stderr}) + "\n")
  results.flush()
  # The next run defines the script's flags again and parses its words from the defaults: the
  # flags its file defined go, and so do those the config flags made for its overrides.
  for name in list(flags.FLAGS):
    if name in flags.FLAGS and flags.FLAGS.find_module_defining_flag(name) in DEFINED_PER_RUN:
      delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
