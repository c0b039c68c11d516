r"""Scaling-sweep configs: `sweep.py:LADDER`, a ladder of model sizes trained with one recipe.

  python experiments/sweep.py --config=experiments/configs/sweep.py:cpu \
      --workdir=~/.cache/gato_jax/sweep_cpu
  python experiments/sweep.py --config=experiments/configs/sweep.py:paper --workdir=gs://... \
      --dispatch=print  # Each run's TPU slice launch (gcloud), then the report.

Ladders:
  cpu    tiny (0.58M), mini (1.76M), small (5.2M) on CartPole + Acrobot expert data that the
         sweep generates itself: 600 steps of 8 x 512 tokens each, evaluated every 200 steps.
         About 45 minutes on two cores.
  generalist  small with the `generalist` preset (experiments/generalist.py's data), peak
         learning rate 1e-3 / 2e-3 / 4e-3, 200 steps of 16 x 512 tokens each, judged by each
         domain's loss; 20-25 minutes a run on two cores.
  paper  79m, 364m, 1.18b, the paper's recipe (docs/design.md, Training): batch 512 x 1024 tokens,
         1M steps, AdamW 1e-4 with 15k warm-up and 10x cosine decay, the paper's mixture;
         evaluated every 100k steps (52B tokens). Each size on a v5p-8 slice (`slices`).

Every run is `base` (a gato.py config) with its axis values set. Hyper-parameter sweeps add
axes (gato_jax.sweep.plan): `--config.product="optimizer.peak_learning_rate=1e-3,3e-4"` trains
every size at every value; `--config.zip="train.batch_size=8,16;train.seed=0,1"` pairs values.
`--config.sizes="('small',)"` with a product axis sweeps hyper-parameters at one size.
"""

import ml_collections

from gato_jax.configs import gato


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  ladder = arg.strip()
  if ladder not in LADDERS:
    raise ValueError(f"unknown ladder {ladder!r}; ladders: {', '.join(LADDERS)}")
  config = ml_collections.ConfigDict()
  config.ladder = ladder  # Named in results and plots.
  config.sizes = ()  # model.size of each rung (a product axis); () keeps base's size.
  config.product = ""  # More axes, every combination: "key=v1,v2;key2=v3,v4" (dotted base keys).
  config.zip = ""  # Axes varied in step (equal lengths), crossed with the product axes.
  config.tokens = 0  # Training tokens per run; steps = ceil(tokens / (batch x seq_len)).
  config.eval_tokens = ()  # Token counts at which every run is evaluated (rounded up to a step).
  config.schedule_follows_budget = True  # optimizer.decay_steps = the run's steps.
  config.loss_window_steps = 1  # Training loss at a point: mean over this many steps before it.
  # "SIZE=PRESET;...": each size's gato.py slice preset (mesh, remat, microbatches); runs with one
  # print as pod launches (experiments/sweep.py --dispatch=print). Empty: no slice.
  config.slices = ""
  config.data = ml_collections.ConfigDict()
  config.data.tasks = ""  # "<domain>/<task>,...": expert data the sweep generates (resumably).
  config.data.episodes = 60  # Episodes per generated task.
  LADDERS[ladder](config)
  return config


def _cpu(config: ml_collections.ConfigDict) -> None:
  tasks = ("gymnax/CartPole-v1", "gymnax/Acrobot-v1")
  # The recipe is spelled out rather than taken from the quickstart preset, so that tuning the
  # quickstart never changes this ladder's runs (or breaks resuming them).
  base = gato.get_config("tiny")
  base.train.batch_size, base.train.seq_len, base.train.max_patches = 8, 512, 32
  base.optimizer.peak_learning_rate, base.optimizer.warmup_steps = 1e-3, 50
  base.model.stochastic_depth = 0.0
  base.data.mixture = "gymnax/CartPole-v1=1,gymnax/Acrobot-v1=1"
  base.data.data_dir = "~/.cache/gato_jax/sweep_data"  # Its own: episode counts stay its own.
  base.eval.tasks = ",".join(tasks)
  base.eval.episodes = 10  # Few, for time: an eval point costs 1-3 min on two cores.
  # The protocol the ladder's runs were evaluated with (end-of-episode prompt, greedy, refill).
  base.eval.prompt_from, base.eval.temperature, base.eval.memory = "end", 0.0, "refill"
  base.eval.batch_size = 10
  base.log.every_steps = 5
  base.log.tensorboard = False  # TensorFlow's import costs more than these runs' steps.
  base.checkpoint.every_steps = 200
  config.base = base
  config.sizes = ("tiny", "mini", "small")
  steps, tokens_per_step = 600, base.train.batch_size * base.train.seq_len
  config.tokens = steps * tokens_per_step  # 2.46M tokens.
  config.eval_tokens = tuple(s * tokens_per_step for s in (200, 400, 600))
  config.loss_window_steps = 50
  config.data.tasks = ",".join(tasks)
  config.data.episodes = 60


def _paper(config: ml_collections.ConfigDict) -> None:
  base = gato.get_config("79m")  # The paper's recipe; the sizes axis sets the rest.
  base.data.mixture = "paper"
  base.eval.every_steps = 0  # The sweep evaluates at its own token counts.
  config.base = base
  config.sizes = ("79m", "364m", "1.18b")
  # v5p-8 for every size: of the slice presets, the fastest estimated step on one host in
  # README's "Pod readiness" table (0.12, 0.56, 1.87 s); v5e-16 is faster but has four hosts,
  # and a sweep run evaluates between its segments on one host (gato_jax.sweep.runner).
  config.slices = "79m=v5p8;364m=v5p8;1.18b=v5p8"
  steps, tokens_per_step = 1_000_000, base.train.batch_size * base.train.seq_len
  config.tokens = steps * tokens_per_step  # 524B tokens, as the paper's 1M steps of 512 x 1024.
  config.eval_tokens = tuple(s * tokens_per_step for s in range(100_000, steps + 1, 100_000))
  config.loss_window_steps = 1000
  config.data.tasks = ""  # The paper mixture's data comes from tools/generate_data.py.


def _generalist(config: ml_collections.ConfigDict) -> None:
  # The generalist preset's recipe at one size, its learning rate swept. Judged by each domain's
  # training loss over the last 50 steps (text and action targets apart; logged every step): at
  # 200 steps most rollouts are still near the random policy, so the gymnax tasks' short
  # rollouts are a check, not the judge. A run is ~200 x 6-7 s on two cores.
  base = gato.get_config("small,generalist")
  base.optimizer.warmup_steps = 30
  base.log.every_steps = 1
  base.log.tensorboard = False
  base.checkpoint.every_steps = 50  # A killed run loses little; each run has one eval point.
  base.eval.tasks = "gymnax/CartPole-v1,gymnax/Acrobot-v1,gymnax/MountainCar-v0,gymnax/Pendulum-v1"
  base.eval.episodes, base.eval.batch_size, base.eval.task_episodes = 10, 10, ""
  config.base = base
  config.product = "optimizer.peak_learning_rate=1e-3,2e-3,4e-3"
  steps, tokens_per_step = 200, base.train.batch_size * base.train.seq_len
  config.tokens = steps * tokens_per_step  # 1.6M tokens a run.
  config.eval_tokens = (config.tokens,)
  config.loss_window_steps = 50
  config.data.tasks = ""  # experiments/generalist.py --stages=data prepares the mixture's data.


LADDERS = {"cpu": _cpu, "paper": _paper, "generalist": _generalist}
