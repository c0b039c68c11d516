r"""Gato configs: `gato.py:SIZE[,PRESET...]`, one knob for the model size.

SIZE is one of tiny, small, 79m, 364m, 1.18b (gato_jax.model.config.SIZES). Presets adjust the
recipe: `smoke` (a few tiny steps for tests), `quickstart` (the CPU demo), `generalist` (one model
over many domains on CPU, experiments/generalist.py), and TPU slices for the
paper sizes at the paper's batch: `v4_8`, `v5e16`, `v5p8` (mesh, remat and gradient accumulation
that fit, checked with tools/aot_compile.py without the slice).

  python tools/model_summary.py --config=experiments/configs/gato.py:79m
  python experiments/train.py --config=experiments/configs/gato.py:1.18b,v5e16 --workdir=...
  python tools/bench/train_step.py --config=experiments/configs/gato.py:small \
      --config.train.batch_size=8 --config.mesh.shape=1,1,1
"""

import ml_collections

from gato_jax.model.config import SIZES


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  size, *presets = [part.strip() for part in arg.split(",") if part.strip()] or ["tiny"]
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r} in config arg {arg!r}; sizes: {sorted(SIZES)}")
  config = ml_collections.ConfigDict()
  config.arg = arg  # What produced this config, for logs.

  config.model = ml_collections.ConfigDict()
  config.model.size = size  # Row of the size table; the fields below override it.
  config.model.stochastic_depth = 0.1  # Per-residual-branch skip probability (training only).
  config.model.dropout = 0.0  # Residual-branch dropout (training only).
  config.model.dtype = SIZES[size].get("dtype", "bfloat16")  # Activation/matmul dtype.
  # gelu | geglu (the paper's feed-forward; the paper sizes' default, see ModelConfig.mlp_dim).
  config.model.mlp_activation = SIZES[size].get("mlp_activation", "gelu")
  config.model.param_dtype = "float32"  # Parameters and optimizer state.
  config.model.scan_layers = True  # Scan over layers: compile time flat in depth.
  config.model.remat_policy = (
    "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  )
  config.model.attention_impl = ml_collections.config_dict.placeholder(str)  # None | xla | cudnn
  config.model.max_decode_length = 1024  # Key/value cache length when acting.
  # Share of a value bin's initial embedding that is smooth in the bin (0: i.i.d. like text ids).
  config.model.value_init_correlation = 0.0
  config.model.position_encoding = "none"  # none (the paper's) | rope (rotary, relative offsets).

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.peak_learning_rate = 1e-4  # After warm-up.
  config.optimizer.initial_learning_rate = 1e-7  # Warm-up start.
  config.optimizer.warmup_steps = 15_000  # Linear warm-up length.
  config.optimizer.decay_steps = 1_000_000  # Cosine schedule length (warm-up included).
  config.optimizer.decay_factor = 10.0  # Final lr = peak / decay_factor.
  config.optimizer.b1 = 0.9  # Adam beta1.
  config.optimizer.b2 = 0.95  # Adam beta2.
  config.optimizer.eps = 1e-8  # Adam epsilon.
  config.optimizer.weight_decay = 0.1  # Decoupled, on matrices and tables only.
  config.optimizer.grad_clip_norm = 1.0  # Global-norm clipping.

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 512  # Global sequences per step.
  config.train.seq_len = 1024  # Tokens per sequence (the context).
  # Patch slots per sequence: -1 derives the most any row of the mixture can hold from the context
  # and the data (an 80x80 Atari window of 1024 tokens: ~950); >= 0 fixes it (checked at start).
  config.train.max_patches = -1
  config.train.steps = 1_000_000  # Total optimiser steps.
  config.train.seed = 0  # Parameter init and step RNG.
  config.train.stop_at_step = 0  # >0: stop (after saving) at this step, as a preemption would.
  config.train.logits_at_targets_only = True  # Project to the vocabulary only where loss counts.
  # Action targets' softmax: "full" (the paper's: the whole vocabulary) or "actions" (the value
  # bins and separator only, the ids evaluation samples there; their logits then cost 1,025
  # table rows instead of 33,025). Text targets always use the whole vocabulary.
  config.train.action_loss_vocab = "full"
  # Gradient accumulation: each step's global batch in this many slices (same update, the
  # activation memory of one slice); the data stream does not change.
  config.train.microbatches = 1
  # "START,COUNT": a jax.profiler trace of steps START.. (metrics.jsonl's numbers) into
  # <workdir>/profile/ for TensorBoard's profile plugin (process 0 only). Empty: no trace.
  config.train.profile_steps = ""

  config.data = ml_collections.ConfigDict()
  # A registered seqio Mixture or Task (built-in: quickstart | control | generalist | paper) or
  # "name=weight,...".
  config.data.mixture = "control"
  config.data.data_dir = "~/.cache/gato_jax"  # Generated TFDS datasets (tools/generate_data.py).
  config.data.policy = "expert"  # Built-in control tasks read: expert (filtered) | random episodes.
  config.data.prompt_probability = 0.25  # Share of sequences prompted with another episode.
  config.data.prompt_end_fraction = 0.5  # Of prompts, the share taken from an episode's end.
  config.data.prompt_tokens = 256  # Prompt budget (at most half the context).
  # 0: all; N: each task's first N stored episodes (examples), counted before the return filter,
  # so a run reads what a data stage with --episodes=N stored even where a larger one stored more.
  config.data.max_episodes_per_task = 0
  config.data.task_max_episodes = ""  # Per task or domain: "dm_control_pixels=20,gymnax=300".
  # Per task or domain ("dm_control=0.3,gymnax/Pendulum-v1=0.3"): control tasks whose expert
  # demonstrations were executed with this action noise (gato_jax/envs/noise.py) while storing
  # the expert's own actions; such data is generated (and read) as a dataset of its own.
  config.data.action_noise = ""
  # Comma-separated modules imported after the built-in tasks are registered for data_dir and
  # before data.mixture is resolved: they may register seqio Tasks and Mixtures of their own.
  config.data.imports = ""
  # Derived stores (tokenized episodes, random access; built on first use). Empty: data_dir/derived.
  config.data.derived_dir = ""
  config.data.read_threads = 0  # Grain threads building batches ahead of the step (0: inline).
  config.data.read_processes = 0  # Grain worker processes building batches (0: none).
  config.data.seed = 0  # Seed of the data stream (task, episode, window and prompt draws).
  # Episodes split into this many shards, each feeding its own block of rows; a process reads
  # only its shards. 0: one shard (every host opens all). The stream depends on this, never on
  # the host count: the same config gives the same batches on 1, 2 or 4 hosts.
  config.data.num_shards = 0

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000  # Save interval (and always at the end).
  config.checkpoint.keep = 3  # Newest checkpoints kept.
  config.checkpoint.keep_best = 1  # Best-by-eval checkpoints kept as well.
  config.checkpoint.async_save = True  # Write in the background while training goes on.

  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 100  # Metrics to metrics.jsonl / TensorBoard / console.
  config.log.tensorboard = True  # Also write TensorBoard event files.

  config.eval = ml_collections.ConfigDict()
  config.eval.tasks = ""  # Comma-separated "<domain>/<task>"; empty: the mixture's tasks.
  config.eval.episodes = 50  # Rollouts per task (the paper's 50).
  # Per-task or per-domain counts that override eval.episodes: "dm_control_pixels=10,...".
  config.eval.task_episodes = ""
  config.eval.batch_size = 16  # Environments stepped together, one batched model call per token.
  config.eval.prompt_tokens = 256  # Prompt budget, whole timesteps (paper: 1024); 0: no prompt.
  # The paper's protocol by default: a successful demonstration's start as the prompt (end: its
  # goal-conditioned variant), sampled actions (0: greedy) and a Transformer-XL memory (sliding: a
  # ring of the newest tokens, never refilled; refill: trim to whole timesteps and prefill again).
  # On the generalist no variant measured differently; the quickstart preset, where each paper
  # setting scored lower, overrides all three (README, Evaluation).
  config.eval.prompt_from = "start"
  config.eval.prompt_episodes = 20  # Stored successful episodes per task to draw prompts from.
  config.eval.temperature = 1.0  # Sampling temperature of action tokens; 0: greedy.
  config.eval.memory = "sliding"
  config.eval.max_steps = 0  # > 0: cap each episode's steps below the task's own time limit.
  config.eval.context_headroom = 0.25  # Fraction of the context a trim leaves free (fewer refills).
  config.eval.bootstrap_resamples = 2000  # Stratified bootstrap replicates for the 95% CIs.
  config.eval.seed = 0  # Evaluation episode seeds (a stream apart from the data's) and sampling.
  config.eval.every_steps = 0  # During training: evaluate every N steps (0: off).
  config.eval.jit_envs = True  # gymnax: reset/step the batch under jit + vmap (False: host loop).
  # Held-out documents / scenes / questions scored per text or vision-language task (0: none).
  config.eval.non_control_examples = 64

  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices.
  config.mesh.rules = "fsdp"  # Logical-axis rules preset: data_parallel | fsdp | fsdp_tensor
  # The TPU slice the config is sized for (libtpu's name, e.g. v5e:4x4); tools/aot_compile.py
  # compiles for it without the slice being present. Empty: none in particular.
  config.mesh.topology = ""
  config.mesh.multi_host = False  # Call jax.distributed.initialize() at start.
  config.mesh.coordinator_address = ""  # host:port; empty lets jax.distributed find it.
  config.mesh.num_processes = 0  # With coordinator_address: how many processes.
  config.mesh.process_id = -1  # With coordinator_address: this process's index.
  config.mesh.cpu_collectives = ""  # "gloo" for multi-process CPU runs.

  for preset in presets:
    apply_preset(config, preset)
  return config


def apply_preset(config: ml_collections.ConfigDict, preset: str) -> None:
  """Adjusts `config` (its model.size already set) for one preset; the sweep applies slice
  presets per size this way (gato_jax.sweep.plan)."""
  if preset == "smoke":
    config.train.batch_size = 8
    config.train.seq_len = 320
    config.train.max_patches = 8
    config.train.steps = 4
    config.optimizer.warmup_steps = 2
    config.optimizer.decay_steps = 10
    config.optimizer.peak_learning_rate = 1e-3
    config.mesh.shape = (2, 2, 2)
    config.mesh.rules = "fsdp_tensor"
    config.data.mixture = "babyai/GoToRedBall=1,babyai/GoToLocal=1"
    config.data.prompt_tokens = 160
    config.data.max_episodes_per_task = 8
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = False
    config.log.every_steps = 1
    config.log.tensorboard = False
  elif preset == "quickstart":
    # The CPU demo (experiments/quickstart.py): CartPole and Acrobot, state-only timesteps of 6
    # and 8 tokens, so a 256-token context holds 30-40 of them (prompts up to half).
    # Against the earlier recipe (600 steps at peak 1e-3, full-vocabulary loss, the paper's
    # positions, i.i.d. value-bin embeddings) on the same data, three seeds each way measured in
    # docs/training.md ("The quickstart's cost, and levers tried"): smooth value-bin embeddings let
    # CartPole's policy, near-linear in four values, reach the bins the data rarely visits; rotary
    # positions let an action find its own timestep's observation from the first steps; action
    # targets scored over the action ids make a step 1.4x cheaper. Half the steps, higher scores.
    config.train.batch_size = 16
    config.train.seq_len = 256
    config.train.max_patches = 0  # No images in this mixture: no patch slots to embed.
    config.train.steps = 300
    config.train.action_loss_vocab = "actions"
    config.optimizer.warmup_steps = 30
    config.optimizer.decay_steps = 300
    config.optimizer.peak_learning_rate = 3e-3  # Small model, few steps: 30x the paper's.
    config.model.stochastic_depth = 0.0
    config.model.position_encoding = "rope"
    config.model.value_init_correlation = 0.9
    config.model.max_decode_length = 256  # Act with the context it was trained on.
    config.data.mixture = "quickstart"
    config.data.prompt_tokens = 128
    config.eval.prompt_tokens = 128
    # Each of the paper's protocol settings scored lower on this model (README, Evaluation).
    config.eval.prompt_from, config.eval.temperature, config.eval.memory = "end", 0.0, "refill"
    # 32 episodes in one batch: the batched model call, not the environment, is the cost.
    config.eval.episodes = 32
    config.eval.batch_size = 32
    config.checkpoint.every_steps = 100
    config.log.every_steps = 20
  elif preset == "generalist":
    # The CPU generalist (experiments/generalist.py): 14 control tasks over four domains (gymnax
    # classic control, BabyAI, DM Control state and pixels), text and captions. A BabyAI timestep
    # is ~150 tokens and a 64x64 pixel one 18-22, so the context is 512 (the quickstart's 256
    # would hold one BabyAI step). The step computes logits and ResNet patches per batch shard
    # (training.step.Budget), not per row: a batch's one text row and few image rows no longer
    # size every row's work (docs/benchmarks.md, "Budgets per batch shard").
    # Rotary positions: without them (the paper's encodings) a small model took ~100 steps of
    # CartPole-only batches to leave chance, with them 40 (docs/generalist.md). The peak rate is
    # the `generalist` sweep's best (gato_jax/configs/sweep.py: 4e-3 had the lowest loss in
    # every domain at 200 steps, against 2e-3 and 1e-3). The quickstart's two levers against
    # closed-loop drift (docs/training.md): action targets scored over the action ids (text and
    # caption targets keep the whole vocabulary) and smooth value-bin embeddings, which the tied
    # output head shares, so a continuous action's likely bins are neighbours. 2,600 steps at the
    # 6.4-7.9 s a step the 14-task run measured on two idle cores fill ~5 of the 6 hours
    # (docs/generalist.md; 3,400 at the bench's earlier 6.1 s would have taken ~7).
    config.train.batch_size = 16
    config.train.seq_len = 512
    config.train.steps = 2600
    config.train.action_loss_vocab = "actions"
    config.optimizer.warmup_steps = 100
    config.optimizer.decay_steps = 2600
    config.optimizer.peak_learning_rate = 4e-3
    config.model.stochastic_depth = 0.0
    config.model.position_encoding = "rope"
    config.model.value_init_correlation = 0.9
    config.model.max_decode_length = 512
    config.data.mixture = "generalist"
    # Continuous control from demonstrations whose executed action carried noise while the
    # expert's own was stored (gato_jax/envs/noise.py): the SAC experts' clean episodes cover so
    # narrow a band of states that the 14-task run's DM Control state tasks scored -12..1% of
    # expert; alone on cartpole-balance, noise 0.3 took 52.9% to 97.0% (docs/generalist.md).
    config.data.action_noise = "dm_control=0.3,dm_control_pixels=0.3,gymnax/Pendulum-v1=0.3"
    config.data.prompt_tokens = 256
    config.eval.prompt_tokens = 256
    config.eval.episodes = 20  # Fewer than the paper's 50: 14 tasks of rollouts on two cores.
    # A pixel step renders a frame (~75 ms): 10 rendered 1,000-step episodes cost ~8 min a task.
    config.eval.task_episodes = "dm_control_pixels=10"
    config.eval.batch_size = 20
    config.checkpoint.every_steps = 100  # A run stopped and continued loses little.
    config.log.every_steps = 20
  elif preset in SLICES:
    # The paper's batch (512 x 1024) on a TPU slice: FSDP over every chip, and the remat policy
    # and gradient accumulation that the compiler says fit (README, "Pod readiness").
    topology, hosts, plans = SLICES[preset]
    if config.model.size not in plans:
      raise ValueError(
        f"preset {preset!r} has plans for sizes {sorted(plans)}, not {config.model.size!r}"
      )
    remat_policy, microbatches = plans[config.model.size]
    config.mesh.topology = topology
    config.mesh.shape = (1, -1, 1)
    config.mesh.rules = "fsdp"
    config.mesh.multi_host = hosts > 1  # Every host runs the same command.
    config.model.remat_policy = remat_policy
    config.train.microbatches = microbatches
  else:
    raise ValueError(
      f"unknown preset {preset!r}; presets: smoke, quickstart, generalist, {', '.join(SLICES)}"
    )


# Slice presets: libtpu topology, hosts, and per size (remat policy, microbatches) at batch
# 512 x 1024; README's "Pod readiness" table gives the compiler's verdict on each.
SLICES = {
  "v4_8": ("v4:2x2x1", 1, {"79m": ("full", 1), "364m": ("full", 2), "1.18b": ("full", 4)}),
  "v5e16": ("v5e:4x4", 4, {"79m": ("full", 1), "364m": ("full", 2), "1.18b": ("full", 2)}),
  "v5p8": ("v5p:2x2x1", 1, {"79m": ("full", 1), "364m": ("full", 1), "1.18b": ("full", 2)}),
}
