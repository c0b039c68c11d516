"""A compact Soft Actor-Critic (Haarnoja et al., 2018) in JAX for continuous-control experts.

Why our own: the maintained JAX libraries do not fit. sbx-rl (0.28.0) is built on
stable-baselines3, which requires torch: pip resolves it to torch 2.14 with its CUDA wheels and
moves gymnasium off our 1.3.0 pin. rejax (0.1.3, its newest release) unpacks five values from
gymnax's `env.step`, which returns six in gymnax 1.0.1 (see ppo.py); its DM Control route would
be the MJX ports of mujoco_playground, which resolve with our pins but are other
implementations of the tasks than the dm_control suite our data comes from, and MJX on a CPU
is far slower than MuJoCo's C simulator.

This module is the algorithm only, over flat float32 vectors: twin Q critics with Polyak-averaged
targets, a tanh-squashed Gaussian actor, an automatically tuned entropy temperature and a numpy
replay buffer. The environment loop lives with its caller (dm_control_experts.py); updates run
in jitted blocks (`lax.scan` over several sampled batches) so the Python/dispatch overhead is
paid once per block rather than once per gradient step, which dominates small MLPs on a CPU.
Actions live in Gato's [-1, 1] range, so the squashing needs no rescaling.
"""

import dataclasses
import time
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gato_jax.experts import cache


@dataclasses.dataclass(frozen=True)
class SACConfig:
  """SAC hyper-parameters; gato_jax/configs/experts/dm_control.py holds one set per task."""

  total_env_steps: int = 100_000  # Environment (control) steps, action repeats included.
  action_repeat: int = 1  # Control steps each agent action is held for.
  random_steps: int = 5_000  # Agent steps of uniform random actions before learning starts.
  batch_size: int = 256
  buffer_size: int = 1_000_000  # Transitions kept (agent steps).
  hidden_sizes: tuple[int, ...] = (256, 256)
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  temperature_lr: float = 3e-4
  gamma: float = 0.99
  tau: float = 0.005  # Polyak rate of the target critics.
  init_temperature: float = 0.1
  # Entropy the temperature steers towards; None: -action_dim, the SAC paper's heuristic.
  target_entropy: float | None = None
  updates_per_step: int = 1  # Gradient steps per agent step (the update-to-data ratio).
  # Agent steps between jitted update blocks (each block does updates_per_step * this many).
  update_every: int = 50
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  def __post_init__(self):
    object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
    for name in (
      "total_env_steps",
      "action_repeat",
      "batch_size",
      "buffer_size",
      "updates_per_step",
      "update_every",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"SACConfig.{name} must be positive, got {getattr(self, name)}")
    if self.random_steps < 0:
      raise ValueError(f"SACConfig.random_steps must be >= 0, got {self.random_steps}")
    if not 0.0 < self.tau <= 1.0:
      raise ValueError(f"SACConfig.tau must be in (0, 1], got {self.tau}")
    if self.log_std_min >= self.log_std_max:
      raise ValueError(
        f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})"
      )

  @property
  def agent_steps(self) -> int:
    return self.total_env_steps // self.action_repeat


def _mlp(x, hidden_sizes: Sequence[int], out_size: int, name: str):
  for i, size in enumerate(hidden_sizes):
    x = nn.relu(nn.Dense(size, name=f"{name}_{i}")(x))
  return nn.Dense(out_size, name=f"{name}_out")(x)


class Actor(nn.Module):
  """obs [..., F] -> (mean, log_std) [..., A] of the Gaussian before the tanh squashing."""

  action_dim: int
  hidden_sizes: Sequence[int] = (256, 256)
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, obs):
    out = _mlp(obs, self.hidden_sizes, 2 * self.action_dim, "actor")
    mean, raw_log_std = jnp.split(out, 2, axis=-1)
    # A smooth squash into [min, max] keeps gradients alive where clipping would cut them.
    log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
      jnp.tanh(raw_log_std) + 1.0
    )
    return mean, log_std


class TwinCritic(nn.Module):
  """(obs [..., F], action [..., A]) -> (q1, q2) [...]: two independent Q networks."""

  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs, action):
    x = jnp.concatenate([obs, action], axis=-1)
    return (
      _mlp(x, self.hidden_sizes, 1, "q1")[..., 0],
      _mlp(x, self.hidden_sizes, 1, "q2")[..., 0],
    )


def squashed_gaussian_log_prob(mean, log_std, pre_tanh):
  """log density of tanh(u), u ~ N(mean, exp(log_std)^2), at action tanh(pre_tanh); sums dims.

  The change of variables subtracts log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), a form
  that stays finite where tanh(u) rounds to +-1.
  """
  z = (pre_tanh - mean) * jnp.exp(-log_std)
  gaussian = -0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
  log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
  return jnp.sum(gaussian - log_det, axis=-1)


