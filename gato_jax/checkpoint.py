"""Checkpoints: orbax behind one small class, the only module that talks to orbax.

A checkpoint holds the train state (parameters, optimizer state, step) and the data iterator's
state, written together so that a resumed run continues with exactly the batch it would have
seen. Saving is asynchronous; the newest `keep_last` checkpoints and the `keep_best` best by an
evaluation metric are kept, and nothing else in the directory is ever deleted. Restoring takes an
abstract state carrying the target shardings, so a checkpoint written on 8 devices restores onto
1 or 4 (or another mesh shape); `restore_params` reads the parameters alone, as an evaluator
needs them, without the optimizer state. A checkpoint that cannot be read is reported and
skipped in favour of the newest readable one; the trainer also moves it aside (`quarantine/`,
never deleted), so that its step is saved again and retention never keeps it over a good one. A
checkpoint of another model (other array shapes) is not damaged and is refused, naming the first
array that differs. A save that fails (a full disk) removes its temporary folder and raises one
`CheckpointWriteError` naming the path and the cause.
"""

import dataclasses
import glob
import os
import re
import shutil
import threading
import time
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from gato_jax import files


CHECKPOINTS_DIR = "checkpoints"  # Under a run folder: one subfolder per saved step.
QUARANTINE_DIR = "quarantine"  # Under the checkpoint directory: unreadable checkpoints.
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # How orbax names a step's folder until it is complete.
PARAMS = "params"  # The train state's field (and the saved tree's key) holding the parameters.


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint holds a model of other shapes than the one restoring it."""


class CheckpointWriteError(CheckpointError):
  """A checkpoint could not be written (e.g. no space left on device)."""


def error_cause(error: BaseException) -> str:
  """The root cause of `error` in a few words: the OS error's text where there is one."""
  seen, stack = set(), [error]
  while stack:
    e = stack.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
      return os.strerror(e.errno).lower()
    stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  code = re.search(r"os_error_code=\W*(\d+)", text)  # How tensorstore reports an OS error.
  if code:
    return os.strerror(int(code[1])).lower()
  return f"{type(error).__name__}: {text[:300]}"


