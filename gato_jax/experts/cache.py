"""The on-disk cache of trained experts: parameters and metadata, written atomically."""

import hashlib
import importlib.metadata
import json
import os
import pickle
import shutil
from typing import Any, Callable, Iterable

from absl import logging
from flax import serialization
import jax

from gato_jax import files, workdir_lock

PARAMS_FILE = "params.msgpack"
META_FILE = "expert.json"


def write_expert(directory: str, params: Any, meta: dict) -> str:
  """Writes params and metadata (temp files, then rename: never half a file); returns directory."""
  files.write_bytes(
    os.path.join(directory, PARAMS_FILE), serialization.to_bytes(jax.device_get(params))
  )
  files.write_json(os.path.join(directory, META_FILE), meta)
  return directory


def has_expert(directory: str) -> bool:
  return all(os.path.exists(os.path.join(directory, f)) for f in (PARAMS_FILE, META_FILE))


def read_expert(directory: str, make_template: Callable[[dict], Any]) -> tuple[Any, dict]:
  """(params, metadata) of a cached expert; `make_template(metadata)` gives the params' tree.

  The metadata gains "version": a digest of the parameters, which data generated with the
  expert records, so that data from an expert that was since retrained is known to be stale.
  """
  with open(os.path.join(directory, META_FILE)) as f:
    meta = json.load(f)
  with open(os.path.join(directory, PARAMS_FILE), "rb") as f:
    blob = f.read()
  meta["version"] = hashlib.sha256(blob).hexdigest()[:16]
  return serialization.from_bytes(make_template(meta), blob), meta


def package_versions(*packages: str) -> dict[str, str]:
  """Installed versions, recorded with an expert so a stale cache can be told apart."""
  return {p: importlib.metadata.version(p) for p in packages}


def save_progress(path: str, fingerprint: dict, payload: dict) -> None:
  """Writes a training run's state (numpy arrays and plain values) atomically to `path`."""
  files.write_pickle(path, dict(payload, fingerprint=fingerprint))


def load_progress(path: str | None, fingerprint: dict) -> dict | None:
  """The progress saved at `path` if it belongs to this run (the same `fingerprint`: task,
  config, seed...), else None, saying why in the log."""
  if not path or not os.path.exists(path):
    return None
  try:
    with open(path, "rb") as f:
      saved = pickle.load(f)
  except (OSError, EOFError, pickle.UnpicklingError) as e:
    logging.warning("ignoring unreadable training checkpoint %s (%s); starting over", path, e)
    return None
  if saved.get("fingerprint") != fingerprint:
    logging.info("training checkpoint %s is from another run; starting over", path)
    return None
  return saved


def recipe(config, algorithm: str) -> dict:
  """What makes an expert (as JSON stores it): its `algorithm` config (`config.ppo`,
  `config.sac`), first seed, number of seeds and target return. A cached expert made with
  another recipe is trained again."""
  made_of = dict(seed=config.seed, num_seeds=config.num_seeds, target_return=config.target_return)
  made_of[algorithm] = config[algorithm].to_dict()
  return json.loads(json.dumps(made_of))


def best_of_seeds(
  seeds: Iterable[int],
  target_return: float | None,
  train_seed: Callable[[int], tuple[Any, dict]],
) -> tuple[Any, dict]:
  """Trains `seeds` in turn until one's summary reaches `target_return`; (params, summary) of
  the best (by "expert_return"), its summary extended with every tried seed's return ("seeds")
  and their summed "train_seconds".

  One seed of an RL recipe is fragile across CPUs (float rounding changes its run) and the data
  needs one good expert, so both PPO and SAC experts are searched this way.
  """
  tried = []
  for seed in seeds:
    params, summary = train_seed(seed)
    tried.append((params, summary))
    if target_return is not None and summary["expert_return"] >= target_return:
      break
  if not tried:
    raise ValueError("best_of_seeds needs at least one seed")
  params, summary = max(tried, key=lambda t: t[1]["expert_return"])
  return params, dict(
    summary,
    seeds={str(s["seed"]): s["expert_return"] for _, s in tried},
    train_seconds=round(sum(s["train_seconds"] for _, s in tried), 1),
  )


# Summary fields that describe training, kept when an expert is only re-evaluated.
TRAINING_KEYS = (
  "train_seconds",
  "seed",
  "seeds",
  "train_timesteps",  # PPO
  "train_env_steps",  # SAC
  "final_training_return",
  "recipe",
)


def train_or_reuse(
  name: str,
  directory: str,
  config,
  algorithm: str,
  algorithm_config: Any,
  *,
  load: Callable[[], Any],
  evaluate: Callable[[Any], dict],
  train_seed: Callable[[int, str], tuple[Any, dict]],
  save: Callable[[Any, Any, dict], None],
  reevaluate: bool = False,
) -> dict:
  """The expert cache's policy, for every trained kind of expert; returns the expert's summary.

  A cached expert of the same recipe (`recipe(config, algorithm)`) is reused, or with
  `reevaluate` evaluated again (its training fields kept); one of another recipe, or none, is
  trained: seeds `config.seed`, ... in turn until one reaches `config.target_return`
  (`best_of_seeds`), each seed in `directory/seeds/<seed>/`, so that a killed search resumes.
  `config.overwrite` trains again from scratch. One process at a time works on `directory`: a
  second (a parallel data job) waits, then reuses what the first made.

  Args:
    name: the task, for log lines.
    config: the expert recipe (seed, num_seeds, target_return, overwrite, `config[algorithm]`).
    algorithm_config: the algorithm's config object built from it, saved with a new expert.
    load: () -> the cached expert, with `.config`, `.params` and `.summary`.
    evaluate: expert -> its summary's evaluation fields.
    train_seed: (seed, that seed's folder) -> (params, summary).
    save: (algorithm config, params, summary) -> writes the expert to `directory`.
  """
  with workdir_lock.WorkdirLock(directory, wait=True):
    seeds_dir = os.path.join(directory, "seeds")
    made_of = recipe(config, algorithm)
    if config.overwrite:
      shutil.rmtree(seeds_dir, ignore_errors=True)
    elif has_expert(directory):
      expert = load()
      if expert.summary.get("recipe") != made_of:
        logging.info(
          "%s: the cached expert in %s has another recipe; training again", name, directory
        )
      elif not reevaluate:
        logging.info("%s: reusing the cached expert in %s", name, directory)
        return expert.summary
      else:
        summary = evaluate(expert)
        summary.update({k: expert.summary[k] for k in TRAINING_KEYS if k in expert.summary})
        save(expert.config, expert.params, summary)
        return summary
    params, summary = best_of_seeds(
      range(config.seed, config.seed + max(1, config.num_seeds)),
      config.target_return,
      lambda seed: train_seed(seed, os.path.join(seeds_dir, str(seed))),
    )
    save(algorithm_config, params, summary)
    return summary