def sample_squashed(mean, log_std, key):
  """A reparameterised sample tanh(mean + std * eps) and its log-probability."""
  pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
  return jnp.tanh(pre_tanh), squashed_gaussian_log_prob(mean, log_std, pre_tanh)


def critic_target(reward, discount, next_q1, next_q2, next_log_prob, temperature, gamma):
  """The soft Bellman target r + gamma * discount * (min(Q1', Q2') - alpha * log pi(a'|s'))."""
  soft_value = jnp.minimum(next_q1, next_q2) - temperature * next_log_prob
  return reward + gamma * discount * soft_value


def polyak_update(target, online, tau: float):
  """target <- (1 - tau) * target + tau * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


@struct.dataclass
class SACState:
  actor_params: Any
  critic_params: Any
  target_critic_params: Any
  log_temperature: jax.Array
  actor_opt: Any
  critic_opt: Any
  temperature_opt: Any
  steps: jax.Array  # Gradient steps taken.


class SAC:
  """SAC's networks, optimisers and jitted functions for one (obs_dim, action_dim) problem."""

  def __init__(self, obs_dim: int, action_dim: int, config: SACConfig):
    if obs_dim < 1 or action_dim < 1:
      raise ValueError(f"obs_dim and action_dim must be positive, got {obs_dim}, {action_dim}")
    self.obs_dim, self.action_dim, self.config = int(obs_dim), int(action_dim), config
    self.actor = Actor(self.action_dim, config.hidden_sizes, config.log_std_min, config.log_std_max)
    self.critic = TwinCritic(config.hidden_sizes)
    self.target_entropy = (
      -float(self.action_dim) if config.target_entropy is None else float(config.target_entropy)
    )
    self.actor_tx = optax.adam(config.actor_lr)
    self.critic_tx = optax.adam(config.critic_lr)
    self.temperature_tx = optax.adam(config.temperature_lr)
    self.update_block = jax.jit(self._update_block, donate_argnums=0)
    self.act = jax.jit(self._act, static_argnames="deterministic")

  def init_actor_params(self, key):
    return self.actor.init(key, jnp.zeros((1, self.obs_dim), jnp.float32))

  def init(self, key) -> SACState:
    key_actor, key_critic = jax.random.split(key)
    actor_params = self.init_actor_params(key_actor)
    critic_params = self.critic.init(
      key_critic,
      jnp.zeros((1, self.obs_dim), jnp.float32),
      jnp.zeros((1, self.action_dim), jnp.float32),
    )
    log_temperature = jnp.asarray(np.log(self.config.init_temperature), jnp.float32)
    return SACState(
      actor_params=actor_params,
      critic_params=critic_params,
      # A copy, not an alias: update_block donates the state, and a buffer cannot be donated
      # twice.
      target_critic_params=jax.tree.map(jnp.copy, critic_params),
      log_temperature=log_temperature,
      actor_opt=self.actor_tx.init(actor_params),
      critic_opt=self.critic_tx.init(critic_params),
      temperature_opt=self.temperature_tx.init(log_temperature),
      steps=jnp.zeros((), jnp.int32),
    )

  def _act(self, actor_params, obs, key, deterministic: bool = False):
    """obs [..., F] -> action [..., A] in [-1, 1]: tanh(mean) or a sample."""
    mean, log_std = self.actor.apply(actor_params, obs)
    if deterministic:
      return jnp.tanh(mean)
    return sample_squashed(mean, log_std, key)[0]

  def update(self, state: SACState, batch: dict, key) -> tuple[SACState, dict]:
    """One gradient step of critics, actor and temperature, then the target update.

    batch: obs [B, F], action [B, A], reward [B], discount [B] (0 at terminal states, else 1),
    next_obs [B, F].
    """
    c = self.config
    key_next, key_actor = jax.random.split(key)
    temperature = jnp.exp(state.log_temperature)

    next_mean, next_log_std = self.actor.apply(state.actor_params, batch["next_obs"])
    next_action, next_log_prob = sample_squashed(next_mean, next_log_std, key_next)
    next_q1, next_q2 = self.critic.apply(state.target_critic_params, batch["next_obs"], next_action)
    target = jax.lax.stop_gradient(
      critic_target(
        batch["reward"], batch["discount"], next_q1, next_q2, next_log_prob, temperature, c.gamma
      )
    )

    def critic_loss_fn(critic_params):
      q1, q2 = self.critic.apply(critic_params, batch["obs"], batch["action"])
      return 0.5 * jnp.mean((q1 - target) ** 2 + (q2 - target) ** 2), jnp.mean(q1)

    (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
      state.critic_params
    )
    updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, updates)

    def actor_loss_fn(actor_params):
      mean, log_std = self.actor.apply(actor_params, batch["obs"])
      action, log_prob = sample_squashed(mean, log_std, key_actor)
      q1, q2 = self.critic.apply(critic_params, batch["obs"], action)
      return jnp.mean(temperature * log_prob - jnp.minimum(q1, q2)), log_prob

    (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
      state.actor_params
    )
    updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, updates)

    entropy = -jax.lax.stop_gradient(log_prob).mean()

    def temperature_loss_fn(log_temperature):
      # Raises alpha while the policy's entropy is below target, lowers it above.
      return jnp.exp(log_temperature) * (entropy - self.target_entropy)

    temperature_loss, grad = jax.value_and_grad(temperature_loss_fn)(state.log_temperature)
    updates, temperature_opt = self.temperature_tx.update(grad, state.temperature_opt)
    log_temperature = optax.apply_updates(state.log_temperature, updates)

    state = SACState(
      actor_params=actor_params,
      critic_params=critic_params,
      target_critic_params=polyak_update(state.target_critic_params, critic_params, c.tau),
      log_temperature=log_temperature,
      actor_opt=actor_opt,
      critic_opt=critic_opt,
      temperature_opt=temperature_opt,
      steps=state.steps + 1,
    )
    metrics = dict(
      critic_loss=critic_loss,
      actor_loss=actor_loss,
      q=q_mean,
      entropy=entropy,
      temperature=temperature,
      temperature_loss=temperature_loss,
    )
    return state, metrics

  def _update_block(self, state: SACState, batches: dict, key):
    """Scans `update` over batches with leaves [K, B, ...]; returns mean metrics."""
    num = jax.tree.leaves(batches)[0].shape[0]

    def step(state, inputs):
      batch, key = inputs
      return self.update(state, batch, key)

    state, metrics = jax.lax.scan(step, state, (batches, jax.random.split(key, num)))
    return state, jax.tree.map(jnp.mean, metrics)


