r"""Training-step throughput and model FLOPs utilisation: one JSON line per case and size.

  python tools/bench/train_step.py --config=experiments/configs/gato.py:small \
      --sizes=tiny,small --config.train.batch_size=8 --config.train.seq_len=256
  # CPU step efficiency: ours against a minimal plain-JAX decoder of the same shapes, on the
  # quickstart's real batches (python experiments/quickstart.py generates its data first).
  python tools/bench/train_step.py --config=experiments/configs/gato.py:small,quickstart \
      --config.mesh.shape=1,1,1 --batches=data --cases=matmul,gato,reference,gato,reference

Cases: `gato` (the real jitted train step, each batch with its own budget as the trainer
gives it), `gato_full` and `gato_actions` (the same with train.action_loss_vocab "full" or
"actions": action targets over the 1,025 action ids, computed from those table rows only), `gato_padded` (the same step with every row sized for the fullest row: logits at the
most targets of any row, every patch slot through the ResNet), `reference` (tools/bench/reference_decoder.py: same
shapes and batches, logits at the same targets, AdamW, nothing else) and `matmul` (the rate of
one [B*T, E] x [E, 4E] float32 matmul, what the machine's matmuls reach at these shapes).
Repeating cases alternates them, so that a loaded machine's drift hits both alike.
Keys: `tokens_per_second`, `mfu` (null where the device's peak is unknown: pass
--peak_tflops), `step_ms`, `params`, `gflops_per_second` (model FLOPs: 6 N plus causal
attention, the output projection at the computed logits only).

Learning at equal tokens (`--learn_steps=N`, with --batches=data): each gato case also trains
a fresh state, from the config's seed, for N steps on the mixture's batches as the trainer gives
them (steps 0..N-1, each with its own budget), then scores the batches of steps N..N+K-1
(--held_out_batches=K) with one metric for every case: cross-entropy per target token, text
targets over the whole vocabulary and action targets over the action ids, the distribution
evaluation samples actions from (the "actions" normaliser). It runs before the case is timed,
so that its compiles count in `learn_seconds` as a run's first steps pay them, and timing then
starts from a fresh state of its own. Keys added: `learn_steps`, `learn_tokens` (N x batch x
seq_len), `learn_seconds` (the N steps' wall time, compiles and batch reading included),
`held_out_initial_loss_per_token` (the same parameters before training: equal for every case),
`held_out_loss_per_token`, `held_out_text_loss_per_token` and `held_out_action_loss_per_token`
(null where the held-out batches have no such target), `held_out_targets`. Action targets over
the whole vocabulary against over the action ids, at equal tokens:

  python tools/bench/train_step.py --config=experiments/configs/gato.py:small,generalist \
      --config.mesh.shape=1,1,1 --batches=data --cases=gato_full,gato_actions \
      --learn_steps=200 --seconds=60
"""

import dataclasses
import functools
import json
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from gato_jax import sharding
from gato_jax.model import ModelConfig
from gato_jax.training.optimizer import OptimizerConfig
from gato_jax.training import flops
from gato_jax.training.step import (
  abstract_param_count,
  abstract_train_state,
  batch_shardings,
  compute_gradients,
  loss_and_metrics,
  make_train_step,
  Budget,
  batch_loads,
  bucket,
  host_budget,
  initial_train_state,
  target_mask,
  target_positions,
)

# Siblings of this script: its folder is on sys.path however the script is started.
import bench_common as _common
import reference_decoder

_CONFIG = config_flags.DEFINE_config_file("config", None, "Gato config.", lock_config=True)
_SIZES = flags.DEFINE_list("sizes", None, "Sizes to measure (default: the config's).")
_NUM_PATCHES = flags.DEFINE_integer("num_patches", 32, "Image-patch slots per sequence.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Minimum measuring time per size.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of all devices together.")
_CASES = flags.DEFINE_list(
  "cases",
  ["gato"],
  "gato, gato_full, gato_actions, gato_padded, reference, matmul; repeats alternate.",
)
_BATCHES = flags.DEFINE_enum(
  "batches",
  "random",
  ["random", "data"],
  "random: control-like batches with --num_patches patches; data: the config's mixture, as the"
  " trainer builds it (its data must exist under data.data_dir).",
)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 8, "Distinct batches cycled through (data).")
_PHASES = flags.DEFINE_bool(
  "phases",
  False,
  "Also time the forward pass (loss) and the gradients alone for gato and reference: adds"
  " forward_ms and gradients_ms (backward = gradients - forward, optimizer = step - gradients).",
)
_LEARN_STEPS = flags.DEFINE_integer(
  "learn_steps",
  0,
  "Steps each gato case also trains before it is timed, then scores held-out batches"
  " (needs --batches=data; 0: off).",
  lower_bound=0,
)
_HELD_OUT_BATCHES = flags.DEFINE_integer(
  "held_out_batches",
  4,
  "Batches after the --learn_steps ones that the trained cases are scored on.",
  lower_bound=1,
)
# The metric every case is scored with, whatever its training normaliser.
_HELD_OUT_VOCAB = "actions"
_HELD_OUT_LOSSES = {  # Output key: (metric, its target count).
  "held_out_loss_per_token": ("loss", "target_tokens"),
  "held_out_text_loss_per_token": ("loss_text", "text_tokens"),
  "held_out_action_loss_per_token": ("loss_action", "action_tokens"),
}


