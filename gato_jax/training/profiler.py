"""A `jax.profiler` trace of chosen training steps, written into the run folder.

`train.profile_steps="START,COUNT"` traces the steps numbered START to START+COUNT-1 (the step
numbers of metrics.jsonl: step 1 is the first) into `<workdir>/profile/`, where TensorBoard's
profile plugin finds them (`tensorboard --logdir=<workdir>/profile`). As in MaxText, only process
0 traces: one host's view of an SPMD step is the others' too, and hosts sharing a run folder
would otherwise write traces under one hostname when rehearsed on one machine.
"""

from typing import Any

import jax

PROFILE_DIR = "profile"  # Under the workdir.


def parse_steps(text: str) -> range:
  """The steps "START,COUNT" names (an empty text: none)."""
  if not text.strip():
    return range(0)
  parts = text.split(",")
  try:
    start, count = (int(part) for part in parts)
  except ValueError:
    start = count = -1
  if len(parts) != 2 or start < 1 or count < 1:
    raise ValueError(
      f'train.profile_steps must be "START,COUNT" with START >= 1 and COUNT >= 1, got {text!r}'
    )
  return range(start, start + count)


class StepProfiler:
  """Starts a trace before the first chosen step and stops it after the last.

  Args:
    log_dir: where the trace goes (`<workdir>/profile`).
    steps: the step numbers to trace (from `parse_steps`).
  """

  def __init__(self, log_dir: str, steps: range):
    self.log_dir = log_dir
    self.steps = steps if jax.process_index() == 0 else range(0)
    self._active = False

  def before(self, step: int) -> None:
    """Call before running step number `step`."""
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.log_dir)
      self._active = True

  def after(self, step: int, outputs: Any) -> None:
    """Call after step number `step` with its outputs (waited for, so the trace holds it all)."""
    if self._active and step == self.steps[-1]:
      self.stop(outputs)

  def stop(self, outputs: Any = None) -> None:
    """Ends the trace (if one is running), e.g. when training stops inside the traced steps."""
    if self._active:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self._active = False
