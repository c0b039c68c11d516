"""Task and expert registries: "<domain>/<task>" names to environments and expert policies.

Domains and experts are registered by import path ("module:attribute") and imported on first
use, so listing tasks or importing gato_jax never pulls in a simulator. A domain module exposes
`TASKS` (its task names, without the domain) and a factory `(task) -> Environment` (`make_env`
unless registered otherwise). An expert
factory takes the Environment and returns a `policies.Policy`; domains whose experts are trained
(gymnax PPO, DM Control SAC) register theirs the same way once the parameters exist:

  registry.register_expert("dm_control", "gato_jax.experts.dm_control_experts:make_expert")
"""

import importlib
from typing import Any, Callable

from gato_jax.envs import base, policies

# domain -> ("module" exposing TASKS, name of its `(task) -> Environment` factory).
_DOMAINS: dict[str, tuple[str, str]] = {
  "atari": ("gato_jax.envs.atari", "make_env"),
  "babyai": ("gato_jax.envs.babyai", "make_env"),
  "dm_control": ("gato_jax.envs.dm_control_envs", "make_env"),
  # The same tasks rendered by MuJoCo (MUJOCO_GL=egl): "DM Control Suite Pixels".
  "dm_control_pixels": ("gato_jax.envs.dm_control_envs", "make_pixels_env"),
  "gymnax": ("gato_jax.envs.gymnax_envs", "GymnaxEnvironment"),
  # An optional extra (metaworld pins a mujoco that dm-control rejects): its tasks list
  # without the package; building one raises an ImportError saying how to install it.
  "metaworld": ("gato_jax.envs.metaworld_envs", "make_env"),
}
# domain -> "module:attribute" of a factory `(env) -> Policy`.
_EXPERTS: dict[str, str | Callable[[base.Environment], policies.Policy]] = {
  "babyai": "gato_jax.envs.babyai:make_expert",
  # SAC actors trained by tools/train_expert.py --domain=dm_control, cached like gymnax's.
  "dm_control": "gato_jax.experts.dm_control_experts:make_expert",
  # The state task's SAC expert, acting on the state behind each frame.
  "dm_control_pixels": "gato_jax.experts.dm_control_experts:make_expert",
  # PPO parameters trained by tools/train_expert.py and cached outside the repository.
  "gymnax": "gato_jax.experts.gymnax_experts:make_expert",
  # The package's scripted policies (metaworld.policies). Atari has none: its expert data is
  # imported from RL Unplugged (gato_jax.data.rl_unplugged).
  "metaworld": "gato_jax.envs.metaworld_envs:make_expert",
}


def register_expert(domain: str, factory: str | Callable[[base.Environment], policies.Policy]):
  """Registers the expert of every task in `domain`: a callable or its "module:attribute"."""
  _EXPERTS[domain] = factory


def domains() -> list[str]:
  return sorted(_DOMAINS)


def split_task_name(name: str) -> tuple[str, str]:
  """ "babyai/GoToRedBall" -> ("babyai", "GoToRedBall"), with a clear error for other shapes."""
  domain, sep, task = name.partition("/")
  if not sep or not domain or not task:
    raise ValueError(
      f"task names look like '<domain>/<task>' (e.g. 'babyai/GoToRedBall'), got {name!r}"
    )
  return domain, task


def _domain_module(domain: str):
  if domain not in _DOMAINS:
    raise ValueError(f"unknown domain {domain!r}; registered domains: {domains()}")
  return importlib.import_module(_DOMAINS[domain][0])


def list_tasks(domain: str) -> list[str]:
  """Full names ("<domain>/<task>") of a domain's tasks, in the module's order."""
  return [f"{domain}/{task}" for task in _domain_module(domain).TASKS]


def make_env(name: str) -> base.Environment:
  """Builds the Environment of a task name such as "babyai/BossLevel"."""
  domain, task = split_task_name(name)
  module = _domain_module(domain)
  if task not in module.TASKS:
    raise ValueError(f"unknown {domain} task {task!r}; known tasks: {list(module.TASKS)}")
  return getattr(module, _DOMAINS[domain][1])(task)


# domain -> "module:attribute" of `(task name) -> bool`, for domains whose experts are trained
# task by task: has_expert then says whether this task's expert exists (random-policy data and
# statistics of an untrained task must not need it). Other domains have an expert for every task.
_EXPERT_AVAILABLE: dict[str, str] = {
  "dm_control": "gato_jax.experts.dm_control_experts:has_expert",
  "dm_control_pixels": "gato_jax.experts.dm_control_experts:has_expert",
  "gymnax": "gato_jax.experts.gymnax_experts:has_expert",
}


def has_expert(name: str) -> bool:
  domain = split_task_name(name)[0]
  if domain not in _EXPERTS:
    return False
  check = _EXPERT_AVAILABLE.get(domain)
  return check is None or bool(_resolve(check)(name))


def _resolve(factory: Any) -> Callable:
  if callable(factory):
    return factory
  module, sep, attribute = factory.partition(":")
  if not sep:
    raise ValueError(f"expert factories are registered as 'module:attribute', got {factory!r}")
  return getattr(importlib.import_module(module), attribute)


def make_expert(env: base.Environment) -> policies.Policy:
  """The expert policy of `env`'s task; a clear error where none is registered (yet)."""
  domain, _ = split_task_name(env.name)
  if domain not in _EXPERTS:
    raise LookupError(
      f"no expert is registered for domain {domain!r} (task {env.name!r}); domains with"
      f" experts: {sorted(_EXPERTS)}. Register one with registry.register_expert, or generate"
      " random-policy data instead."
    )
  return _resolve(_EXPERTS[domain])(env)