def _open_data(config, model_config: ModelConfig):
  """The config's mixture as the trainer reads it."""
  from gato_jax import train  # pylint: disable=g-import-not-at-top

  try:
    return train.build_data(config, model_config.patch_dim)
  except Exception as e:  # Missing datasets surface as TFDS / SeqIO errors.
    raise SystemExit(
      f"--batches=data needs the mixture {config.data.mixture!r} under"
      f" {config.data.data_dir} ({type(e).__name__}: {e}); for the quickstart's,"
      " run `python experiments/quickstart.py` once (about 4 minutes of it"
      " generates the data)"
    ) from e


def _batches(config, model_config: ModelConfig, data) -> list:
  """The timed batches: the first of `data` (None: one random batch)."""
  if data is None:
    return [
      _common.random_batch(
        model_config, config.train.batch_size, config.train.seq_len, _NUM_PATCHES.value
      )
    ]
  return [data.host_batch(step) for step in range(_NUM_BATCHES.value)]


@functools.partial(jax.jit, static_argnames=("model", "budget"))
def _held_out_metrics(params, batch, model, budget):
  # train=False: no dropout, stochastic depth or sampled patch positions; the key is unused.
  _, metrics = loss_and_metrics(
    params, batch, jax.random.key(0), model, False, budget, _HELD_OUT_VOCAB
  )
  return metrics


def _held_out_losses(trainer, params, batches) -> dict:
  """Cross-entropy per target token of `params` over all of `batches`, overall and per kind.

  Every case is scored alike, whatever its `trainer.action_loss_vocab`: text targets over the
  whole vocabulary, action targets over the action ids (their own head, at targets only).
  """
  scorer = dataclasses.replace(trainer, action_loss_vocab=_HELD_OUT_VOCAB)
  sums = {key: [0.0, 0.0] for key in _HELD_OUT_LOSSES}
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    for batch in batches:
      budget = host_budget(scorer, batch)
      metrics = jax.device_get(
        _held_out_metrics(
          params, jax.device_put(batch, batch_shardings(trainer, batch)), trainer.model, budget
        )
      )
      for key, (loss, count) in _HELD_OUT_LOSSES.items():
        # Each batch's loss is a mean over its targets: weighted back into a sum.
        sums[key][0] += float(metrics[loss]) * float(metrics[count])
        sums[key][1] += float(metrics[count])
  losses = {key: round(total / count, 6) if count else None for key, (total, count) in sums.items()}
  return {**losses, "held_out_targets": int(sums["held_out_loss_per_token"][1])}


def _learn(config, trainer, step, data, held_out) -> dict:
  """Trains a fresh state for --learn_steps steps of `data` as the trainer does (its seeds, a
  budget per batch, `step` compiled per budget) and scores `held_out`: the JSON keys."""
  steps = _LEARN_STEPS.value
  state = initial_train_state(trainer, jax.random.key(config.train.seed))
  initial = _held_out_losses(trainer, state.params, held_out)["held_out_loss_per_token"]
  rng = jax.random.key(config.train.seed + 1)
  start = time.perf_counter()
  for batch in data.stream(
    0, steps, threads=config.data.read_threads, processes=config.data.read_processes
  ):
    budget = host_budget(
      trainer, batch, config.train.microbatches, config.train.logits_at_targets_only
    )
    state, _ = step(state, jax.device_put(batch, batch_shardings(trainer, batch)), rng, budget)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  return {
    "learn_steps": steps,
    "learn_tokens": steps * config.train.batch_size * config.train.seq_len,
    "learn_seconds": round(seconds, 2),
    "held_out_initial_loss_per_token": initial,
    **_held_out_losses(trainer, state.params, held_out),
  }


