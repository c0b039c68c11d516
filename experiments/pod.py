r"""One training run on one TPU slice: prints its gcloud commands, or rehearses it here.

  python experiments/pod.py --config=experiments/configs/gato.py:1.18b,v5e16 \
      --workdir=gs://BUCKET/gato-1.18b --name=gato-1-18b --zone=us-west4-a --project=PROJECT
  python experiments/pod.py --config=experiments/configs/gato.py:tiny,smoke --hosts=2 \
      --dispatch=local --workdir=/tmp/gato-pod

--dispatch:
  print   (default) the commands a user runs, in order: create the slice (the preset's
          accelerator type and TPU software version), install this checkout with the [tpu] extra
          on every worker, start experiments/train.py with these flags on every host
          (--worker=all), follow the log, delete the slice. --workdir must be a bucket.
  local   the pod rehearsal: the same per-worker command as --hosts local processes, each with
          the slice's devices per host as fake CPU devices (without a slice preset: the mesh's
          devices over the hosts), joined through a coordinator on 127.0.0.1; their lines are
          prefixed [worker I]. SIGTERM / SIGINT reach every worker; the exit status is theirs.

Every flag but this launcher's own (--name, --zone, --project, --hosts, --dispatch, --spot) is
passed on to experiments/train.py unchanged, config overrides included. The guide is
docs/tpu_pod.md.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from gato_jax import files, launch, pod

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (gs://... for a slice).")
_NAME = flags.DEFINE_string("name", None, "The TPU's name; default: gato-<size>-<preset>.")
_ZONE = flags.DEFINE_string("zone", None, "Zone of the slice; default: gcloud's compute/zone.")
_PROJECT = flags.DEFINE_string("project", None, "Project; default: gcloud's core/project.")
_HOSTS = flags.DEFINE_integer(
  "hosts", None, "local: processes; default: the slice preset's hosts (1 without a preset)."
)
_SPOT = flags.DEFINE_bool("spot", False, "print: create a Spot slice (preemptible, cheaper).")
_DISPATCH = flags.DEFINE_enum("dispatch", "print", ["print", "local"], "See the docstring.")
flags.mark_flags_as_required(["config", "workdir"])

OWN_FLAGS = ("name", "zone", "project", "hosts", "dispatch", "spot")
TRAINER = "experiments/train.py"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  tpu = pod.config_slice(config)
  worker_argv = [TRAINER, *launch.argv_without(sys.argv[1:], OWN_FLAGS)]
  if _DISPATCH.value == "print":
    if tpu is None:
      raise ValueError(
        f"config {config.arg!r} is sized for no slice: add a slice preset"
        " (e.g. --config=experiments/configs/gato.py:1.18b,v5e16)"
      )
    if not files.is_remote(_WORKDIR.value):
      raise ValueError(
        f"--workdir={_WORKDIR.value} is not a bucket: a slice's hosts share one run folder, and"
        " its disks go when it is deleted (use --workdir=gs://BUCKET/...)"
      )
    name = _NAME.value or pod.tpu_name(f"gato-{config.arg.replace(',', '-')}")
    for line in pod.launch_script(
      tpu, name, worker_argv, _ZONE.value, _PROJECT.value, spot=_SPOT.value, title=config.arg
    ):
      print(line)
    return
  hosts = _HOSTS.value or (tpu.hosts if tpu else 1)
  if hosts < 1:
    raise ValueError(f"--hosts must be at least 1, got {hosts}")
  devices = pod.rehearsal_devices(config, hosts)
  if hosts > 1 and not config.mesh.multi_host:
    worker_argv.append("--config.mesh.multi_host=true")  # As a slice preset sets it.
  sys.exit(pod.rehearse(worker_argv, hosts, devices))


if __name__ == "__main__":
  # The workers write the run folder (and their logs in it); the launcher only starts them.
  launch.run(main, logs_in_workdir=lambda: False)
