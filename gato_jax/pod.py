"""One run on one TPU slice: the `gcloud` commands that launch it, and its rehearsal on one machine.

A slice preset of gato_jax/configs/gato.py (`v4_8`, `v5e16`, `v5p8`) names a libtpu topology
and a host count. `TpuSlice` turns them into what Cloud TPU calls them (accelerator type, TPU
software version: https://cloud.google.com/tpu/docs/runtimes), and `launch_script` into the
commands a user runs, in order: create the slice, install gato_jax with its `[tpu]` extra on every
worker (a `git archive` of this checkout, copied with `tpu-vm scp --worker=all`: no repository
URL or credentials on the workers), start the same command on every host (`--worker=all`; JAX
finds its peers on a TPU VM by itself), follow worker 0's log, delete the slice.

`rehearse` runs that same per-worker command as N local processes: each gets the slice's devices
per host as fake CPU devices and joins a coordinator on 127.0.0.1 through the config's
`mesh.coordinator_address` / `num_processes` / `process_id` (what a TPU VM's environment tells
JAX on a pod), with gloo CPU collectives. Their output lines come back prefixed `[worker I]`; a
SIGTERM or SIGINT to the rehearsal reaches every worker, and the rehearsal exits with the
workers' exit status (e.g. `preemption.PREEMPTED_EXIT_CODE` after a preemption).
"""

