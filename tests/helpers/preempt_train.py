"""One process of a (multi-host) training run through experiments/train.py that may be preempted:
run by tests/test_preemption.py.

Usage: python preempt_train.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR WORKDIR SIGTERM_AT [FLAG...]
Each process owns 8 / NUM_PROCESSES fake CPU devices and runs the launcher with the `tiny,smoke`
config (and the FLAGs). With SIGTERM_AT >= 0, this process sends itself a real SIGTERM while it
builds its rows of batch SIGTERM_AT (0-based): a preemption notice at a known point of training,
which the trainer must turn into one agreed step on every process.
"""

import os
import pathlib
import runpy
import signal
import sys

process_id, num_processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data_dir, workdir, sigterm_at = sys.argv[4], sys.argv[5], int(sys.argv[6])
os.environ["XLA_FLAGS"] = (
  f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={8 // num_processes}"
)
os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = pathlib.Path(__file__).parents[2]

from gato_jax.data import mixture  # noqa: E402

host_batch = mixture.MixtureIterator.host_batch


def host_batch_then_sigterm(self, step):
  if step == sigterm_at:
    os.kill(os.getpid(), signal.SIGTERM)
  return host_batch(self, step)


mixture.MixtureIterator.host_batch = host_batch_then_sigterm

flags = [
  f"--config={ROOT / 'experiments' / 'configs' / 'gato.py'}:tiny,smoke",
  f"--workdir={workdir}",
  f"--config.data.data_dir={data_dir}",
  *sys.argv[7:],
]
if num_processes > 1:
  flags += [
    "--config.mesh.multi_host=true",
    f"--config.mesh.coordinator_address=127.0.0.1:{port}",
    f"--config.mesh.num_processes={num_processes}",
    f"--config.mesh.process_id={process_id}",
    "--config.mesh.cpu_collectives=gloo",
  ]
sys.argv = [str(ROOT / "experiments" / "train.py"), *flags]
runpy.run_path(sys.argv[0], run_name="__main__")
