"""The trainer end to end: smoke run on a (2, 2, 2) mesh, exact resume, launcher, bad configs."""

import errno
import os
import pathlib
import shutil
import socket

import orbax.checkpoint as ocp
import pytest

from gato_jax import checkpoint, train
from gato_jax import tokenizer as T
from gato_jax.data import presets
from gato_jax.sources import generation
from gato_jax.training import metrics_log

from helpers.configs import smoke_config
from helpers.scripts import run_python


def _losses(workdir: str) -> list[tuple[int, float]]:
  """(step, loss) of every logged training step (evaluation records carry no loss)."""
  return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(workdir) if "loss" in r]


ROOT = pathlib.Path(__file__).parents[1]


def test_smoke_run_and_exact_resume(data_dir, tmp_path, smoke_run):
  full, final = smoke_run
  records = metrics_log.read_metrics(str(full))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert all(r["loss"] > 0 and r["action_tokens"] > 0 for r in records)
  # Both tasks are BabyAI levels: the per-domain loss is the loss.
  assert all(r["loss/babyai"] == pytest.approx(r["loss"], rel=1e-5) for r in records)
  assert final["loss"] == records[-1]["loss"]
  assert sorted(os.listdir(full / "checkpoints")) == ["2", "4"]

  # Preempted at step 2 (after its checkpoint), then the same command again.
  interrupted = tmp_path / "interrupted"
  train.train_and_evaluate(smoke_config(data_dir, **{"train.stop_at_step": 2}), str(interrupted))
  assert [r["step"] for r in metrics_log.read_metrics(str(interrupted))] == [1, 2]
  train.train_and_evaluate(smoke_config(data_dir), str(interrupted))
  resumed = metrics_log.read_metrics(str(interrupted))
  assert [r["step"] for r in resumed] == [1, 2, 3, 4]
  for a, b in zip(resumed, records):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
    assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-6)


