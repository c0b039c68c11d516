"""The workdir lock: one holder at a time, reentrant in its process, freed by its holder's death."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from gato_jax import workdir_lock

HOLD = (
  "import sys, time; from gato_jax import workdir_lock;"
  " workdir_lock.WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True);"
  " time.sleep(600)"
)


def _hold_in_another_process(workdir):
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True
  )
  assert holder.stdout.readline() == "held\n"
  return holder


def test_second_process_refuses_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
  holder = _hold_in_another_process(tmp_path)
  try:
    with pytest.raises(workdir_lock.WorkdirLockedError) as raised:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert str(raised.value) == (
      f"workdir {tmp_path} is in use by pid {holder.pid} on host {socket.gethostname()};"
      " wait for it to finish or use another --workdir"
    )
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The dead holder's file is still there, naming it; it does not block the next process.
  assert (tmp_path / ".lock").read_text() == f"pid {holder.pid} on host {socket.gethostname()}\n"
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"


def test_reentrant_within_a_process_and_released_on_exit(tmp_path):
  outer = workdir_lock.WorkdirLock(str(tmp_path / "run")).acquire()
  with workdir_lock.WorkdirLock(str(tmp_path / "run")):  # e.g. the sweep, then the trainer.
    pass
  # Still held by `outer`: another process is refused.
  refused = subprocess.run(
    [sys.executable, "-c", HOLD, str(tmp_path / "run")], capture_output=True, text=True
  )
  assert refused.returncode == 1 and "WorkdirLockedError: workdir" in refused.stderr
  outer.release()
  holder = _hold_in_another_process(tmp_path / "run")
  holder.kill()
  holder.wait()


def test_processes_of_one_job_hold_their_own_index(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path), process_index=0):
    with workdir_lock.WorkdirLock(str(tmp_path), process_index=1) as second:
      assert second.path == os.path.join(tmp_path, ".lock.1")


def test_a_waiting_acquirer_blocks_until_the_holder_lets_go(tmp_path):
  import threading

  holder = _hold_in_another_process(tmp_path)
  acquired = threading.Event()
  waiter = workdir_lock.WorkdirLock(str(tmp_path), wait=True)

  def wait_for_it():
    waiter.acquire()
    acquired.set()

  thread = threading.Thread(target=wait_for_it, daemon=True)
  try:
    thread.start()
    assert not acquired.wait(1.0)  # Blocked, not refused: the thread is still waiting.
    assert thread.is_alive()
  finally:
    holder.kill()
    holder.wait()
  assert acquired.wait(30)
  assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"
  waiter.release()
