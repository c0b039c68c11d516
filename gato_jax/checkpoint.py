"""Checkpoints: orbax behind one small class, the only module that talks to orbax.

A checkpoint holds the train state (parameters, optimizer state, step) and the data iterator's
state, written together so that a resumed run continues with exactly the batch it would have
seen. Saving is asynchronous; the newest `keep_last` checkpoints and the `keep_best` best by an
evaluation metric are kept, and nothing else in the directory is ever deleted. Restoring takes an
abstract state carrying the target shardings, so a checkpoint written on 8 devices restores onto
1 or 4 (or another mesh shape). A checkpoint that cannot be read is reported and skipped in
favour of the newest readable one.
"""

import dataclasses
import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored."""


@dataclasses.dataclass(frozen=True)
class Restored:
  step: int
  state: Any
  data_state: Any  # JSON-compatible dict, or None when the run saved none.


class Checkpointer:
  """Saves and restores (train state, data iterator state) pairs under `directory`.

  Args:
    directory: where step folders are written (created if missing).
    save_interval_steps: `maybe_save` writes on multiples of this.
    keep_last: how many of the newest checkpoints to keep.
    keep_best: how many of the best checkpoints by `best_metric` to keep as well (0: none).
    best_metric: the metrics key ranking checkpoints (e.g. "eval/normalized_score").
    best_mode: "max" or "min".
    async_save: write in a background thread while training continues.
  """

  def __init__(self, directory: str, *, save_interval_steps: int = 1000, keep_last: int = 3,
               keep_best: int = 1, best_metric: str = "eval_score", best_mode: str = "max",
               async_save: bool = True):
    if save_interval_steps < 1 or keep_last < 1 or keep_best < 0:
      raise ValueError("save_interval_steps and keep_last must be >= 1, keep_best >= 0")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = os.path.abspath(os.path.expanduser(directory))
    self.save_interval_steps = save_interval_steps
    self.best_metric = best_metric
    policies = [checkpoint_managers.LatestN(n=keep_last)]
    if keep_best:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min",
          n=keep_best, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        # Unfinished (temporary) folders of a killed save are evidence; leave them in place.
        cleanup_tmp_directories=False,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.save_interval_steps == 0

  def save(self, step: int, state: Any, data_state: Any = None,
           metrics: dict[str, float] | None = None) -> None:
    """Starts writing a checkpoint for `step` (returns before it is on disk when async)."""
    if step in self._manager.all_steps():
      logging.info("checkpoint %d already exists; not rewriting it", step)
      return
    metrics = dict(metrics or {})
    args = {"state": ocp.args.StandardSave(state)}
    args["data"] = ocp.args.JsonSave(data_state if data_state is not None else {})
    self._manager.save(step, args=ocp.args.Composite(**args),
                       metrics=metrics if self.best_metric in metrics else None, force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> Restored:
    """Restores `step` (default: the newest readable) onto `abstract_state`'s shardings.

    Args:
      abstract_state: a tree of jax.ShapeDtypeStruct with `.sharding` set (e.g. from
        `jax.eval_shape` plus the state shardings), or of arrays whose shardings to copy.
      step: a specific step; if it cannot be read the error is raised rather than skipped.

    Raises:
      CheckpointError: naming every step tried and why it failed.
    """
    self.wait()
    candidates = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not candidates:
      raise CheckpointError(f"no checkpoints in {self.directory}")
    target = jax.tree.map(_abstract_leaf, abstract_state)
    failures = []
    for candidate in candidates:
      try:
        restored = self._manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      except Exception as e:  # orbax raises many types for unreadable data; report them all.
        failures.append(f"step {candidate}: {type(e).__name__}: {str(e)[:300]}")
        logging.error("checkpoint %d in %s is unreadable, trying an older one: %s", candidate,
                      self.directory, e)
        continue
      data_state = restored["data"] or None
      return Restored(step=candidate, state=restored["state"], data_state=data_state)
    raise CheckpointError(
        f"no readable checkpoint in {self.directory}; tried:\n  " + "\n  ".join(failures))

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _abstract_leaf(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
