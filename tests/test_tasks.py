"""SeqIO Tasks over stored episodes: exact tokens, filtering, custom public-style datasets, and
a mixture of real domains feeding the model's train step."""

import glob
import os
import re

import jax
import numpy as np
import pytest

from gato_jax import sharding
from gato_jax import tokenizer as T
from gato_jax.data import mixture, pipeline, rlds_io, tasks
from gato_jax.sources import builtin, generation
from gato_jax.sources import episodes as episodes_lib
from gato_jax.envs import registry
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training.step import create_train_state, make_train_step


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  quiet = lambda line: None
  generation.generate_task(
    "babyai/GoToRedBall", path, num_episodes=4, stats_episodes=4, shard_episodes=4, progress=quiet
  )
  generation.generate_task(
    "dm_control/cartpole-balance",
    path,
    num_episodes=2,
    stats_episodes=2,
    shard_episodes=2,
    policy="random",
    progress=quiet,
  )
  # Random episodes of a gymnax task: statistics written here stand in for its PPO expert's,
  # which tests do not train (only the random policy's data is read below, unfiltered).
  episodes_lib.save_stats(
    episodes_lib.TaskStats(
      "gymnax/Pendulum-v1",
      random_return=-1200.0,
      random_return_std=0.0,
      random_episodes=2,
      expert_agent="ppo",
      expert_return=-150.0,
      expert_episodes=2,
    ),
    path,
  )
  generation.generate_task(
    "gymnax/Pendulum-v1",
    path,
    num_episodes=2,
    stats_episodes=2,
    shard_episodes=2,
    policy="random",
    progress=quiet,
  )
  return path


def _register(data_dir, task, policy="expert", stats_task=None, name=None):
  env = registry.make_env(task)
  domain, _ = registry.split_task_name(task)
  source = rlds_io.dataset_dir(
    data_dir, generation.dataset_name(domain, policy), rlds_io.config_name(task)
  )
  name = name or tasks.seqio_name(task) + "_test"
  tasks.register_control_task(
    name, source, env.observation_spec, env.action_spec, data_dir=data_dir, stats_task=stats_task
  )
  return name, env, source


def test_task_examples_equal_direct_tokenization(data_dir):
  name, env, source = _register(data_dir, "babyai/GoToRedBall")
  groups = tasks.load_token_groups(name)
  stored = list(rlds_io.read_episodes(source))
  assert len(groups) == len(stored) == 4
  for group, episode in zip(groups, stored):
    expected = T.tokenize_episode(
      *episodes_lib.action_steps(episode), env.observation_spec, env.action_spec
    )
    for field in ("tokens", "kinds", "local_positions", "loss_mask", "timesteps"):
      np.testing.assert_array_equal(getattr(group, field), getattr(expected, field), err_msg=field)


def test_shards_partition_a_tasks_episodes(data_dir):
  name, _, _ = _register(data_dir, "babyai/GoToRedBall", name="gato.sharded_test")
  whole = [g.tokens.tobytes() for g in tasks.load_token_groups(name)]
  shards = [
    [g.tokens.tobytes() for g in tasks.load_token_groups(name, shard=(k, 2))] for k in range(2)
  ]
  assert sorted(shards[0] + shards[1]) == sorted(whole) and all(shards)
  assert not set(shards[0]) & set(shards[1])
  with pytest.raises(ValueError, match="outside"):
    tasks.load_token_groups(name, shard=(2, 2))
  with pytest.raises(ValueError, match="no episodes in split 'train' shard 4 of 5"):
    tasks.load_token_groups(name, shard=(4, 5))


def test_filter_uses_the_task_statistics(data_dir):
  name, _, source = _register(
    data_dir, "babyai/GoToRedBall", stats_task="babyai/GoToRedBall", name="gato.filtered_test"
  )
  stats = episodes_lib.load_stats(data_dir, "babyai/GoToRedBall")
  threshold = episodes_lib.return_threshold(stats)
  returns = [float(ep["episode_metadata"]["return"]) for ep in rlds_io.read_episodes(source)]
  kept = tasks.load_token_groups(name)
  assert len(kept) == sum(r >= threshold for r in returns)


