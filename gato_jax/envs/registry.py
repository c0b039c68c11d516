"""Task and expert registries: "<domain>/<task>" names to environments and expert policies.

The one table of domains: those an environment plays and those of examples (text, image-text
pairs; gato_jax.sources.example_sets), and (from gato_jax.data.catalogue) the one reading of a
task's domain off its name (`domain_of`). Domains and experts are registered by import path
("module:attribute") and imported on first use, so listing tasks or importing gato_jax never
pulls in a simulator. A domain module exposes `TASKS` (its task names, without the domain) and,
for an environment domain, a factory `(task) -> Environment` (`make_env` unless registered
otherwise). An expert factory takes the Environment and returns a `policies.Policy`; domains
whose experts are trained (gymnax PPO, DM Control SAC) name the module that trains and loads them
(`trained_expert`), and user code registers others the same way:

  registry.register_expert("dm_control", "gato_jax.experts.dm_control_experts:make_expert")
"""

import importlib
from typing import Any, Callable

# The one reading of a domain off a task's name lives with the task catalogue, which needs it
# without environments.
from gato_jax.data.catalogue import domain_of
from gato_jax.envs import base, policies

# Every domain: domain -> ("module" exposing TASKS, name of its `(task) -> Environment` factory),
# the factory None for a domain of examples (text, image-text pairs) that
# gato_jax.sources.example_sets makes rather than an environment plays.
_DOMAINS: dict[str, tuple[str, str | None]] = {
  "atari": ("gato_jax.envs.atari", "make_env"),
  "babyai": ("gato_jax.envs.babyai", "make_env"),
  "dm_control": ("gato_jax.envs.dm_control_envs", "make_env"),
  # The same tasks rendered by MuJoCo (MUJOCO_GL=egl): "DM Control Suite Pixels".
  "dm_control_pixels": ("gato_jax.envs.dm_control_envs", "make_pixels_env"),
  "gymnax": ("gato_jax.envs.gymnax_envs", "GymnaxEnvironment"),
  # An optional extra (metaworld pins a mujoco that dm-control rejects): its tasks list
  # without the package; building one raises an ImportError saying how to install it.
  "metaworld": ("gato_jax.envs.metaworld_envs", "make_env"),
  "text": ("gato_jax.sources.text_data", None),
  "vision_language": ("gato_jax.sources.vision_language", None),
}
# Domains whose experts are trained here, task by task: domain -> (the module that trains, caches
# and loads them, with `train_expert`, `has_expert` and `make_expert`; the domain whose recipes,
# gato_jax/configs/experts/<domain>.py, train them). DM Control from pixels is played by the
# state task's SAC expert, acting on the state behind each frame.
_TRAINED_EXPERTS: dict[str, tuple[str, str]] = {
  "dm_control": ("gato_jax.experts.dm_control_experts", "dm_control"),
  "dm_control_pixels": ("gato_jax.experts.dm_control_experts", "dm_control"),
  # PPO parameters trained by tools/train_expert.py and cached outside the repository.
  "gymnax": ("gato_jax.experts.gymnax_experts", "gymnax"),
}
# domain -> "module:attribute" of a factory `(env) -> Policy`.
_EXPERTS: dict[str, str | Callable[[base.Environment], policies.Policy]] = {
  "babyai": "gato_jax.envs.babyai:make_expert",
  # The package's scripted policies (metaworld.policies). Atari has none: its expert data is
  # imported from RL Unplugged (gato_jax.sources.rl_unplugged).
  "metaworld": "gato_jax.envs.metaworld_envs:make_expert",
  **{domain: f"{module}:make_expert" for domain, (module, _) in _TRAINED_EXPERTS.items()},
}


def register_expert(domain: str, factory: str | Callable[[base.Environment], policies.Policy]):
  """Registers the expert of every task in `domain`: a callable or its "module:attribute"."""
  _EXPERTS[domain] = factory


def domains() -> list[str]:
  """The environment domains."""
  return sorted(domain for domain, (_, factory) in _DOMAINS.items() if factory)


def example_domains() -> list[str]:
  """The domains of examples (gato_jax.sources.example_sets)."""
  return sorted(domain for domain, (_, factory) in _DOMAINS.items() if factory is None)


def is_example_task(name: str) -> bool:
  """Whether a task is made of stored examples (text, captions) rather than played in an
  environment by an expert: its domain is an example domain."""
  return domain_of(name) in example_domains()


def split_task_name(name: str) -> tuple[str, str]:
  """ "babyai/GoToRedBall" -> ("babyai", "GoToRedBall"), with a clear error for other shapes."""
  domain, sep, task = name.partition("/")
  if not sep or not domain or not task:
    raise ValueError(
      f"task names look like '<domain>/<task>' (e.g. 'babyai/GoToRedBall'), got {name!r}"
    )
  return domain, task


def domain_module(domain: str, examples: bool = False):
  """The module exposing the TASKS of an environment domain (with `examples`: of an example
  domain); a clear error for any other name."""
  if examples and domain not in example_domains():
    raise ValueError(f"unknown example domain {domain!r}; example domains: {example_domains()}")
  if not examples and domain not in domains():
    raise ValueError(f"unknown domain {domain!r}; registered domains: {domains()}")
  return importlib.import_module(_DOMAINS[domain][0])


def list_tasks(domain: str) -> list[str]:
  """Full names ("<domain>/<task>") of a domain's tasks, in the module's order."""
  return [f"{domain}/{task}" for task in domain_module(domain).TASKS]


def make_env(name: str) -> base.Environment:
  """Builds the Environment of a task name such as "babyai/BossLevel"."""
  domain, task = split_task_name(name)
  module = domain_module(domain)
  if task not in module.TASKS:
    raise ValueError(f"unknown {domain} task {task!r}; known tasks: {list(module.TASKS)}")
  return getattr(module, _DOMAINS[domain][1])(task)


def trained_expert(task: str) -> tuple[str, str] | None:
  """(the module of its experts, the domain of its recipes) where `task`'s ("<domain>/<task>")
  expert is trained here; None where it is scripted or there is none."""
  return _TRAINED_EXPERTS.get(domain_of(task))


def trained_expert_domains() -> list[str]:
  return sorted(_TRAINED_EXPERTS)


def has_expert(name: str) -> bool:
  """Whether `name` has an expert: a trained domain's task only once its expert is trained
  (random-policy data and statistics of an untrained task must not need it)."""
  domain = split_task_name(name)[0]
  if domain not in _EXPERTS:
    return False
  trained = _TRAINED_EXPERTS.get(domain)
  return trained is None or bool(_resolve(f"{trained[0]}:has_expert")(name))


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