def test_launcher_trains_a_seqio_mixture_registered_by_user_code(data_dir, tmp_path):
  # A user module, named by data.imports, mixes a built-in task into a seqio Mixture of its own.
  (tmp_path / "user_mixtures.py").write_text(
    "import seqio\n"
    "seqio.MixtureRegistry.add('user_mix', [('gato.babyai.GoToLocal', 3),"
    " ('gato.babyai.GoToRedBall', 1)])\n"
  )
  workdir = tmp_path / "run"
  out = run_python(
    "experiments/train.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.train.steps=1",
    "--config.mesh.shape=-1,1,1",
    "--config.mesh.rules=data_parallel",
    "--config.data.imports=user_mixtures",
    "--config.data.mixture=user_mix",
    env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
    check=False,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  # The realised rates are logged, under the tasks' names (not their SeqIO names).
  assert "75.00%  babyai/GoToLocal" in out.stderr
  (record,) = metrics_log.read_metrics(str(workdir))
  assert record["step"] == 1 and record["loss"] > 0


def _launch(workdir, data_dir, *overrides):
  return run_python(
    "experiments/train.py",
    "--config=experiments/configs/gato.py:tiny,smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    *overrides,
    check=False,
  )


def test_second_trainer_on_a_running_workdir_refuses(data_dir, tmp_path, monkeypatch, smoke_run):
  workdir, second = tmp_path / "run", []
  write = metrics_log.MetricsLogger.write

  def write_then_start_a_second_trainer(self, step, metrics):
    if not second:  # While this (the first) trainer holds the workdir: the same command.
      second.append(_launch(workdir, data_dir))
    return write(self, step, metrics)

  monkeypatch.setattr(metrics_log.MetricsLogger, "write", write_then_start_a_second_trainer)
  train.train_and_evaluate(smoke_config(data_dir), str(workdir))
  monkeypatch.undo()
  (refused,) = second
  assert refused.returncode == 1
  assert refused.stderr.splitlines()[-1] == (
    f"error: workdir {workdir} is in use by pid {os.getpid()} on host {socket.gethostname()};"
    " wait for it to finish or use another --workdir"
  )
  # The first run finished alone: its own four steps, each once, as an undisturbed run logs them.
  assert _losses(str(workdir)) == _losses(str(smoke_run[0]))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


def test_corrupt_newest_checkpoint_is_repaired_by_the_next_run(data_dir, tmp_path, smoke_run):
  workdir = tmp_path / "run"
  shutil.copytree(smoke_run[0], workdir)  # A finished run's workdir.
  losses = _losses(str(workdir))
  for path in (workdir / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
      path.write_bytes(b"\0" * 7)
  train.train_and_evaluate(smoke_config(data_dir), str(workdir))  # Resumes from 2, saves 4 again.
  (moved,) = os.listdir(workdir / "checkpoints" / "quarantine")
  assert moved.startswith("4-")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "quarantine"]
  assert _losses(str(workdir)) == losses  # Steps 3 and 4 replayed, logged once.
  train.train_and_evaluate(smoke_config(data_dir), str(workdir))  # The new step 4 reads: no change.
  assert len(os.listdir(workdir / "checkpoints" / "quarantine")) == 1
  assert _losses(str(workdir)) == losses


def test_full_disk_stops_with_one_error_and_no_temporary_folder(data_dir, tmp_path, monkeypatch):
  async def full_disk(self, item, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    train.train_and_evaluate(smoke_config(data_dir), str(tmp_path))
  monkeypatch.undo()
  assert str(raised.value) == (
    f"could not write checkpoint {tmp_path}/checkpoints/2: no space"
    " left on device; the earlier checkpoints are intact"
  )
  assert os.listdir(tmp_path / "checkpoints") == []  # No 2.orbax-checkpoint-tmp left.
  assert [r["step"] for r in metrics_log.read_metrics(str(tmp_path))] == [1, 2]
  train.train_and_evaluate(smoke_config(data_dir), str(tmp_path))  # Space again: the run recovers.
  assert [step for step, _ in _losses(str(tmp_path))] == [1, 2, 3, 4]


def test_misspelled_config_field_is_one_line(data_dir, tmp_path):
  out = _launch(tmp_path, data_dir, "--config.train.stepz=3")
  assert out.returncode == 1
  assert out.stderr.splitlines()[-1] == (
    "error: unknown config field train.stepz; did you mean train.steps? (in --config.train.stepz)"
  )


@pytest.fixture(scope="module")
def atari_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("atari_data"))
  generation.generate_task(
    "atari/Breakout",
    path,
    num_episodes=2,
    stats_episodes=2,
    shard_episodes=2,
    policy="random",
    progress=lambda line: None,
  )
  return path


def test_default_config_trains_an_image_control_task(atari_dir, tmp_path):
  from gato_jax.data import rlds_io, tasks
  from gato_jax.envs import registry

  env = registry.make_env("atari/Breakout")
  source = rlds_io.dataset_dir(
    atari_dir, generation.dataset_name("atari", "random"), rlds_io.config_name("atari/Breakout")
  )
  tasks.register_control_task(
    "test.atari_breakout",
    source,
    env.observation_spec,
    env.action_spec,
    data_dir=atari_dir,
    stats_task=None,
  )
  from gato_jax.configs import gato

  config = gato.get_config()  # The default seq_len and patch settings.
  config.data.data_dir = atari_dir
  config.data.mixture = "test.atari_breakout"  # A registered seqio Task is a mixture too.
  config.train.batch_size, config.train.steps = 8, 1
  config.checkpoint.async_save, config.log.every_steps, config.log.tensorboard = False, 1, False
  assert config.train.seq_len == 1024
  data = train.build_data(config, patch_dim=768)
  # 80x80 frames: 25 patches of a 27-token timestep, so 1024 tokens hold up to 949 patches.
  assert data.max_patches == 949
  batch = data.host_batch(0)
  patches_per_row = (batch.kinds == T.TokenKind.IMAGE_PATCH).sum(axis=1)
  assert patches_per_row.max() > 256  # More than the old fixed budget.
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record["loss"] > 0 and record["action_tokens"] > 0


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"data.mixture": "babyai/NoSuchLevel=1"}, "unknown task 'babyai/NoSuchLevel'"),
    ({"data.data_dir": "/no/such/dir"}, "the data directory /no/such/dir does not exist"),
    ({"data.mixture": "babyai"}, "must be name=weight"),
    ({"mesh.shape": (3, 1, 1)}, "needs 3 devices, but 8"),
    ({"train.batch_size": 6}, "not divisible by the 4 data-parallel shards"),
    ({"train.stop_at_step": 9}, "stop_at_step must be in"),
  ],
)
def test_bad_configs_fail_at_start(data_dir, tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(smoke_config(data_dir, **overrides), str(tmp_path))


def test_mixture_presets():
  paper = presets.paper_weights()
  assert paper["babyai"] == 9.06 and paper["vision_language"] == pytest.approx(1.34)
  available = {"babyai": ["babyai/A", "babyai/B"], "dm_control": ["dm_control/C"]}
  weights = presets.resolve("babyai=1,dm_control=1,atari=5", available)  # atari: no data.
  assert weights == {"babyai/A": 0.25, "babyai/B": 0.25, "dm_control/C": 0.5}
  # The presets are plain data, expanded over the tasks with data (register_mixtures registers
  # the result as a seqio.Mixture, which `resolve` then prefers).
  paper = presets.expand(presets.parse("paper"), available, quiet=True)
  assert paper["dm_control/C"] / sum(paper.values()) == pytest.approx(4.62 / (9.06 + 4.62))


def test_loss_is_split_by_domain():
  import numpy as np
  from gato_jax.data import mixture
  from test_mixture import EPISODES  # Three tasks of tokenized episodes.

  pools = {"alpha/x": EPISODES["a"], "beta.y": EPISODES["b"]}
  it = mixture.MixtureIterator(
    pools,
    {"alpha/x": 1, "beta.y": 1},
    batch_size=8,
    context=40,
    max_patches=0,
    patch_dim=768,
    seed=0,
  )
  tasks_of_rows = [it.row_task(2, row) for row in range(8)]
  row_loss = np.arange(8, dtype=np.float32)
  row_targets = np.full(8, 2.0, np.float32)
  split = train._domain_losses(
    {"loss": 1.0, "row_loss_sum": row_loss, "row_targets": row_targets}, it, 2
  )
  alpha = [r for r, t in enumerate(tasks_of_rows) if t == "alpha/x"]
  beta = [r for r, t in enumerate(tasks_of_rows) if t == "beta.y"]
  assert alpha and beta
  # Not registered as built-ins: the domain comes from the name.
  assert split["loss/alpha"] == pytest.approx(sum(alpha) / (2 * len(alpha)))
  assert split["loss/beta"] == pytest.approx(sum(beta) / (2 * len(beta)))
  assert "row_loss_sum" not in split and split["loss"] == 1.0