def test_custom_task_from_foreign_keys(tmp_path):
  foreign = [
    {
      "steps": {
        "obs": {"joint_pos": np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)},
        "act": np.full((4, 1), 0.5, np.float32),
        "rew": np.ones(4, np.float32),
        "first": np.arange(4) == 0,
        "last": np.arange(4) == 3,
      },
      "episode_metadata": {"file_path": "ep0.npz"},
    }
  ]
  path = rlds_io.write_episodes(foreign, str(tmp_path), "public_set", "default")
  key_map = {
    "steps/observation/state": "steps/obs/joint_pos",
    "steps/action": "steps/act",
    "steps/reward": "steps/rew",
    "steps/is_first": "steps/first",
    "steps/is_last": "steps/last",
  }
  tasks.register_control_task(
    "public.arm",
    path,
    {"state": T.ContinuousSpec((2,))},
    T.ContinuousSpec((1,), mu_law=False),
    key_map=key_map,
  )
  (group,) = tasks.load_token_groups("public.arm")
  assert group.num_tokens == 3 * 4  # Three steps with actions: 2 state values, |, 1 action.
  np.testing.assert_array_equal(
    group.tokens[3::4], [T.tokenize_continuous(np.float32(0.5), mu_law=False)] * 3
  )
  with pytest.raises(KeyError, match="lack 'nope'"):
    tasks.register_control_task(
      "public.bad",
      path,
      {"nope": T.ContinuousSpec((2,))},
      T.ContinuousSpec((1,), mu_law=False),
      key_map=key_map,
    )
    tasks.load_token_groups("public.bad")


def test_mixture_of_domains_feeds_the_train_step(data_dir):
  babyai, _, _ = _register(data_dir, "babyai/GoToRedBall")
  cartpole, _, _ = _register(data_dir, "dm_control/cartpole-balance", policy="random")
  pendulum, _, _ = _register(data_dir, "gymnax/Pendulum-v1", policy="random")
  pools = {name: tasks.load_token_groups(name) for name in (babyai, cartpole, pendulum)}
  it = mixture.MixtureIterator(
    pools,
    {name: 1.0 for name in pools},
    batch_size=6,
    context=512,
    max_patches=0,
    patch_dim=768,
    seed=0,
  )
  # The first batch that holds every domain.
  step = next(
    step for step in range(50) if {it.row_task(step, row) for row in range(6)} == set(pools)
  )
  batch, _ = it.batch_at(step)
  cfg = ModelConfig.from_size("tiny")
  state, trainer = create_train_state(
    cfg,
    OptimizerConfig(warmup_steps=1, decay_steps=10),
    sharding.create_mesh((1, 1, 1), jax.devices()[:1]),
    "fsdp",
    jax.random.key(0),
  )
  state, metrics = make_train_step(trainer, batch)(state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["action_tokens"]) > 0
  assert float(metrics["text_tokens"]) > 0  # BabyAI missions are text targets.


def test_unknown_task_is_a_clear_error():
  import seqio

  with pytest.raises(ValueError, match="gato.no_such_task"):
    seqio.get_mixture_or_task("gato.no_such_task")