import dataclasses
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Cloud TPU's software version for JAX, per TPU generation (libtpu's name for it).
RUNTIME_VERSIONS = {
  "v4": "tpu-ubuntu2204-base",
  "v5e": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
# v4 and v5p accelerator types count TensorCores (two a chip: v4-8 is 4 chips), v5e and v6e
# count chips (v5litepod-16 is 16 chips).
_ACCELERATOR_PREFIX = {"v4": "v4", "v5e": "v5litepod", "v5p": "v5p", "v6e": "v6e"}
_CORES_PER_CHIP = {"v4": 2, "v5e": 1, "v5p": 2, "v6e": 1}

ARCHIVE = "gato_jax.tar.gz"  # What `git archive` writes and scp copies to every worker.
REMOTE_DIR = "gato_jax"  # The checkout on each worker, under the ssh user's home.
LOG_FILE = "train.log"  # Each worker's console, in REMOTE_DIR.
# How long the other workers may run on after one failed before the rehearsal kills them (a host
# waiting in a collective for a dead peer would otherwise wait for JAX's heartbeat timeout).
FAILURE_GRACE_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """A TPU slice: a libtpu topology (e.g. "v5e:4x4") and how many hosts (TPU VMs) it has."""

  topology: str
  hosts: int
  preset: str = ""  # The gato.py slice preset that names it, if any.

  def __post_init__(self):
    generation, _, dims = self.topology.partition(":")
    if generation not in RUNTIME_VERSIONS or not re.fullmatch(r"\d+(x\d+)*", dims):
      raise ValueError(
        f"TPU topology {self.topology!r} must read GENERATION:AxB[xC] with GENERATION one of"
        f" {', '.join(RUNTIME_VERSIONS)}"
      )
    if self.hosts < 1 or self.chips % self.hosts:
      raise ValueError(
        f"{self.chips} chips of {self.topology} do not split over {self.hosts} hosts"
      )

  @property
  def generation(self) -> str:
    return self.topology.split(":")[0]

  @property
  def chips(self) -> int:
    return math.prod(int(d) for d in self.topology.split(":")[1].split("x"))

  @property
  def devices_per_host(self) -> int:
    """JAX devices a host owns: one a chip (v4 and v5p drive a chip's two cores as one)."""
    return self.chips // self.hosts

  @property
  def accelerator_type(self) -> str:
    """`gcloud ... --accelerator-type`, e.g. v5litepod-16 for v5e:4x4, v4-8 for v4:2x2x1."""
    g = self.generation
    return f"{_ACCELERATOR_PREFIX[g]}-{self.chips * _CORES_PER_CHIP[g]}"

  @property
  def runtime_version(self) -> str:
    return RUNTIME_VERSIONS[self.generation]


def slice_presets() -> dict:
  """gato.py's slice presets: name -> (topology, hosts, {size: (remat policy, microbatches)})."""
  from gato_jax.configs import gato  # pylint: disable=g-import-not-at-top

  return gato.SLICES


def config_slice(config: ml_collections.ConfigDict) -> TpuSlice | None:
  """The slice `config.mesh.topology` names (its hosts from the preset that has it); None when
  the config is sized for no slice."""
  topology = config.mesh.topology
  if not topology:
    return None
  presets = slice_presets()
  for name, (preset_topology, hosts, _) in presets.items():
    if preset_topology == topology:
      return TpuSlice(topology, hosts, name)
  raise ValueError(
    f"no slice preset of gato_jax/configs/gato.py has topology {topology!r} (presets:"
    f" {', '.join(f'{name}={t}' for name, (t, _, _) in presets.items())}); add one there"
  )


def tpu_name(text: str) -> str:
  """A valid TPU name from `text`: lower-case letters, digits and hyphens, starting with a
  letter ("gato-size-1.18b" -> "gato-size-1-18b")."""
  name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
  if not name or not name[0].isalpha():
    name = "gato-" + name
  return name[:60].rstrip("-")


def _gcloud(verb: str, name: str, zone: str | None, project: str | None, *args: str) -> str:
  location = [f"--zone={zone}"] * bool(zone) + [f"--project={project}"] * bool(project)
  return shlex.join(["gcloud", "compute", "tpus", "tpu-vm", verb, name, *location, *args])


def install_command() -> str:
  """What each worker runs to install the copied archive (Python 3.11 from Ubuntu's packages:
  the TPU images ship 3.10; the pinned set, then gato_jax with libtpu)."""
  return " && ".join(
    [
      "sudo apt-get update -qq",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv",
      f"rm -rf {REMOTE_DIR} && mkdir {REMOTE_DIR} && tar -xzf {ARCHIVE} -C {REMOTE_DIR}",
      f"cd {REMOTE_DIR} && python3.11 -m venv .venv",
      ".venv/bin/pip install -q -r requirements.txt",
      '.venv/bin/pip install -q -e ".[tpu]"',
    ]
  )


def launch_script(
  tpu: TpuSlice,
  name: str,
  worker_argv: Sequence[str],
  zone: str | None = None,
  project: str | None = None,
  spot: bool = False,
  title: str = "",
) -> list[str]:
  """The shell lines (comments and commands) that run `worker_argv` on a new slice `name`.

  Args:
    tpu: the slice.
    name: the TPU's name.
    worker_argv: the command every host runs, from the repository root, without the
      interpreter (e.g. ["experiments/train.py", "--config=...", "--workdir=gs://..."]).
    zone, project: where the slice lives; None leaves them to gcloud's defaults
      (`gcloud config set compute/zone ...`, `core/project`).
    spot: create a Spot slice (cheaper; preempted when Cloud TPU needs it back).
    title: what the run is, for the first comment.
  """
  where = (zone, project)
  run = f"cd {REMOTE_DIR} && nohup .venv/bin/python {shlex.join(worker_argv)}"
  # Detached from the ssh session (all three streams redirected), so that ssh returns and a
  # dropped connection does not stop training; rerunning this line resumes after a preemption.
  run += f" > {LOG_FILE} 2>&1 < /dev/null &"
  hosts = f"{tpu.hosts} hosts" if tpu.hosts > 1 else "1 host"
  return [
    f"# {title or name}: slice preset {tpu.preset or '-'}, {tpu.accelerator_type}"
    f" ({tpu.topology}, {tpu.chips} chips, {hosts})",
    "# 1. Create the slice.",
    _gcloud(
      "create",
      name,
      *where,
      f"--accelerator-type={tpu.accelerator_type}",
      f"--version={tpu.runtime_version}",
      *(["--spot"] if spot else []),
    ),
    "# 2. Install this checkout's HEAD with the [tpu] extra on every worker.",
    shlex.join(["git", "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"]),
    shlex.join(
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", ARCHIVE, f"{name}:"]
      + [f"--zone={zone}"] * bool(zone)
      + [f"--project={project}"] * bool(project)
      + ["--worker=all"]
    ),
    _gcloud("ssh", name, *where, "--worker=all", f"--command={install_command()}"),
    "# 3. Train: the same command on every host (rerun it to resume from the newest checkpoint).",
    _gcloud("ssh", name, *where, "--worker=all", f"--command={run}"),
    "# 4. Follow worker 0's log (Ctrl-C stops following, not training).",
    _gcloud("ssh", name, *where, "--worker=0", f"--command=tail -f {REMOTE_DIR}/{LOG_FILE}"),
    "# 5. Delete the slice when the run is over (the run folder stays in the bucket).",
    _gcloud("delete", name, *where, "--quiet"),
  ]


def rehearsal_devices(config: ml_collections.ConfigDict, hosts: int) -> int:
  """Fake CPU devices per process: the slice's devices per host, or the mesh's over `hosts`."""
  tpu = config_slice(config)
  if tpu is not None:
    if hosts != tpu.hosts:
      raise ValueError(
        f"{tpu.topology} has {tpu.hosts} hosts; rehearse it with --hosts={tpu.hosts}, not {hosts}"
      )
    return tpu.devices_per_host
  shape = tuple(config.mesh.shape)
  if any(d < 1 for d in shape):
    raise ValueError(
      f"mesh.shape {shape} leaves the device count open; rehearsing needs every axis"
      " (e.g. --config.mesh.shape=1,8,1) or a slice preset"
    )
  if math.prod(shape) % hosts:
    raise ValueError(f"mesh.shape {shape}'s {math.prod(shape)} devices do not split over {hosts}")
  return math.prod(shape) // hosts


def process_flags(process_id: int, hosts: int, port: int) -> list[str]:
  """How one rehearsal process learns what a TPU VM's environment tells JAX on a pod."""
  if hosts == 1:
    return []
  return [
    f"--config.mesh.coordinator_address=127.0.0.1:{port}",
    f"--config.mesh.num_processes={hosts}",
    f"--config.mesh.process_id={process_id}",
    "--config.mesh.cpu_collectives=gloo",
  ]


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (a coordinator's, a local server's)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _exit_status(returncode: int) -> int:
  """A child's status as a shell reports it (killed by signal N: 128 + N)."""
  return 128 - returncode if returncode < 0 else returncode


def xla_flags_with_devices(xla_flags: str, devices: int | None) -> str:
  """XLA_FLAGS `xla_flags` with the fake CPU device count set to `devices` (None: dropped, so one
  device); the other flags are kept."""
  flags = [f for f in xla_flags.split() if "host_platform_device_count" not in f]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(flags)


def _worker_env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags_with_devices(env.get("XLA_FLAGS", ""), devices)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"  # Lines reach the prefixing reader as they are written.
  return env


def rehearse(
  worker_argv: Sequence[str],
  hosts: int,
  devices_per_host: int,
  out: TextIO | None = None,
  failure_grace_seconds: float = FAILURE_GRACE_SECONDS,
) -> int:
  """Runs `worker_argv` (as `launch_script` would on each host) as `hosts` local processes.

  Returns the workers' exit status when they all agree, else the first failure's. A SIGTERM or
  SIGINT to this process is passed on to every worker; a second one kills them.
  """
  out = out or sys.stdout
  lock = threading.Lock()

  def say(line: str) -> None:
    with lock:
      out.write(line + "\n")
      out.flush()

  port = free_port()
  procs = []
  for i in range(hosts):
    argv = [sys.executable, *worker_argv, *process_flags(i, hosts, port)]
    # A session of its own: a terminal's Ctrl-C reaches the workers once, through the handler.
    procs.append(
      subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_worker_env(devices_per_host),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
      )
    )
    say(f"[pod] worker {i}: pid {procs[-1].pid}: {shlex.join(argv[1:])}")

  def relay(i: int, stream) -> None:
    for line in stream:
      say(f"[worker {i}] {line.rstrip()}")

  readers = [
    threading.Thread(target=relay, args=(i, p.stdout), daemon=True) for i, p in enumerate(procs)
  ]
  for reader in readers:
    reader.start()

  signals_seen = []

  def forward(signum, frame) -> None:
    del frame
    signals_seen.append(signum)
    kill = len(signals_seen) > 1
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL if kill else signum)
    what = "SIGKILL" if kill else signal.Signals(signum).name
    say(f"[pod] {signal.Signals(signum).name}: sent {what} to the running workers")

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    failures, deadline = [], None
    while any(p.poll() is None for p in procs):
      for i, p in enumerate(procs):
        if p.returncode not in (None, 0) and i not in failures:
          failures.append(i)
      if failures and deadline is None:
        deadline = time.monotonic() + failure_grace_seconds
      if deadline is not None and time.monotonic() > deadline:
        for p in procs:
          if p.poll() is None:
            p.kill()
        say(f"[pod] killed the workers still running {failure_grace_seconds:.0f} s after a failure")
        deadline = math.inf
      time.sleep(0.1)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for reader in readers:
    reader.join()
  statuses = [_exit_status(p.returncode) for p in procs]
  for i, status in enumerate(statuses):
    say(f"[pod] worker {i} exited with status {status}")
  for i, p in enumerate(procs):
    if p.returncode and i not in failures:
      failures.append(i)
  if len(set(statuses)) == 1:
    return statuses[0]
  return statuses[failures[0]] if failures else 0