def _remove_when_quiet(prefix: str, timeout_s: float = 30.0) -> None:
  """Removes the folders `prefix*`, again until no writer recreates them for a second.

  tensorstore finishes the writes a failed save had issued from its own threads, which Python
  cannot join, and creates their parent folders again as it does.
  """
  if files.is_remote(prefix):
    try:  # A bucket has no half-renamed folders: remove what the save left, if it can.
      files.remove(prefix)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not remove %s: %s", prefix, error_cause(e))
    return
  deadline, quiet_since = time.monotonic() + timeout_s, None
  while time.monotonic() < deadline:
    paths = glob.glob(f"{prefix}*")
    for path in paths:
      shutil.rmtree(path, ignore_errors=True)
    if paths:
      quiet_since = None
    elif quiet_since is None:
      quiet_since = time.monotonic()
    elif time.monotonic() - quiet_since >= 1.0:
      return
    time.sleep(0.1)


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


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

  def __init__(
    self,
    directory: str,
    *,
    save_interval_steps: int = 1000,
    keep_last: int = 3,
    keep_best: int = 1,
    best_metric: str = "eval_score",
    best_mode: str = "max",
    async_save: bool = True,
  ):
    if save_interval_steps < 1 or keep_last < 1 or keep_best < 0:
      raise ValueError("save_interval_steps and keep_last must be >= 1, keep_best >= 0")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = files.resolve(directory)  # A local path or a URI (gs://...).
    self.save_interval_steps = save_interval_steps
    self.best_metric = best_metric
    self._async = async_save
    policies = [checkpoint_managers.LatestN(n=keep_last)]
    if keep_best:
      policies.append(
        checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          reverse=best_mode == "min",
          n=keep_best,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=async_save,
      # Unfinished (temporary) folders of a killed save are evidence; leave them in place.
      cleanup_tmp_directories=False,
      create=True,
    )
    # Handlers named up front: a fresh manager can then read a step's metadata (shapes). The
    # state is written whole (StandardSave); PyTreeRestore reads a part of it (`restore_params`).
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state_handler, data_handler = ocp.StandardCheckpointHandler(), ocp.JsonCheckpointHandler()
    for args, handler in (
      (ocp.args.StandardSave, state_handler),
      (ocp.args.StandardRestore, state_handler),
      (ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler()),
    ):
      registry.add("state", args, handler)
    registry.add("data", ocp.args.JsonSave, data_handler)
    registry.add("data", ocp.args.JsonRestore, data_handler)
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, handler_registry=registry
    )
    self._unfinished: list[int] = []  # Steps whose (async) save has not been confirmed.
    self._threads_before: set[threading.Thread] = set()  # Alive before those saves began.

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.save_interval_steps == 0

  def save(
    self, step: int, state: Any, data_state: Any = None, metrics: dict[str, float] | None = None
  ) -> None:
    """Starts writing a checkpoint for `step` (returns before it is on disk when async)."""
    if step in self._manager.all_steps():
      logging.info("checkpoint %d already exists; not rewriting it", step)
      return
    metrics = dict(metrics or {})
    args = {"state": ocp.args.StandardSave(state)}
    args["data"] = ocp.args.JsonSave(data_state if data_state is not None else {})
    if not self._unfinished:
      self._threads_before = set(threading.enumerate())
    self._unfinished.append(step)
    try:  # Also where orbax reports a failure of the previous asynchronous save.
      self._manager.save(
        step,
        args=ocp.args.Composite(**args),
        metrics=metrics if self.best_metric in metrics else None,
        force=True,
      )
    except Exception as e:  # orbax and tensorstore raise many types for one failed write.
      self._write_failed(e)
    if not self._async:
      self._unfinished.clear()

  def _write_failed(self, error: Exception):
    """Removes the failed saves' temporary folders and raises one CheckpointWriteError.

    The checkpointer is closed: a run whose disk is full stops rather than trains on unsaved.
    """
    steps, self._unfinished = self._unfinished, []
    try:
      self._manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except
      pass  # The same failure, reported below.
    # The other items of a failed save go on writing into its folder from orbax's threads (the
    # sync path too); wait for the threads the save started before removing the folder.
    deadline = time.monotonic() + 60
    for thread in set(threading.enumerate()) - self._threads_before - {threading.current_thread()}:
      try:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
      except Exception:  # pylint: disable=broad-except
        pass  # orbax's threads re-raise their failure from join(): the same one.
    try:  # A failed writer is not used again; its threads must not outlive the error quietly.
      self._manager.close()
    except Exception:  # pylint: disable=broad-except
      pass
    for step in steps:
      _remove_when_quiet(files.join(self.directory, f"{step}{TMP_SUFFIX}"))
    where = files.join(self.directory, str(steps[-1])) if steps else self.directory
    raise CheckpointWriteError(
      f"could not write checkpoint {where}: {error_cause(error)}; the earlier checkpoints are"
      " intact"
    ) from error

  def restore(
    self, abstract_state: Any, step: int | None = None, quarantine: bool = False
  ) -> Restored:
    """Restores `step` (default: the newest readable) onto `abstract_state`'s shardings.

    Args:
      abstract_state: a tree of jax.ShapeDtypeStruct with `.sharding` set (e.g. from
        `training.step.abstract_train_state`), or of arrays whose shardings to copy.
      step: a specific step; if it cannot be read the error is raised rather than skipped.
      quarantine: move each unreadable checkpoint into `quarantine/` (the writer's choice; a
        reader such as the evaluator leaves the directory as it is).

    Raises:
      CheckpointMismatchError: the newest checkpoint holds other array shapes.
      CheckpointError: naming every step tried and why it failed.
    """
    target = jax.tree.map(_abstract_leaf, abstract_state)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())
    candidate, restored = self._restore_first_readable(target, args, step, quarantine=quarantine)
    return Restored(step=candidate, state=restored["state"], data_state=restored["data"] or None)

  def restore_params(self, abstract_params: Any, step: int | None = None) -> tuple[Any, int]:
    """(The parameters of `step` (default: the newest readable), the step) alone.

    Only the train state's `params` subtree is read, straight into `abstract_params`'
    shardings: the optimizer state and the data iterator's state are never read, and no
    optimizer is needed to describe them. The directory is left as it is.

    Raises:
      CheckpointMismatchError: the newest checkpoint holds parameters of other shapes.
      CheckpointError: naming every step tried and why it failed.
    """
    target = {PARAMS: jax.tree.map(_abstract_leaf, abstract_params)}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    args = ocp.args.Composite(
      state=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
    )
    candidate, restored = self._restore_first_readable(target, args, step, partial=True)
    return restored["state"][PARAMS], candidate

  def _restore_first_readable(
    self,
    target: Any,
    args: ocp.args.Composite,
    step: int | None,
    quarantine: bool = False,
    partial: bool = False,
  ) -> tuple[int, Any]:
    """(step, what the manager restored) for `step`, else the newest readable checkpoint.

    `partial`: `target` holds some of the stored state's top-level subtrees (see
    `_shape_mismatch`).
    """
    self.wait()
    candidates = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not candidates:
      raise CheckpointError(f"no checkpoints in {self.directory}")
    failures, mismatch = [], ""
    for candidate in candidates:
      try:
        mismatch = self._shape_mismatch(candidate, target, partial)
        if mismatch:
          break
        restored = self._manager.restore(candidate, args=args)
      except Exception as e:  # orbax raises many types for unreadable data; report them all.
        if "not compatible with the stored shape" in str(e):  # Another model, not damage.
          mismatch = str(e).split(". ")[0]
          break
        failures.append(f"step {candidate}: {type(e).__name__}: {str(e)[:300]}")
        if quarantine and step is None:
          self._quarantine(candidate, e)
        else:
          logging.error(
            "checkpoint %d in %s is unreadable, trying an older one: %s",
            candidate,
            self.directory,
            str(e)[:300],
          )
        continue
      return candidate, restored
    if mismatch:
      raise CheckpointMismatchError(
        f"checkpoint {candidate} in {self.directory} holds another model: {mismatch}; restore"
        " it with the config it was trained with, or use another workdir"
      )
    raise CheckpointError(
      f"no readable checkpoint in {self.directory}; tried:\n  " + "\n  ".join(failures)
    )

  def _shape_mismatch(self, step: int, target: Any, partial: bool = False) -> str:
    """How the stored arrays' shapes differ from `target`'s ("" if they agree).

    `partial`: compare only the stored subtrees that `target` names at its top level, so that a
    parameters-only target is not told the optimizer state is missing.
    """
    wanted = {
      ".".join(_key_name(k) for k in path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    roots = {name.split(".")[0] for name in wanted}
    stored = {
      m.name: tuple(m.shape)
      for m in jax.tree.leaves(self._manager.item_metadata(step)["state"])
      if hasattr(m, "shape") and (not partial or m.name.split(".")[0] in roots)
    }
    if not set(stored) & set(wanted):
      return ""  # Names of another scheme: let the restore itself judge.
    # Parameters first: their names say most about the model (optimizer state mirrors them).
    differ = sorted(
      (k for k in set(stored) & set(wanted) if stored[k] != wanted[k]),
      key=lambda k: (not k.startswith(f"{PARAMS}."), k),
    )
    if differ:
      return (
        f"{differ[0]} has shape {stored[differ[0]]} there but {wanted[differ[0]]} here"
        f" ({len(differ)} of {len(wanted)} arrays differ)"
      )
    if set(stored) != set(wanted):
      return (
        f"arrays {sorted(set(stored) - set(wanted))[:3]} are only there and"
        f" {sorted(set(wanted) - set(stored))[:3]} only here"
      )
    return ""

  def _quarantine(self, step: int, error: Exception) -> None:
    """Moves unreadable checkpoint `step` into quarantine/ so that it is written again."""
    destination = files.join(
      self.directory, QUARANTINE_DIR, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if jax.process_index() == 0:  # Processes of a multi-host job share the directory.
      files.move(files.join(self.directory, str(step)), destination)
    self._manager.reload()
    logging.error(
      "checkpoint %d in %s is unreadable (%s); moved it to %s and trying an older one",
      step,
      self.directory,
      error_cause(error),
      destination,
    )

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk.

    Raises:
      CheckpointWriteError: a save failed (its temporary folder is removed).
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # orbax and tensorstore raise many types for one failed write.
      self._write_failed(e)
    self._unfinished.clear()

  def close(self) -> None:
    """Waits for pending saves (see `wait`) and releases orbax's threads."""
    try:
      self.wait()
    finally:
      self._manager.close()


def _abstract_leaf(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
