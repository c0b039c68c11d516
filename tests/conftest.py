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
