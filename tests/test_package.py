"""Package-level promises: light imports, TensorFlow kept off accelerators, the demo runs, the
launchers' logs and compiled programs kept, the path layer writing where it reads."""

import os

import pytest

from gato_jax import files

from helpers.scripts import run_python


HEAVY = "('tensorflow', 'seqio', 'dm_control', 'mujoco', 'gymnax', 'tensorflow_datasets')"


@pytest.fixture(scope="module")
def fresh_process() -> list[str]:
  """One new Python process for the three import checks (a process's start costs more than
  they do), in the order that keeps each honest: the light imports and their check first, then
  the presets and theirs (with more imported, a clean list still holds for each alone), and
  TensorFlow last."""
  code = (
    "import sys, gato_jax, gato_jax.tokenizer as T\n"
    "T.tokenize_timestep({'x': 0.5}, None, {'x': T.ContinuousSpec()})\n"
    f"print(sorted(m for m in {HEAVY} if m in sys.modules))\n"
    "from gato_jax import recipes\n"
    "from gato_jax.configs import gato, sweep\n"
    "print(gato.get_config('tiny,smoke').train.steps, sweep.get_config('cpu').base.train.seq_len,"
    " recipes.expert_recipe('gymnax/CartPole-v1').env_id,"
    " recipes.expert_recipe('dm_control_pixels/walker-stand').task)\n"
    f"print(sorted(m for m in {HEAVY} if m in sys.modules))\n"
    "from gato_jax import tf_compat\n"
    "tf = tf_compat.import_tensorflow()\n"
    "print(tf.config.get_visible_devices('GPU'), tf_compat.import_tensorflow() is tf)\n"
  )
  return run_python("-c", code).stdout.splitlines()


def test_import_stays_light(fresh_process):
  assert fresh_process[0] == "[]"


def test_presets_import_as_modules_and_stay_light(fresh_process):
  # The library reads its presets by import (no file paths), and reading one loads no
  # TensorFlow, SeqIO or environment package.
  assert fresh_process[1:3] == ["4 512 CartPole-v1 walker-stand", "[]"]


def test_tensorflow_hides_accelerators(fresh_process):
  assert fresh_process[3] == "[] True"


def test_tokenize_demo_on_real_dm_control():
  out = run_python(
    "experiments/tokenize_demo.py",
    "--domain=cartpole",
    "--task=swingup",
    "--steps=3",
    env={"MUJOCO_GL": "disable"},
  ).stdout
  assert "7 tokens (observation, separator, action)" in out
  assert "separator" in out and "decoded action" in out


def test_launcher_console_shows_ours_and_the_file_keeps_everything(tmp_path):
  # A launcher (this script) logs, orbax logs from its own file, TFDS's banner is kept off the
  # console by rlds_io: only the launcher's line and the error reach the console.
  script = tmp_path / "launch.py"
  script.write_text(
    "from absl import app, logging\n"
    "import orbax.checkpoint  # noqa: F401 (its logger lines come from its own files)\n"
    "from orbax.checkpoint import options\n"
    "from gato_jax import console\n"
    "def main(argv):\n"
    f"  console.log_to_file({str(tmp_path)!r}, 'launch')\n"
    "  logging.info('progress of ours')\n"
    "  logging.info('banner', extra={'console': False})\n"
    "  exec(compile('logging.info(\"orbax internals\")', options.__file__, 'exec'))\n"
    "  exec(compile('logging.error(\"orbax failed\")', options.__file__, 'exec'))\n"
    "app.run(main)\n"
  )
  done = run_python(script, env={"JAX_PLATFORMS": "cpu"})
  shown = [line.split("] ", 1)[-1] for line in done.stderr.splitlines() if "] " in line]
  assert [
    m for m in shown if m in ("progress of ours", "banner", "orbax internals", "orbax failed")
  ] == ["progress of ours", "orbax failed"]
  logged = (tmp_path / "logs" / "launch.INFO").read_text()
  for message in ("progress of ours", "banner", "orbax internals", "orbax failed"):
    assert message in logged


def test_launchers_keep_library_logs_in_a_local_or_bucket_workdir(tmp_path, gcs_emulator):
  # launch.run does for every launcher with --workdir what the test above does by hand; for a
  # bucket workdir absl's file is written locally and copied into the bucket.
  script = tmp_path / "my_tool.py"
  script.write_text(
    "from absl import flags, logging\n"
    "from orbax.checkpoint import options\n"
    "from gato_jax import launch\n"
    "flags.DEFINE_string('workdir', None, '')\n"
    "def main(argv):\n"
    "  logging.info('progress of ours')\n"
    "  exec(compile('logging.info(\"orbax internals\")', options.__file__, 'exec'))\n"
    "launch.run(main)\n"
  )
  env = {"JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)}
  local = run_python(script, f"--workdir={tmp_path / 'run'}", env=env)
  assert local.stderr.splitlines()[0] == f"full logs in {tmp_path / 'run' / 'logs'}"
  assert "progress of ours" in local.stderr and "orbax internals" not in local.stderr
  logged = (tmp_path / "run" / "logs" / "my_tool.INFO").read_text()
  assert "progress of ours" in logged and "orbax internals" in logged
  run = gcs_emulator.create_bucket("launcher-logs") + "/run"
  bucket = run_python(script, f"--workdir={run}", env=env)
  assert bucket.stderr.splitlines()[0] == f"full logs in {run}/logs"
  assert "progress of ours" in bucket.stderr and "orbax internals" not in bucket.stderr
  (name,) = [n for n in files.listdir(f"{run}/logs") if n.startswith("my_tool.")]
  logged = files.read_text(f"{run}/logs/{name}")
  assert "progress of ours" in logged and "orbax internals" in logged


def test_launchers_keep_compiled_programs_across_runs(tmp_path):
  # No cache named: launch.run puts one under the user's cache folder (HOME here).
  code = (
    "import jax\n"
    "from gato_jax import launch\n"
    "def main(argv):\n"
    "  jax.jit(lambda x: x * 2)(1.0).block_until_ready()\n"
    "  print(jax.config.jax_compilation_cache_dir)\n"
    "launch.run(main)\n"
  )
  env = {"HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
  run = lambda env, drop=(): run_python("-c", code, env=env, drop=drop).stdout.strip()
  cache = tmp_path / ".cache" / "gato_jax" / "jax_compilation_cache"
  assert run(env, drop=("JAX_COMPILATION_CACHE_DIR",)) == str(cache)
  assert any(cache.iterdir())
  # One named by the environment is kept.
  assert run({**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")}) == str(tmp_path / "mine")


def test_local_paths_with_a_tilde_are_written_where_they_are_read(tmp_path, monkeypatch):
  # A flag such as --output_dir=~/run reaches the library unexpanded (the shell expands `~` only
  # at a word's start): what the path layer writes there must be what it reads back.
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  files.write_json("~/run/results.json", {"step": 1})
  files.append_bytes("~/run/log.jsonl", b"{}\n")
  assert files.exists("~/run/results.json")
  assert files.read_json("~/run/results.json") == {"step": 1}
  assert sorted(os.listdir(tmp_path / "home" / "run")) == ["log.jsonl", "results.json"]
  assert not (tmp_path / "~").exists()
