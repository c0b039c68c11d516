"""A sweep config -> its runs: the size ladder times product axes times zipped axes.

A sweep config (gato_jax/configs/sweep.py) holds the recipe every run shares (`base`, a full
gato.py config), the size ladder (`sizes`, a product axis over `model.size`), further axes over
any base field, and the token budget with the token counts to evaluate at. Axes are strings so
that they can be overridden from the command line:

  product = "optimizer.peak_learning_rate=1e-3,3e-4;train.seed=0,1"   # 2 x 2 combinations
  zip     = "train.batch_size=8,16;optimizer.peak_learning_rate=1e-3,2e-3"  # paired, 2 runs

Values are Python literals (strings without quotes are strings); a comma inside brackets or
quotes does not split, so "mesh.shape=(1,1,1),(2,1,1)" is two values.
"""

import ast
import copy
import dataclasses
import itertools
import math
import re
from typing import Any, Sequence

import ml_collections

from gato_jax.configs import gato as gato_configs
from gato_jax.model.config import SIZES

SIZE_KEY = "model.size"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep.

  Attributes:
    name: its directory name under the sweep's `runs/`, derived from its axis values.
    overrides: dotted config key -> value, the axis values that make this run.
    config: the full gato.py config of the run (base + overrides + the derived budget).
    eval_steps: the steps at which the token budget crosses each evaluation token count.
  """

  name: str
  overrides: dict[str, Any]
  config: ml_collections.ConfigDict
  eval_steps: tuple[int, ...]

  @property
  def tokens_per_step(self) -> int:
    return self.config.train.batch_size * self.config.train.seq_len


def _split_top_level(text: str, separator: str) -> list[str]:
  """Splits on `separator` outside brackets and quotes."""
  parts, depth, quote, current = [], 0, None, []
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == separator and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(char)
  if depth or quote:
    raise ValueError(f"unbalanced brackets or quotes in {text!r}")
  parts.append("".join(current))
  return parts


def _literal(text: str) -> Any:
  text = text.strip()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare word such as `small` or `fsdp`.


def parse_axes(spec: str) -> dict[str, list[Any]]:
  """ "key=v1,v2;key2=v3" -> {"key": [v1, v2], "key2": [v3]}; "" -> {}."""
  axes: dict[str, list[Any]] = {}
  for part in _split_top_level(spec or "", ";"):
    if not part.strip():
      continue
    key, sep, values = part.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
      raise ValueError(f"sweep axis {part.strip()!r} must read key=value1,value2,...")
    if key in axes:
      raise ValueError(f"sweep axis {key!r} is given twice in {spec!r}")
    axes[key] = [_literal(v) for v in _split_top_level(values, ",")]
  return axes


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` of `config`, refusing keys the config does not have."""
  *groups, field = key.split(".")
  node = config
  for i, group in enumerate(groups):
    if group not in node or not isinstance(node[group], ml_collections.ConfigDict):
      raise ValueError(f"sweep key {key!r}: {'.'.join(groups[: i + 1])!r} is not a config group")
    node = node[group]
  if field not in node:
    raise ValueError(
      f"sweep key {key!r}: no field {field!r} in config group"
      f" {'.'.join(groups) or '<root>'} (fields: {sorted(node.keys())})"
    )
  try:
    node[field] = value
  except TypeError as e:
    raise ValueError(f"sweep key {key!r}: value {value!r} does not fit the field: {e}") from None


def combinations(sizes: Sequence[str], product: str, zipped: str) -> list[dict[str, Any]]:
  """The override dicts of every run: sizes x product axes x (zipped axes, in step)."""
  product_axes = parse_axes(product)
  zip_axes = parse_axes(zipped)
  if sizes:
    if SIZE_KEY in product_axes or SIZE_KEY in zip_axes:
      raise ValueError(f"{SIZE_KEY} is set by `sizes`; do not sweep it in product or zip too")
    product_axes = {SIZE_KEY: list(sizes), **product_axes}
  both = sorted(set(product_axes) & set(zip_axes))
  if both:
    raise ValueError(f"keys {both} appear in both product and zip axes")
  lengths = {key: len(values) for key, values in zip_axes.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"zipped axes must have equal lengths, got {lengths}")
  zipped_rows = [dict(zip(zip_axes, row)) for row in zip(*zip_axes.values())] if zip_axes else [{}]
  rows = []
  for values in itertools.product(*product_axes.values()):
    for zip_row in zipped_rows:
      rows.append({**dict(zip(product_axes, values)), **zip_row})
  return rows


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    value = f"{value:g}"
  return re.sub(r"[^A-Za-z0-9.\-]+", "_", str(value)).strip("_") or "_"


