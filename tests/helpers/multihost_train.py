"""One process of a multi-host job: run by tests/test_multihost.py.

Usage: python multihost_train.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR WORKDIR STEP_JSON
Each process owns 8 / NUM_PROCESSES fake CPU devices and calls the real train_and_evaluate with
the `tiny,smoke` config, reading only its own data shards; then, in the job the trainer joined,
the bare train step of multihost_step.py, whose report process 0 writes to STEP_JSON. One launch
serves both checks: starting the processes and joining the job cost more than either.
"""

import json
import os
import sys

process_id, num_processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data_dir, workdir, step_json = sys.argv[4], sys.argv[5], sys.argv[6]
os.environ["XLA_FLAGS"] = (
  f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={8 // num_processes}"
)
os.environ["JAX_PLATFORMS"] = "cpu"
from gato_jax import train  # noqa: E402
from gato_jax.configs import gato  # noqa: E402
from multihost_step import train_steps  # noqa: E402  (this script's folder is on sys.path)

config = gato.get_config("tiny,smoke")
config.data.data_dir = data_dir
config.data.num_shards = 2  # Fixed, so one process and two make the same stream.
if num_processes > 1:
  config.mesh.multi_host = True
  config.mesh.coordinator_address = f"127.0.0.1:{port}"
  config.mesh.num_processes = num_processes
  config.mesh.process_id = process_id
  config.mesh.cpu_collectives = "gloo"
train.train_and_evaluate(config, workdir)
report = train_steps(process_id, num_processes)
if process_id == 0:
  with open(step_json, "w") as f:
    json.dump(report, f)
