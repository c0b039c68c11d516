"""Test-wide settings, applied before any test imports jax or dm_control."""

import os
import tempfile

# Sharding tests run on a (2, 2, 2) mesh of fake CPU devices; XLA reads this at first import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
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