class ReplayBuffer:
  """A ring buffer of (obs, action, reward, discount, next_obs) transitions in numpy."""

  def __init__(self, capacity: int, obs_dim: int, action_dim: int):
    if capacity < 1:
      raise ValueError(f"replay capacity must be positive, got {capacity}")
    self.capacity = int(capacity)
    self._data = dict(
      obs=np.zeros((capacity, obs_dim), np.float32),
      action=np.zeros((capacity, action_dim), np.float32),
      reward=np.zeros((capacity,), np.float32),
      discount=np.zeros((capacity,), np.float32),
      next_obs=np.zeros((capacity, obs_dim), np.float32),
    )
    self._next = 0
    self.size = 0

  def add(self, obs, action, reward: float, discount: float, next_obs) -> None:
    i = self._next
    self._data["obs"][i] = obs
    self._data["action"][i] = action
    self._data["reward"][i] = reward
    self._data["discount"][i] = discount
    self._data["next_obs"][i] = next_obs
    self._next = (i + 1) % self.capacity
    self.size = min(self.size + 1, self.capacity)

  def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    """Uniformly drawn transitions (with replacement), each leaf [*shape, ...]."""
    if self.size == 0:
      raise ValueError("cannot sample from an empty replay buffer")
    indices = rng.integers(0, self.size, shape)
    return {k: v[indices] for k, v in self._data.items()}


def observation_keys(env) -> tuple[str, ...]:
  """The observation leaves of `env`, in the fixed (sorted) order they are concatenated in."""
  if not isinstance(env.observation_spec, dict):
    raise ValueError(
      f"{env.name}: SAC expects a dict of continuous observations, got"
      f" {type(env.observation_spec).__name__}"
    )
  return tuple(sorted(env.observation_spec))


def flatten_observation(observation: dict, keys: Sequence[str]) -> np.ndarray:
  """A dict observation -> one float32 vector, leaves concatenated in `keys` order."""
  return np.concatenate([np.asarray(observation[k], np.float32).reshape(-1) for k in keys])


def problem_dims(env) -> tuple[int, int]:
  """(flat observation size, action size) of an environment with continuous actions."""
  keys = observation_keys(env)
  obs_dim = sum(int(np.prod(env.observation_spec[k].shape)) for k in keys)
  action_shape = getattr(env.action_spec, "shape", None)
  if action_shape is None or len(action_shape) != 1 or not hasattr(env.action_spec, "mu_law"):
    raise ValueError(f"{env.name}: SAC needs one continuous action vector, got {env.action_spec}")
  return obs_dim, int(action_shape[0])


