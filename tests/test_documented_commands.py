"""Every `python ...` command in README.md and docs/*.md starts as a user would type it.

Each command runs from the repo root with the venv's python, without PYTHONPATH, plus absl's
`--only_check_args`: the flags (config file, its argument and every `--config.*` override
included) are parsed and the program exits before its main. A missing module, an unknown flag or
a config field that does not exist fails here.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_SPAN = re.compile(r"`(python [^`]+)`")


def documented_commands() -> list[tuple[str, list[str]]]:
  """(page, argv after `python`) of each script command in the pages' code blocks and spans."""
  found = []
  for page in PAGES:
    text = page.read_text()
    snippets = [b.replace("\\\n", " ") for b in _FENCE.findall(text)]
    snippets += _SPAN.findall(re.sub(r"\s*\n\s*", " ", _FENCE.sub("", text)))
    for snippet in snippets:
      line = ""
      for piece in snippet.splitlines():
        line = f"{line} {piece}"
        try:
          found += [(page.name, argv) for argv in _python_commands(line)]
        except ValueError:  # A quotation that goes on over the next line.
          continue
        line = ""
  return found


def _python_commands(line: str) -> list[list[str]]:
  """The `python SCRIPT.py ...` commands of a shell line, those quoted inside others included
  (`ssh host --command="cd repo && python ..."`)."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split, lexer.commenters = True, "#"
  commands, words = [], []
  for word in [*lexer, ";"]:
    if word in ("&&", "||", ";", "|", "&", ";;"):
      if len(words) > 1 and words[0].rsplit("/", 1)[-1] == "python" and words[1].endswith(".py"):
        commands.append(words[1:])
      words = []
      continue
    words.append(word)
    if "python " in word and word != line.strip():
      commands += _python_commands(word.split("=", 1)[-1])
  return commands


def _check(script: str, argvs: list[tuple[str, ...]]) -> list[tuple[int, str]]:
  """(exit status, stderr) of `python SCRIPT ARGS --only_check_args` for each ARGS in `argvs`:
  one process for the script (tests/helpers/check_args.py), from the repo root, without
  PYTHONPATH, as a user types it."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  result = subprocess.run(
    [sys.executable, str(ROOT / "tests" / "helpers" / "check_args.py"), script],
    input=json.dumps([list(argv) for argv in argvs]),
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  runs = [json.loads(line) for line in result.stdout.splitlines()]
  if len(runs) != len(argvs):  # The checker itself failed: every command of the script did.
    return [(result.returncode or 1, result.stderr)] * len(argvs)
  return [(run["returncode"], run["stderr"]) for run in runs]


def test_every_documented_command_starts():
  # One run per script, config and set of flag names: other flag values parse the same way.
  commands = {}
  for page, argv in documented_commands():
    names = {a if a.startswith("--config=") else a.split("=", 1)[0] for a in argv[1:]}
    commands.setdefault((argv[0], *sorted(names)), (page, tuple(argv)))
  commands = {argv: page for page, argv in commands.values()}
  assert len(commands) > 20, "the pages' commands were not found"
  # One process per script checks all its command lines: its imports are most of the cost.
  by_script = {}
  for argv in commands:
    by_script.setdefault(argv[0], []).append(argv[1:])
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    checked = dict(zip(by_script, pool.map(lambda s: _check(s, by_script[s]), by_script)))
  failed = [
    f"{commands[(script, *args)]}: python {shlex.join((script, *args))}\n"
    f"  {stderr.strip().splitlines()[-1:]}"
    for script, argvs in by_script.items()
    for args, (returncode, stderr) in zip(argvs, checked[script])
    if returncode != 0 or "ModuleNotFoundError" in stderr
  ]
  assert not failed, "\n".join(failed)


def test_every_documented_config_builds():
  configs = set()
  for page in PAGES:
    configs.update(
      re.findall(r"experiments/configs/([\w/]+\.py):([a-z0-9][\w.,]*)", page.read_text())
    )
  assert ("gato.py", "small,quickstart") in configs
  for path, arg in sorted(configs):
    # By path, as ml_collections' config_flags loads the entry point a command names.
    entry_point = runpy.run_path(str(ROOT / "experiments" / "configs" / path))
    config = entry_point["get_config"](arg)
    assert config is not None, f"{path}:{arg}"


def test_no_page_points_outside_the_repository():
  for path in [*PAGES, *ROOT.glob("gato_jax/**/*.py"), *ROOT.glob("experiments/**/*.py")]:
    text = path.read_text()
    for needle in ("GATO_SPEC", "STYLE.md", "../shared"):
      assert needle not in text, f"{path.relative_to(ROOT)} cites {needle}"
  for page in PAGES:
    for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
      # docs/aot.md and docs/tpu_pod.md are written by their own change.
      if target.endswith(("aot.md", "tpu_pod.md")):
        continue
      assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