def test_builtin_tasks_register_explicitly_for_a_data_dir(tmp_path):
  import subprocess
  import sys

  # Importing registers nothing: the run's data directory decides what the tasks read.
  code = (
    "import seqio; from gato_jax.data import tasks;"
    " assert not [n for n in seqio.TaskRegistry.names() if n.startswith('gato.')];"
    " assert not tasks.CATALOGUE"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  import seqio

  names = builtin.register_builtin_tasks(str(tmp_path))
  assert len(names) >= 26
  for task in ("babyai/BossLevel", "dm_control/walker-walk", "babyai/GoToRedBall"):
    assert task in names and tasks.seqio_name(task) in seqio.TaskRegistry.names()
  assert tasks.seqio_name("dm_control/walker-walk") == "gato.dm_control.walker_walk"
  # One entry per task, found by its name or by its SeqIO name.
  info = tasks.task_info("babyai/GoToRedBall")
  assert tasks.task_info("gato.babyai.GoToRedBall") is info
  assert (info.name, info.domain, info.kind, info.builtin) == (
    "babyai/GoToRedBall",
    "babyai",
    "control",
    True,
  )
  assert info.source.startswith(str(tmp_path)) and not info.has_data()
  assert tasks.task_info("vision_language/shapes_vqa").kind == "vision_language"
  assert tasks.canonical_name("gato.text.cpython_docs") == "text/cpython_docs"
  assert tasks.canonical_name("user.task") == "user.task"
  assert pipeline.store_dir("/d", "gato.text.cpython_docs") == "/d/gato.text.cpython_docs/train"
  assert pipeline.store_dir("/d", "text/cpython_docs") == "/d/gato.text.cpython_docs/train"
  assert tasks.available_builtin_tasks() == {}
  with pytest.raises(KeyError, match="'gato.nope' is not in the gato_jax task catalogue"):
    tasks.task_info("gato.nope")


def test_builtin_tasks_read_generated_data(data_dir):
  try:
    builtin.register_builtin_tasks(data_dir)
    groups = tasks.load_token_groups("babyai/GoToRedBall")
    stats = episodes_lib.load_stats(data_dir, "babyai/GoToRedBall")
    assert 1 <= len(groups) <= 4 and stats.expert_return > stats.random_return
    # The built-in mixture presets are seqio Mixtures over the tasks with data.
    from gato_jax.data import presets
    import seqio

    assert presets.seqio_weights("control") == {"babyai/GoToRedBall": 1.0}
    available = tasks.available_builtin_tasks()
    for spec in ("babyai/GoToRedBall", "gato.babyai.GoToRedBall=1", "babyai/GoToRedBall=2"):
      assert presets.resolve(spec, available) == {"babyai/GoToRedBall": 1.0}
    assert seqio.get_mixture_or_task("paper").name == "paper"
  finally:
    builtin.register_builtin_tasks()  # Back to the default data directory for other tests.


def test_text_and_vision_language_tasks_join_the_mixture(data_dir, tmp_path):
  from gato_jax.sources import example_sets

  tfds = rlds_io.import_tfds()
  docs = ["The agent opens the door.", "Pick up the red ball. " * 40, "Go to the green key."]
  text_dir = example_sets.write_examples(
    {"train": [{"text": d} for d in docs]},
    {"text": tfds.features.Text()},
    str(tmp_path),
    "docs",
    None,
  )
  tasks.register_example_task("test.docs", "text", text_dir, splits=("train",))
  documents = tasks.load_token_groups("test.docs")
  tokenizer = T.TextTokenizer()
  np.testing.assert_array_equal(
    documents[0].tokens, list(tokenizer.encode(docs[0])) + [tokenizer.eos_id]
  )
  assert documents[1].loss_mask.all() and (documents[1].kinds == T.TokenKind.TEXT).all()

  generation_dir = str(tmp_path / "vl")
  example_sets.generate_task(
    "vision_language/shapes_captions", generation_dir, 12, progress=lambda line: None
  )
  source = rlds_io.dataset_dir(generation_dir, "gato_vision_language", "shapes_captions")
  tasks.register_example_task("test.captions", "captioning", source)
  captions = tasks.load_token_groups("test.captions")
  assert captions[0].patches.shape == (16, 768)  # 64 x 64 scenes: 4 x 4 patches, then the text.
  assert (captions[0].kinds[:16] == T.TokenKind.IMAGE_PATCH).all() and captions[0].loss_mask[
    16:
  ].all()

  babyai, _, _ = _register(data_dir, "babyai/GoToRedBall")
  pools = {
    "test.docs": documents,
    "test.captions": captions,
    babyai: tasks.load_token_groups(babyai),
  }
  it = mixture.MixtureIterator(
    pools,
    {name: 1.0 for name in pools},
    batch_size=6,
    context=384,
    max_patches=80,
    patch_dim=768,
    seed=0,
    kinds={name: tasks.task_info(name).kind for name in pools},
  )
  batch, row_tasks = it.batch_at(0)
  for row, task in enumerate(row_tasks):
    segments = batch.segment_ids[row]
    if task == "test.docs":
      assert (segments > 0).all()  # Documents fill the row, one segment each.
    elif task == "test.captions":
      patches = int((batch.kinds[row] == T.TokenKind.IMAGE_PATCH).sum())
      assert patches % 16 == 0 and 16 <= patches <= 80  # Whole (image, caption) pairs, at most 5.
  cfg = ModelConfig.from_size("tiny")
  state, trainer = create_train_state(
    cfg,
    OptimizerConfig(warmup_steps=1, decay_steps=10),
    sharding.create_mesh((1, 1, 1), jax.devices()[:1]),
    "fsdp",
    jax.random.key(0),
  )
  _, metrics = make_train_step(trainer, batch)(state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["text_tokens"]) > 0


def test_missing_data_messages_name_the_real_cause(data_dir, tmp_path):
  from gato_jax.data import presets

  try:
    builtin.register_builtin_tasks(data_dir)
    available = tasks.available_builtin_tasks()
    with pytest.raises(
      ValueError,
      match="^mixture task 'babyai/GoToRedBal': unknown task"
      " 'babyai/GoToRedBal'; did you mean"
      " 'babyai/GoToRedBall'\\?$",
    ):
      presets.resolve("babyai/GoToRedBal=1", available)
    # A generation killed mid-write left TFDS's folder (an older writer's leftover).
    source = tasks.task_info("babyai/GoToLocal").source
    os.makedirs(os.path.join(os.path.dirname(source), "incomplete.ABC123_1.0.0"))
    with pytest.raises(
      ValueError,
      match="^mixture task 'babyai/GoToLocal': task"
      " 'babyai/GoToLocal' has no data: its generation was"
      " interrupted \\(left .*incomplete.ABC123_1.0.0\\)",
    ):
      presets.resolve("babyai/GoToLocal=1", available)
    # The next writer of that dataset removes the dead writer's folder.
    generation.generate_task(
      "babyai/GoToLocal",
      data_dir,
      num_episodes=2,
      stats_episodes=2,
      shard_episodes=2,
      progress=lambda line: None,
    )
    assert not glob.glob(os.path.join(os.path.dirname(source), "incomplete.*"))

    missing = str(tmp_path / "no_such_dir")
    builtin.register_builtin_tasks(missing)
    message = re.escape(f"the data directory {missing} does not exist (config.data.data_dir)")
    with pytest.raises(ValueError, match=f"^mixture task 'babyai/GoToLocal': {message}$"):
      presets.resolve("babyai/GoToLocal=1", {})
    with pytest.raises(
      ValueError, match=f"^mixture 'babyai=1' names no task with data \\({message}"
    ):
      presets.resolve("babyai=1", {})
  finally:
    builtin.register_builtin_tasks()  # Back to the default data directory for other tests.


def test_stored_episodes_that_do_not_fit_the_specs_are_one_clear_error(data_dir):
  env = registry.make_env("babyai/GoToRedBall")
  source = rlds_io.dataset_dir(
    data_dir, generation.dataset_name("babyai", "expert"), rlds_io.config_name("babyai/GoToRedBall")
  )
  observation_spec = {**env.observation_spec, "grid": T.DiscreteSpec((3, 3))}
  tasks.register_control_task("custom.misfit_test", source, observation_spec, env.action_spec)
  with pytest.raises(ValueError) as raised:
    tasks.load_token_groups("custom.misfit_test")
  assert str(raised.value) == (
    "task 'custom.misfit_test': its stored episodes do not fit its specs: observation 'grid'"
    " must have shape [4, 3, 3] (spec [3, 3]), got [4, 7, 7, 3]"
  )