def train(
  env,
  config: SACConfig,
  seed: int = 0,
  log_every: int = 10_000,
  log_fn=None,
  checkpoint: str | None = None,
  checkpoint_seconds: float = 60.0,
) -> tuple[Any, dict[str, np.ndarray]]:
  """Trains SAC on `env` (a base.Environment with dict observations and [-1, 1] actions).

  Episodes reset with seeds seed * 1_000_003 + episode index; each agent action is held for
  `config.action_repeat` environment steps, whose rewards add up. Time limits truncate, so
  the discount stays 1 unless the environment terminates.

  Args:
    env: the environment; its `max_episode_steps` bounds every episode.
    config: hyper-parameters.
    seed: seeds parameters, exploration, replay sampling and episode resets.
    log_every: environment steps between `log_fn` calls.
    log_fn: called as log_fn(env_steps_so_far, metrics of the last update block and the mean
      return of episodes finished since the previous call).
    checkpoint: a file that holds the whole training state (networks, optimisers, replay, random
      generators) as an episode ends, written at most every `checkpoint_seconds`. A run that
      finds one for the same task, config and seed continues from that episode's end (the
      simulator's state is not saved, so only episode ends are resumable) and ends with the
      parameters of an uninterrupted run.

  Returns:
    (actor params, history): per finished episode "episode_return" and "episode_end_step"
    (environment steps at its end).
  """
  keys = observation_keys(env)
  obs_dim, action_dim = problem_dims(env)
  agent = SAC(obs_dim, action_dim, config)
  key_init, key_act, key_update = jax.random.split(jax.random.key(seed), 3)
  state = agent.init(key_init)
  buffer = ReplayBuffer(min(config.buffer_size, config.agent_steps), obs_dim, action_dim)
  rng = np.random.default_rng(seed)

  loop = dict(step=0, episode=0, env_steps=0, returns=[], end_steps=[], recent=[], metrics={})
  loop["next_log"] = log_every
  fingerprint = dict(env=env.name, config=dataclasses.asdict(config), seed=seed)
  saved = cache.load_progress(checkpoint, fingerprint)
  if saved is not None:
    loop, rng.bit_generator.state = saved["loop"], saved["rng"]
    state = jax.tree.map(jnp.asarray, saved["state"])
    buffer.__dict__.update(saved["buffer"])
    logging.info("%s: resuming SAC at agent step %d", env.name, loop["step"])
  last_save = time.time()
  episode_return, episode_steps = 0.0, 0
  obs = flatten_observation(env.reset(seed * 1_000_003 + loop["episode"]), keys)
  for step in range(loop["step"], config.agent_steps):
    if step < config.random_steps:
      action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
    else:
      action = np.asarray(agent.act(state.actor_params, obs, jax.random.fold_in(key_act, step)))
    reward, terminated, truncated = 0.0, False, False
    for _ in range(config.action_repeat):
      result = env.step(action)
      reward += result.reward
      loop["env_steps"] += 1
      episode_steps += 1
      terminated = result.terminated
      truncated = result.truncated or episode_steps >= env.max_episode_steps
      if terminated or truncated:
        break
    next_obs = flatten_observation(result.observation, keys)
    buffer.add(obs, action, reward, 0.0 if terminated else 1.0, next_obs)
    episode_return += reward
    obs = next_obs
    if terminated or truncated:
      loop["returns"].append(episode_return)
      loop["end_steps"].append(loop["env_steps"])
      loop["recent"].append(episode_return)
      loop["episode"], episode_return, episode_steps = loop["episode"] + 1, 0.0, 0
      obs = flatten_observation(env.reset(seed * 1_000_003 + loop["episode"]), keys)

    if step + 1 >= config.random_steps and (step + 1) % config.update_every == 0:
      num_updates = config.update_every * config.updates_per_step
      batches = buffer.sample(rng, (num_updates, config.batch_size))
      state, loop["metrics"] = agent.update_block(
        state, batches, jax.random.fold_in(key_update, step)
      )
    if log_fn is not None and loop["env_steps"] >= loop["next_log"]:
      loop["next_log"] += log_every
      summary = {k: float(v) for k, v in loop["metrics"].items()}
      recent = loop["recent"]
      summary["episode_return"] = float(np.mean(recent)) if recent else float("nan")
      log_fn(loop["env_steps"], summary)
      loop["recent"] = []
    if checkpoint and episode_steps == 0 and time.time() - last_save >= checkpoint_seconds:
      loop["step"] = step + 1
      cache.save_progress(
        checkpoint,
        fingerprint,
        dict(
          loop=jax.device_get(loop),
          rng=rng.bit_generator.state,
          state=jax.device_get(state),
          buffer=dict(buffer.__dict__),
        ),
      )
      last_save = time.time()
  history = dict(
    episode_return=np.asarray(loop["returns"], np.float64),
    episode_end_step=np.asarray(loop["end_steps"], np.int64),
  )
  return jax.device_get(state.actor_params), history