def _gato_case(
  config,
  model_config,
  mesh,
  batches,
  padded: bool = False,
  action_vocab=None,
  data=None,
  held_out=(),
):
  """(step runner, logits per row, phase runners, learning keys) of the real jitted train step.

  As the trainer calls it: each batch with its own `host_budget` (logits at its targets only,
  unless the config says otherwise; the ResNet on its real patches), compiled once per budget
  before timing. `padded`: every row sized for the fullest row of all batches instead (logits
  at the most targets of any row, every patch slot through the ResNet), as steps were before
  budgets per batch shard. `action_vocab`: the loss's action normaliser (default: the
  config's `train.action_loss_vocab`). `data` (with --learn_steps): first trains on it and
  scores `held_out` (`_learn`; padded or not, it learns as the trainer does).
  """
  _, trainer = abstract_train_state(
    model_config,
    OptimizerConfig.from_dict(config.optimizer),
    mesh,
    config.mesh.rules,
    action_vocab or config.train.action_loss_vocab,
  )
  microbatches = config.train.microbatches
  targets_only = config.train.logits_at_targets_only
  if padded:
    seq_len = config.train.seq_len
    most = max(batch_loads(b, b.tokens.shape[0] // microbatches, microbatches)[0] for b in batches)
    rows = config.train.batch_size // microbatches
    budget = Budget(rows, bucket(most, seq_len - 1) if targets_only else None)
    budgets = [budget] * len(batches)
  else:
    budgets = [host_budget(trainer, b, microbatches, targets_only) for b in batches]
  batches = [jax.device_put(b, batch_shardings(trainer, b)) for b in batches]
  step = make_train_step(trainer, batches[0], microbatches)
  learned = {}
  if data is not None and _LEARN_STEPS.value:
    learned = _learn(config, trainer, step, data, held_out)
  # A fresh state: the learning run's does not reach the timing.
  holder = {"state": initial_train_state(trainer, jax.random.key(0)), "i": 0}

  def run():
    i = holder["i"] % len(batches)
    holder["i"] += 1
    holder["state"], metrics = step(holder["state"], batches[i], jax.random.key(0), budgets[i])
    jax.block_until_ready(metrics["loss"])

  for _ in batches:  # Compiles every budget before the clock starts.
    run()
  logits = None
  if targets_only:  # Per row on average, as the FLOP count takes it.
    vocab = trainer.model.vocab_size
    logits = float(np.mean([b.full_logits(vocab) * b.groups * microbatches for b in budgets]))
    logits /= config.train.batch_size
  key = jax.random.key(0)
  forward = jax.jit(
    lambda params, batch, budget: _with_rules(trainer, loss_and_metrics)(
      params, batch, key, trainer.model, True, budget, trainer.action_loss_vocab
    )[0],
    static_argnums=2,
  )
  gradients = jax.jit(
    lambda params, batch, budget: compute_gradients(params, batch, key, trainer, budget),
    static_argnums=2,
  )
  pairs = list(zip(batches, budgets))
  phases = {
    name: _cycling(lambda pair, fn=fn: fn(holder["state"].params, *pair), pairs)
    for name, fn in (("forward", forward), ("gradients", gradients))
  }
  if _PHASES.value:  # Compiles the phases before the clock starts; unused, they cost nothing.
    for phase in phases.values():
      for _ in pairs:
        phase()
  return run, logits, phases, learned


def _with_rules(trainer, fn):
  def wrapped(*args):
    with nn.logical_axis_rules(trainer.rules):
      return fn(*args)

  return wrapped


def _cycling(fn, inputs):
  """A call of `fn` on the next of `inputs` in turn, blocking until its result is ready."""
  holder = {"i": 0}

  def run():
    jax.block_until_ready(fn(inputs[holder["i"] % len(inputs)]))
    holder["i"] += 1

  return run


def _reference_case(config, model_config, mesh, batches):
  """The minimal decoder on the same batches, with the same logits budget."""
  del mesh
  seq_len = config.train.seq_len
  most = max(batch_loads(b, b.tokens.shape[0])[0] for b in batches)
  num_targets = bucket(most, seq_len - 1)
  arrays = []
  for b in batches:  # Targets, weights and positions prepared once: the step sees arrays only.
    positions = target_positions(b, num_targets)
    counts = np.asarray(target_mask(b)).sum(1, keepdims=True)
    targets = np.take_along_axis(np.asarray(b.tokens)[:, 1:], np.asarray(positions), 1)
    weights = (np.arange(num_targets)[None] < counts).astype(np.float32)
    arrays.append(
      jax.device_put((b.tokens, b.local_positions, b.segment_ids, positions, targets, weights))
    )
  init_opt, step = reference_decoder.make_step()
  params = reference_decoder.init_params(model_config, jax.random.key(0))
  holder = {"params": params, "opt": init_opt(params), "i": 0}

  def run():
    holder["params"], holder["opt"], loss = step(
      holder["params"], holder["opt"], arrays[holder["i"] % len(arrays)]
    )
    holder["i"] += 1
    jax.block_until_ready(loss)

  forward = jax.jit(reference_decoder.loss_fn)
  gradients = jax.jit(jax.grad(reference_decoder.loss_fn))
  phases = {
    name: _cycling(lambda a, fn=fn: fn(holder["params"], *a), arrays)
    for name, fn in (("forward", forward), ("gradients", gradients))
  }
  return run, num_targets, phases, {}


def _matmul_case(config, model_config):
  rows, width = config.train.batch_size * config.train.seq_len, model_config.width
  a = jax.random.normal(jax.random.key(0), (rows, width))
  b = jax.random.normal(jax.random.key(1), (width, 4 * width))
  matmul = jax.jit(jnp.matmul)
  seconds = _common.time_calls(lambda: jax.block_until_ready(matmul(a, b)), _SECONDS.value)
  return {
    "case": "matmul",
    "shape": [rows, width, 4 * width],
    "gflops_per_second": round(2 * rows * width * 4 * width / seconds / 1e9, 2),
  }


def main(argv):
  del argv
  config = _CONFIG.value
  if _LEARN_STEPS.value and _BATCHES.value != "data":
    raise app.UsageError("--learn_steps needs --batches=data: random batches teach nothing")
  mesh = sharding.create_mesh(config.mesh.shape)
  for size in _SIZES.value or [config.model.size]:
    model_config = ModelConfig.from_dict({**config.model.to_dict(), "size": size})
    num_params = abstract_param_count(model_config)
    needs_batches = set(_CASES.value) - {"matmul"}
    data = _open_data(config, model_config) if needs_batches and _BATCHES.value == "data" else None
    batches = _batches(config, model_config, data) if needs_batches else []
    learning = {}
    if data is not None and _LEARN_STEPS.value:
      held_out = range(_LEARN_STEPS.value, _LEARN_STEPS.value + _HELD_OUT_BATCHES.value)
      learning = {"data": data, "held_out": [data.host_batch(step) for step in held_out]}
    runs = {}
    for case in _CASES.value:
      if case == "matmul":
        print(json.dumps({"size": size, **_matmul_case(config, model_config)}), flush=True)
        continue
      if case not in runs:
        if case not in CASES:
          raise app.UsageError(f"unknown case {case!r}; cases: {', '.join(CASES)}")
        kwargs = learning if case in LEARNING_CASES else {}
        runs[case] = CASES[case](config, model_config, mesh, batches, **kwargs)
      run, logits, phases, learned = runs[case]
      seconds = _common.time_calls(run, _SECONDS.value)
      phase_ms = {}
      if _PHASES.value:
        phase_ms = {
          f"{name}_ms": round(1e3 * _common.time_calls(fn, _SECONDS.value), 2)
          for name, fn in phases.items()
        }
      tokens = config.train.batch_size * config.train.seq_len
      step_flops = (
        flops.train_flops_per_token(model_config, num_params, config.train.seq_len, logits) * tokens
      )
      peak = flops.peak_flops(_PEAK_TFLOPS.value)
      print(
        json.dumps(
          {
            "case": case,
            "size": size,
            "params": num_params,
            "batches": _BATCHES.value,
            "batch_size": config.train.batch_size,
            "seq_len": config.train.seq_len,
            "logits_per_row": logits,
            "dtype": model_config.dtype,
            "remat_policy": model_config.remat_policy,
            "step_ms": round(1e3 * seconds, 2),
            **phase_ms,
            "tokens_per_second": round(tokens / seconds, 1),
            "gflops_per_second": round(step_flops / seconds / 1e9, 2),
            "mfu": round(step_flops / seconds / peak, 4) if peak else None,
            "device": jax.devices()[0].device_kind,
            "devices": jax.device_count(),
            **learned,
          }
        ),
        flush=True,
      )


CASES = {
  "gato": _gato_case,
  "gato_padded": functools.partial(_gato_case, padded=True),
  # Action targets over the action ids only (train.action_loss_vocab), their own small head.
  "gato_full": functools.partial(_gato_case, action_vocab="full"),
  "gato_actions": functools.partial(_gato_case, action_vocab="actions"),
  "reference": _reference_case,
  "matmul": None,
}
LEARNING_CASES = ("gato", "gato_padded", "gato_full", "gato_actions")

if __name__ == "__main__":
  app.run(main)
