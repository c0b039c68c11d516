r"""Input-pipeline throughput per host CPU core: one JSON line per mixture.

Generates (or reuses) a small expert/random dataset per task under --data_dir, loads each task's
SeqIO examples into memory, then times `MixtureIterator.batch_at`: the per-step work of training
(task sampling, windowing, prompts, packing into a model Batch). That loop is single-threaded,
so its rate is the rate of one core.

  python tools/bench/pipeline.py --data_dir=/tmp/gato_bench --context=1024 --batch_size=32

Keys: `sequences_per_second_per_core`, `tokens_per_second_per_core` (non-padding tokens), and
`load_tokens_per_second`: the one-off rate of reading episodes through SeqIO and tokenizing them
into the in-memory pools the sampler draws from.
"""

import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "disable")

from absl import app, flags
import numpy as np

from gato_jax.data import example_sets, generation, mixture, rlds_io, tasks
from gato_jax.envs import registry

_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/gato_jax_bench", "Where benchmark data lives.")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Episodes generated per task.")
_CONTEXT = flags.DEFINE_integer("context", 1024, "Tokens per sequence.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Minimum measuring time per mixture.")
_MAX_PATCHES = flags.DEFINE_integer("max_patches", 80, "Patch slots per sequence.")

# (task, policy) per mixture; DM Control has no trained expert yet, so its data is random-policy.
# Text and vision-language tasks take the example kind instead of a policy.
_CONTROL = [("babyai/GoToRedBall", "expert"), ("babyai/BossLevel", "expert"),
            ("dm_control/cartpole-swingup", "random"), ("dm_control/walker-walk", "random")]
_VISION_LANGUAGE = [("vision_language/shapes_captions", "captioning"),
                    ("vision_language/shapes_vqa", "vqa")]
MIXTURES = {
    "control_state": _CONTROL,
    "vision_language": _VISION_LANGUAGE,
    "full": _CONTROL + _VISION_LANGUAGE + [("text/cpython_docs", "text")],
}


_LOAD_TIMES: dict[str, tuple[float, int]] = {}  # SeqIO read + tokenization, once per episode.


def _pool(task: str, policy: str, data_dir: str):
  if policy in tasks.EXAMPLE_KINDS:
    example_sets.generate_task(task, data_dir, _EPISODES.value * 10, progress=lambda line: None)
    source = rlds_io.dataset_dir(data_dir, example_sets.make_task(task).dataset,
                                 rlds_io.config_name(task))
    name = tasks.task_name(task) + "_bench"
    tasks.register_example_task(name, policy, source)
  else:
    generation.generate_task(task, data_dir, _EPISODES.value, stats_episodes=5, policy=policy,
                             progress=lambda line: None)
    env = registry.make_env(task)
    domain, _ = registry.split_task_name(task)
    source = rlds_io.dataset_dir(data_dir, generation.dataset_name(domain, policy),
                                 rlds_io.config_name(task))
    name = tasks.task_name(task) + f"_bench_{policy}"
    tasks.register_control_task(name, source, env.observation_spec, env.action_spec,
                                data_dir=data_dir, stats_task=None)
  start = time.perf_counter()
  pool = tasks.load_token_groups(name)
  _LOAD_TIMES[name] = (time.perf_counter() - start, sum(g.num_tokens for g in pool))
  return name, pool


def main(argv):
  del argv
  data_dir = os.path.expanduser(_DATA_DIR.value)
  for mixture_name, members in MIXTURES.items():
    pools = dict(_pool(task, policy, data_dir) for task, policy in members)
    iterator = mixture.MixtureIterator(pools, {name: 1.0 for name in pools}, _BATCH_SIZE.value,
                                       _CONTEXT.value, max_patches=_MAX_PATCHES.value,
                                       patch_dim=768, seed=0, kinds=tasks.TASK_KINDS)
    iterator.batch_at(0)
    steps, tokens, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < _SECONDS.value:
      batch, _ = iterator.batch_at(steps)
      tokens += int(np.count_nonzero(batch.segment_ids))
      steps += 1
    seconds = time.perf_counter() - start
    print(json.dumps({
        "mixture": mixture_name, "tasks": sorted(pools), "context": _CONTEXT.value,
        "batch_size": _BATCH_SIZE.value,
        "sequences_per_second_per_core": round(steps * _BATCH_SIZE.value / seconds, 1),
        "tokens_per_second_per_core": round(tokens / seconds, 1),
        "fill": round(tokens / (steps * _BATCH_SIZE.value * _CONTEXT.value), 3),
        # Reading and tokenizing whole episodes happens once, when the pools load.
        "load_tokens_per_second": round(sum(_LOAD_TIMES[n][1] for n in pools)
                                        / sum(_LOAD_TIMES[n][0] for n in pools), 1),
    }), flush=True)


if __name__ == "__main__":
  app.run(main)