def run_name(overrides: dict[str, Any]) -> str:
  """ "size-small+peak_learning_rate-0.001": each axis by its last key part (or whole key when
  two axes share a last part), then its value; "base" for a run without axes."""
  if not overrides:
    return "base"
  last = [key.rsplit(".", 1)[-1] for key in overrides]
  parts = []
  for key, short in zip(overrides, last):
    label = "size" if key == SIZE_KEY else (short if last.count(short) == 1 else key)
    parts.append(f"{label}-{_format_value(overrides[key])}")
  return "+".join(parts)


def eval_steps(eval_tokens: Sequence[int], tokens_per_step: int, steps: int) -> tuple[int, ...]:
  """The steps at which training has processed each of `eval_tokens` (rounded up to a step)."""
  result = set()
  for tokens in eval_tokens:
    if tokens <= 0:
      raise ValueError(f"evaluation token counts must be positive, got {tokens}")
    step = math.ceil(tokens / tokens_per_step)
    if step > steps:
      raise ValueError(
        f"evaluation at {tokens:,} tokens needs step {step}, beyond the budget of"
        f" {steps} steps ({steps * tokens_per_step:,} tokens)"
      )
    result.add(step)
  return tuple(sorted(result))


def parse_slices(spec: str) -> dict[str, str]:
  """ "79m=v5e16;1.18b=v4_8" -> {"79m": "v5e16", "1.18b": "v4_8"}: a gato.py slice preset per
  model size; "" -> {}."""
  slices = {}
  for size, presets in parse_axes(spec).items():
    if size not in SIZES or len(presets) != 1:
      raise ValueError(
        f"sweep.slices entry {size}={','.join(map(str, presets))} must read SIZE=PRESET with"
        f" SIZE one of {sorted(SIZES)}"
      )
    slices[size] = str(presets[0])
  return slices


def plan(sweep: ml_collections.ConfigDict) -> list[Run]:
  """Every run of the sweep with its full config, in a deterministic order.

  Each run trains for ceil(sweep.tokens / tokens per step) steps; with
  `sweep.schedule_follows_budget` the cosine schedule ends with the run. With `sweep.slices`,
  each run gets its size's slice preset of gato_jax/configs/gato.py (topology, mesh, remat,
  microbatches; multi-host on a multi-host slice) before its axis values, which win.

  Raises:
    ValueError: for unknown keys, values that do not fit, unequal zipped axes, budgets that do
      not reach an evaluation point, or two runs that would share a directory.
  """
  if sweep.tokens <= 0:
    raise ValueError(f"sweep.tokens must be positive, got {sweep.tokens}")
  slices = parse_slices(sweep.get("slices", ""))
  runs, names = [], set()
  for overrides in combinations(tuple(sweep.sizes), sweep.product, sweep.zip):
    config = copy.deepcopy(sweep.base)
    config.unlock()
    for key, value in overrides.items():
      set_field(config, key, value)
    if SIZE_KEY in overrides:
      if config.model.size not in SIZES:
        raise ValueError(f"unknown model size {config.model.size!r}; sizes: {sorted(SIZES)}")
      if "model.dtype" not in overrides:
        # As gato.py's get_config(size) does: CPU sizes compute in float32, the paper's in bf16.
        config.model.dtype = SIZES[config.model.size].get("dtype", "bfloat16")
    if slices:
      if config.model.size not in slices:
        raise ValueError(
          f"sweep.slices {sweep.slices!r} names no slice preset for size {config.model.size!r}"
        )
      gato_configs.apply_preset(config, slices[config.model.size])
      for key, value in overrides.items():
        set_field(config, key, value)
    tokens_per_step = config.train.batch_size * config.train.seq_len
    config.train.steps = math.ceil(sweep.tokens / tokens_per_step)
    if sweep.schedule_follows_budget:
      config.optimizer.decay_steps = config.train.steps
    steps = eval_steps(sweep.eval_tokens, tokens_per_step, config.train.steps)
    config.train.stop_at_step = 0
    name = run_name(overrides)
    if name in names:
      raise ValueError(f"two runs would share the directory {name!r}; make axis values distinct")
    names.add(name)
    runs.append(Run(name, overrides, config, steps))
  return runs
