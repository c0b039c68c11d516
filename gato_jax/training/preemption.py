"""Preemption: a SIGTERM on any host stops every host at one step, after a checkpoint there.

TPU VMs are preempted and maintained; the host gets SIGTERM some time before it goes away. The
trainer asks `PreemptionGuard.reached(step)` after every step. In a multi-host job (the
distributed runtime is up) JAX's preemption service owns SIGTERM: the host that gets it tells the
others through the coordinator, and `jax.experimental.multihost_utils.reached_preemption_sync_point`
turns true on every host at the same step (the largest step any host had reached, plus one), so
all hosts save the same checkpoint. On one process without the distributed runtime that function
is always false, so the guard installs its own SIGTERM handler and the step after the signal is
the one to save.

After saving, the trainer raises `Preempted`; the launchers (`gato_jax.launch.run`) end with one
line and exit status `PREEMPTED_EXIT_CODE`, which tells a scheduler (or a wrapper script) that the
run saved its state and wants to be started again with the same command, which resumes it.
"""

import signal
import threading

from absl import logging
import jax

# The exit status of a launcher whose run was preempted and saved: rerun the same command. Apart
# from 1 (a user error) and 128 + N (killed by signal N), so a wrapper can tell the three apart.
PREEMPTED_EXIT_CODE = 42


class Preempted(Exception):
  """Training stopped at `step` on a preemption notice, after saving a checkpoint there."""

  def __init__(self, step: int, directory: str):
    super().__init__(
      f"preempted: saved checkpoint {step} in {directory}; rerun the same command to resume"
    )
    self.step = step
    self.directory = directory


class PreemptionGuard:
  """Tells the training loop, step by step, whether to save and stop for a preemption.

  Use as a context manager around the loop and call `reached(step)` after every step, on every
  process, starting from the same step everywhere (JAX's sync protocol requires both).
  """

  def __init__(self):
    self._signalled = threading.Event()
    self._previous = None
    self._use_jax = False

  def __enter__(self) -> "PreemptionGuard":
    if jax.distributed.is_initialized():
      # JAX's preemption notifier has installed its SIGTERM handler; one here would replace it.
      self._use_jax = True
    elif threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    else:  # Python lets only the main thread set handlers (e.g. a trainer run in a thread).
      logging.warning("training outside the main thread: SIGTERM ends it without a checkpoint")
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._signalled.set()
    logging.warning("SIGTERM: saving a checkpoint after the current step, then stopping")

  def reached(self, step: int) -> bool:
    """Whether to save at `step` (the number of steps done) and stop."""
    if not self._use_jax:
      return self._signalled.is_set()
    from jax.experimental import multihost_utils

    try:
      reached = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # The preemption service is off (jax_enable_preemption_service).
      return False
    if reached:
      logging.warning("preemption notice: every host saves at step %d, then stops", step)
    return reached
