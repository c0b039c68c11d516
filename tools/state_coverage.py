r"""Which observation tokens a policy meets that a task's stored episodes never showed the model.

  python tools/state_coverage.py --tasks=dm_control/cartpole-balance,gymnax/Pendulum-v1
  python tools/state_coverage.py --tasks=dm_control/cartpole-balance --action_noise=0.3

For each continuous observation value of each task: the distinct mu-law bins its stored expert
episodes hold (--action_noise: the noisy set, gato_jax/envs/noise.py), and the share of the
tokens that probe rollouts from the evaluation's initial states meet that are among them
(gato_jax/sources/coverage.py). Probes (--probes): `random` (uniformly random actions), `zero`
(every action value 0), `expert` (the task's expert, noiseless). A low share for `random` means
a policy that leaves the expert's states reads embeddings that never trained. The table goes to
the console, one JSON line per task and value to --output when given.
"""

import json
import os

os.environ.setdefault("MUJOCO_GL", "disable")  # State tasks only: nothing is rendered.

from absl import app, flags

from gato_jax import files, launch

_TASKS = flags.DEFINE_list("tasks", None, "Control tasks with continuous observation values.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/.cache/gato_jax", "TFDS data directory.")
_ACTION_NOISE = flags.DEFINE_float(
  "action_noise", 0.0, "Read the stored set generated with this --action_noise (0: the clean one)."
)
_EPISODES = flags.DEFINE_integer("episodes", 0, "Stored episodes read, the first ones (0: all).")
_PROBES = flags.DEFINE_list("probes", ["random", "zero", "expert"], "Probe policies.")
_PROBE_EPISODES = flags.DEFINE_integer("probe_episodes", 5, "Episodes per probe.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "JSON lines: one per task and observation value.")
flags.mark_flag_as_required("tasks")

PROBES = ("random", "zero", "expert")
flags.register_validator(
  "probes", lambda names: set(names) <= set(PROBES), f"--probes takes {', '.join(PROBES)}"
)


def make_probe(name: str, env):
  """The policy of probe `name` in `env`."""
  from gato_jax.envs import policies, registry

  if name == "expert":
    return registry.make_expert(env)
  return policies.RandomPolicy(env) if name == "random" else policies.ZeroPolicy(env)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gato_jax.data import rlds_io
  from gato_jax.envs import registry
  from gato_jax.evaluation import rollouts
  from gato_jax.sources import coverage, episodes, generation

  data_dir = os.path.expanduser(_DATA_DIR.value)
  lines = []
  header = "| task | value | stored bins | " + " | ".join(f"{p} seen" for p in _PROBES.value) + " |"
  table = [header, "| --- | --- | ---: |" + " ---: |" * len(_PROBES.value)]
  for task in _TASKS.value:
    domain, _ = registry.split_task_name(task)
    source = rlds_io.dataset_dir(
      data_dir,
      generation.dataset_name(domain, "expert", _ACTION_NOISE.value),
      rlds_io.config_name(task),
    )
    if not os.path.isfile(os.path.join(source, "dataset_info.json")):
      raise app.UsageError(
        f"no stored episodes of {task} at {source}; generate them with tools/generate_data.py"
        + (f" --action_noise={_ACTION_NOISE.value:g}" if _ACTION_NOISE.value else "")
      )
    stored = list(rlds_io.read_episodes(source))
    if _EPISODES.value:
      stored = stored[: _EPISODES.value]
    env = registry.make_env(task)
    seeds = rollouts.eval_seeds(task, _PROBE_EPISODES.value)
    probes = {
      name: [o.episode for o in episodes.play(env, make_probe(name, env), seeds)]
      for name in _PROBES.value
    }
    rows = coverage.coverage(stored, probes, env.observation_spec)
    env.close()
    for row in rows:
      table.append(
        f"| {task} | {row.path} | {row.stored_bins} | "
        + " | ".join(f"{row.seen[p]:.1%}" for p in _PROBES.value)
        + " |"
      )
      lines.append(
        json.dumps(
          {
            "task": task,
            "action_noise": _ACTION_NOISE.value,
            "stored_episodes": len(stored),
            "value": row.path,
            "stored_bins": row.stored_bins,
            **{f"{p}_seen": round(row.seen[p], 4) for p in _PROBES.value},
          }
        )
      )
  print("\n".join(table), flush=True)
  if _OUTPUT.value:
    files.write_bytes(_OUTPUT.value, ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
  launch.run(main)
