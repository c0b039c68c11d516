r"""Teacher-forced action metrics of a checkpoint on its control tasks' stored expert episodes.

  python tools/action_fidelity.py --config=experiments/configs/gato.py:small,generalist \
      --workdir=~/.cache/gato_jax/generalist --tasks=dm_control/cartpole-balance,gymnax/CartPole-v1

Per task: action tokens, greedy accuracy, NLL per action token, how often the data repeats the
previous timestep's action (target repeat) against how often the model predicts a repeat, and the
accuracy where the expert changes its action (`gato_jax.evaluation.teacher_forced`). A model that
copies its previous action shows prediction repeat near 100% and accuracy on changes near 0.
--tasks defaults to the config's control tasks (`eval.tasks`, else the mixture's). The table goes
to the console, the figures as JSON to --output when given.
"""

import os

os.environ.setdefault("MUJOCO_GL", "disable")  # Nothing is rendered: episodes are stored.

from absl import app, flags
from ml_collections import config_flags

from gato_jax import files, launch
from gato_jax.model import ModelConfig

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", None, "Default: the newest.")
_TASKS = flags.DEFINE_list("tasks", [], "Control tasks (default: the config's).")
_EPISODES = flags.DEFINE_integer("episodes", 4, "Stored episodes per task (the first ones).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Windows per forward pass.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the figures go as JSON (task -> figures).")
flags.mark_flags_as_required(["config", "workdir"])

COLUMNS = (
  ("action_tokens", "action tokens", "{:d}"),
  ("accuracy", "accuracy", "{:.1%}"),
  ("nll", "NLL (nats)", "{:.3f}"),
  ("target_repeat", "target repeat", "{:.1%}"),
  ("prediction_repeat", "prediction repeat", "{:.1%}"),
  ("accuracy_on_changes", "accuracy on changes", "{:.1%}"),
)


def table(rows: dict[str, dict]) -> str:
  """Markdown: one row per task, None shown as a dash."""
  lines = [
    "| task | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
    "| --- |" + " ---: |" * len(COLUMNS),
  ]
  for task, row in rows.items():
    cells = ["-" if row[key] is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from gato_jax.data import catalogue, pipeline
  from gato_jax.evaluation import evaluator, teacher_forced

  if _EPISODES.value < 1 or _BATCH_SIZE.value < 1:
    raise app.UsageError("--episodes and --batch_size must be positive")
  config = _CONFIG.value
  pipeline.register_config_tasks(config.data)
  names = _TASKS.value or evaluator.eval_tasks(config)
  if not names:
    raise app.UsageError(f"no control tasks in mixture {config.data.mixture!r}; name --tasks")
  stores = {}
  for name in names:
    info = catalogue.task_info(name)  # Raises for unknown tasks.
    if info.kind != "control":
      raise app.UsageError(f"{name} is a {info.kind} task; these metrics are of control tasks")
    stores[name] = pipeline.task_store(name, config.data)
  params, step = evaluator.restore_params(config, _WORKDIR.value, _CHECKPOINT_STEP.value)
  model_config = ModelConfig.from_dict(config.model)
  rows = {}
  for name, store in stores.items():
    episodes = (store.read(i) for i in range(min(_EPISODES.value, len(store))))
    rows[name] = teacher_forced.task_fidelity(
      model_config,
      params,
      episodes,
      config.train.seq_len,
      _BATCH_SIZE.value,
      name,
      config.train.get("action_loss_vocab", "full"),
    )
    print(f"{name}: {rows[name]['windows']} windows scored", flush=True)
  print(f"step {step}, first {_EPISODES.value} stored episodes per task, teacher-forced, greedy")
  print(table(rows))
  if _OUTPUT.value:
    files.write_json(os.path.expanduser(_OUTPUT.value), {"step": step, "tasks": rows})


if __name__ == "__main__":
  launch.run(main)
