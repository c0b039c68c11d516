"""Test-wide settings, applied before any test imports jax or dm_control."""

import os
import tempfile

import pytest

# Sharding tests run on a (2, 2, 2) mesh of fake CPU devices; XLA reads this at first import.
# Tests compile hundreds of small programs and run each briefly: LLVM's optimisation level 0
# roughly halves XLA's compile time (tests/test_sharding.py: 109 -> 61 CPU-s), and XLA:CPU's
# older fusion emitters compile faster still (tests/test_decode.py and test_sharding.py:
# 161 -> 84 CPU-s, test_model.py 115 -> 79; idle 2-core EPYC, 2026-12-07). Results may differ
# from optimised code in the last bits, so tests compare runs made under these same flags,
# never a test run with a run of an unset XLA_FLAGS: launchers the tests start keep them
# (helpers change only the device count: gato_jax.pod.xla_flags_with_devices).
os.environ.setdefault(
  "XLA_FLAGS",
  "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
  " --xla_cpu_use_fusion_emitters=false",
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests use state observations only; without this dm_control probes for a display.
os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Whether a task has a trained expert must not depend on the machine: tests never see the
# user's expert cache (~/.cache/gato_jax/experts), only this empty folder.
os.environ["GATO_JAX_EXPERTS"] = tempfile.mkdtemp(prefix="gato_jax_test_experts_")
# One compilation cache for the whole run and the launchers it starts: many tests compile the
# same tiny train and decode steps, and a hit skips XLA's compile. A new folder for each run.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gato_jax_test_compilation_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session")
def gcs_emulator():
  """A fake-gcs-server (tests/helpers/gcs_emulator.py) for the whole run, with this process's
  and its children's Cloud Storage clients pointed at it; stopped at the end."""
  from helpers import gcs_emulator as emulator_lib

  with emulator_lib.running() as emulator:
    yield emulator


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """Two small BabyAI tasks' episodes, generated once for the trainer tests of every module
  (their derived stores are built on first use and shared too); tests only read them."""
  from gato_jax.sources import generation  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp("babyai_data"))
  for task in ("babyai/GoToRedBall", "babyai/GoToLocal"):
    generation.generate_task(
      task, path, num_episodes=6, stats_episodes=4, shard_episodes=6, progress=lambda line: None
    )
  return path


@pytest.fixture(scope="session")
def smoke_run(data_dir, tmp_path_factory):
  """(workdir, final record) of one undisturbed run of helpers.configs.smoke_config(data_dir),
  made once for every module that needs a finished run; tests read it or copy it."""
  from gato_jax import train  # pylint: disable=g-import-not-at-top
  from helpers.configs import smoke_config  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("smoke_run") / "run"
  return workdir, train.train_and_evaluate(smoke_config(data_dir), str(workdir))


@pytest.fixture(scope="session")
def two_host_run(data_dir, tmp_path_factory):
  """(exit status, output, workdir) of one uninterrupted two-host run through the local pod
  rehearsal (helpers.processes.TWO_HOST_FLAGS): test_pod.py reads the launcher's output,
  test_preemption.py the losses a preempted two-host run must resume to."""
  from helpers import processes  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("two_host_run") / "run"
  proc = processes.start_pod_rehearsal(data_dir, workdir, *processes.TWO_HOST_FLAGS)
  output = proc.communicate(timeout=800)[0]
  return proc.returncode, output, workdir
