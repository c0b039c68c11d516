"""A compact PPO (clipped objective, GAE) that trains gymnax experts under jit + vmap.

Why our own: rejax (the maintained pure-JAX library, newest PyPI release 0.1.3) unpacks five
values from `env.step`, while gymnax 1.0.1 returns six (`terminated` and `truncated` apart), so
it breaks on our pins. This module keeps to Flax + Optax and follows PureJaxRL's layout: the
whole update (a `lax.scan` rollout of vmapped environments, GAE, epochs of minibatch steps) is
one jitted function, and `train` scans it in chunks to log progress.

Actions live in Gato's space: discrete ids, or continuous values whose clip to [-1, 1] the
environment rescales (`gymnax_envs.unit_to_env_action`). Time-limit truncation bootstraps from
the value of the true final observation instead of counting as a terminal state.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gato_jax.envs import gymnax_envs
from gato_jax.experts import cache


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO hyper-parameters; gato_jax/configs/experts/gymnax.py holds one set per task."""

  total_timesteps: int = 200_000  # Environment steps over all parallel environments.
  num_envs: int = 8  # Parallel (vmapped) environments.
  num_steps: int = 128  # Rollout length per environment and update.
  num_epochs: int = 4  # Passes over each rollout.
  num_minibatches: int = 4  # Minibatches per pass.
  learning_rate: float = 2.5e-4
  anneal_lr: bool = True  # Linear decay to 0 over training.
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2  # Policy-ratio clipping range.
  # Value clipping (PPO2's) limits how far V moves per update, ~clip_eps: with returns of -100
  # (Acrobot, MountainCar) the critic then lags for hundreds of updates. Off by default.
  clip_value: bool = False
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  reward_scale: float = 1.0  # Rewards are multiplied by this for learning only (Pendulum: 0.1).
  hidden_sizes: tuple[int, ...] = (64, 64)
  activation: str = "tanh"  # "tanh" or "relu".
  init_log_std: float = 0.0  # Continuous actions: initial log std of the Gaussian.
  # > 0: grid observations (MinAtar) go through a shared convolutional torso first (this many
  # 2x2 filters, ReLU, 2x2 average pooling, a ReLU layer of `torso_size`), as Pgx's PureJaxRL-
  # derived MinAtar PPO does; 0: the flattened grid goes straight into the MLPs.
  conv_features: int = 0
  torso_size: int = 64
  # True: bounded observation dims are mapped to [-1, 1] (`observation_normalizer`); False: fed
  # as they are. MinAtar's recipes feed the 0/1 grids raw, as gymnax-blines does: mapped to -1/+1,
  # every empty cell feeds the first layer (README, Experts, for what it measured).
  scale_observations: bool = True
  # "orthogonal": CleanRL's (sqrt(2) hidden layers, 0.01 actor head, 1.0 critic head, zero
  # biases). "lecun": Flax's default kernels with uniform(0.05) biases everywhere, as
  # gymnax-blines' MinAtar agents: a less uniform initial policy.
  init_scheme: str = "orthogonal"

  def __post_init__(self):
    object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
    if self.activation not in ("tanh", "relu"):
      raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")
    if self.init_scheme not in ("orthogonal", "lecun"):
      raise ValueError(f"init_scheme must be 'orthogonal' or 'lecun', got {self.init_scheme!r}")
    if self.conv_features < 0 or self.torso_size < 1:
      raise ValueError(
        f"conv_features must be >= 0 and torso_size >= 1, got {self.conv_features},"
        f" {self.torso_size}"
      )
    if self.batch_size % self.num_minibatches:
      raise ValueError(
        f"num_envs * num_steps ({self.batch_size}) must divide into"
        f" {self.num_minibatches} minibatches"
      )
    if self.num_updates < 1:
      raise ValueError(
        f"total_timesteps ({self.total_timesteps}) is less than one rollout"
        f" ({self.batch_size} steps)"
      )

  @property
  def batch_size(self) -> int:
    return self.num_envs * self.num_steps

  @property
  def num_updates(self) -> int:
    return self.total_timesteps // self.batch_size


class ActorCritic(nn.Module):
  """Separate actor and critic MLPs over the flattened, normalised observation (or over a shared
  convolutional torso's features of a grid observation, with `conv_features`)."""

  action_dim: int  # Number of discrete actions, or the continuous action size.
  discrete: bool
  hidden_sizes: Sequence[int] = (64, 64)
  activation: str = "tanh"
  init_log_std: float = 0.0
  obs_ndim: int = 1  # Trailing observation dims that are flattened (3 for MinAtar grids).
  conv_features: int = 0
  torso_size: int = 64
  init_scheme: str = "orthogonal"  # PPOConfig.init_scheme

  @nn.compact
  def __call__(self, obs):
    """obs [..., *obs_shape] -> (logits or mean [..., action_dim], value [...])."""
    act = jnp.tanh if self.activation == "tanh" else nn.relu
    if self.init_scheme == "lecun":
      lecun, bias = nn.initializers.lecun_normal(), nn.initializers.uniform(0.05)
      dense = lambda size, scale, name: nn.Dense(size, kernel_init=lecun, bias_init=bias, name=name)
    else:
      dense = lambda size, scale, name: nn.Dense(
        size, kernel_init=nn.initializers.orthogonal(scale), name=name
      )
    batch_shape = obs.shape[: obs.ndim - self.obs_ndim]
    if self.conv_features:
      if self.obs_ndim != 3:
        raise ValueError(f"a convolutional torso needs [H, W, C] observations, not {obs.shape}")
      x = obs.reshape((-1,) + obs.shape[-3:])  # [N, H, W, C]
      x = nn.relu(nn.Conv(self.conv_features, (2, 2), padding="VALID", name="conv")(x))
      x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      x = x.reshape(batch_shape + (-1,))
      x = nn.relu(dense(self.torso_size, np.sqrt(2), "torso")(x))
    else:
      x = obs.reshape(batch_shape + (-1,))  # [..., F]

    def mlp(h, head_size, head_scale, name):
      for i, size in enumerate(self.hidden_sizes):
        h = act(dense(size, np.sqrt(2), f"{name}_{i}")(h))
      return dense(head_size, head_scale, f"{name}_head")(h)

    # Orthogonal init: a small actor head starts near-uniform/zero-mean; the critic head has unit
    # scale.
    policy_out = mlp(x, self.action_dim, 0.01, "actor")
    value = mlp(x, 1, 1.0, "critic")[..., 0]
    if self.discrete:
      return policy_out, value
    log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
    return (policy_out, jnp.broadcast_to(log_std, policy_out.shape)), value


# Distribution helpers: `dist` is logits [..., A] (discrete) or (mean, log_std) (continuous).
def sample(dist, key, discrete: bool):
  if discrete:
    return jax.random.categorical(key, dist)
  mean, log_std = dist
  return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


def mode(dist, discrete: bool):
  return jnp.argmax(dist, axis=-1) if discrete else dist[0]


def log_prob(dist, action, discrete: bool):
  if discrete:
    logp = jax.nn.log_softmax(dist)
    return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
  mean, log_std = dist
  z = (action - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def entropy(dist, discrete: bool):
  if discrete:
    logp = jax.nn.log_softmax(dist)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  return jnp.sum(dist[1] + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def observation_normalizer(env_id: str) -> tuple[np.ndarray, np.ndarray]:
  """(centre, half_range) from the observation space's finite bounds; unbounded dims pass as is.

  MountainCar's velocity lives in [-0.07, 0.07]; scaling each bounded dim to [-1, 1] lets one set
  of network hyper-parameters serve every task without running statistics to save.
  """
  env, params = gymnax_envs.make(env_id)
  # Bounds are constants; computing them eagerly keeps this callable inside a traced function.
  with jax.ensure_compile_time_eval():
    space = env.observation_space(params)
    shape = tuple(space.shape)
    low = np.broadcast_to(np.asarray(space.low, np.float64), shape)
    high = np.broadcast_to(np.asarray(space.high, np.float64), shape)
  bounded = np.isfinite(low) & np.isfinite(high) & (high - low < 1e3) & (high > low)
  centre = np.where(bounded, (high + low) / 2, 0.0).astype(np.float32)
  half = np.where(bounded, (high - low) / 2, 1.0).astype(np.float32)
  return centre, half


def make_network(env_id: str, config: PPOConfig) -> tuple[ActorCritic, Callable]:
  """The task's ActorCritic and its observation preprocessing (normalisation)."""
  env, params = gymnax_envs.make(env_id)
  space = env.action_space(params)
  discrete = hasattr(space, "n")
  obs_shape = tuple(env.observation_space(params).shape)
  network = ActorCritic(
    action_dim=int(space.n) if discrete else int(np.prod(space.shape)),
    discrete=discrete,
    hidden_sizes=config.hidden_sizes,
    activation=config.activation,
    init_log_std=config.init_log_std,
    obs_ndim=len(obs_shape),
    conv_features=config.conv_features,
    torso_size=config.torso_size,
    init_scheme=config.init_scheme,
  )
  if not config.scale_observations:
    return network, lambda obs: jnp.asarray(obs, jnp.float32)
  centre, half = observation_normalizer(env_id)
  preprocess = lambda obs: (jnp.asarray(obs, jnp.float32) - centre) / half
  return network, preprocess


def init_params(env_id: str, config: PPOConfig, key) -> Any:
  env, params = gymnax_envs.make(env_id)
  network, _ = make_network(env_id, config)
  obs_shape = tuple(env.observation_space(params).shape)
  return network.init(key, jnp.zeros((1,) + obs_shape, jnp.float32))


def params_template(env_id: str, config: PPOConfig) -> Any:
  """The parameters' tree of shapes and dtypes, which a cached expert's are read into: traced by
  `jax.eval_shape`, as running `init_params` eagerly compiles each of its ops (seconds a load)."""
  # Built outside the trace: the first call makes (and caches) the gymnax environment, whose
  # parameters would otherwise be cached as the trace's tracers (Acrobot's are jax arrays).
  network, _ = make_network(env_id, config)
  observation = jax.ShapeDtypeStruct((1, *gymnax_envs.observation_shape(env_id)), jnp.float32)
  return jax.eval_shape(network.init, jax.random.key(0), observation)


def make_policy(env_id: str, config: PPOConfig, params, deterministic: bool = True):
  """A pure `gymnax_envs.PolicyFn`: (observation, key) -> Gato action (clipped to [-1, 1])."""
  network, preprocess = make_network(env_id, config)

  def policy(obs, key):
    dist, _ = network.apply(params, preprocess(obs))
    action = mode(dist, network.discrete) if deterministic else sample(dist, key, network.discrete)
    return action.astype(jnp.int32) if network.discrete else jnp.clip(action, -1.0, 1.0)

  return policy


def make_update_fn(env_id: str, config: PPOConfig):
  """(init(key) -> runner, update(runner) -> (runner, metrics)) for one PPO update."""
  env, env_params = gymnax_envs.make(env_id)
  space = env.action_space(env_params)
  network, preprocess = make_network(env_id, config)
  obs_shape = tuple(env.observation_space(env_params).shape)
  discrete = network.discrete
  c = config
  steps_per_update = c.num_epochs * c.num_minibatches

  def schedule(count):
    frac = 1.0 - (count // steps_per_update) / c.num_updates
    return c.learning_rate * frac if c.anneal_lr else c.learning_rate

  tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(schedule, eps=1e-5))
  v_reset = jax.vmap(env.reset, in_axes=(0, None))
  v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

  def init(key):
    key_params, key_env, key_run = jax.random.split(key, 3)
    params = network.init(key_params, jnp.zeros((1,) + obs_shape, jnp.float32))
    state = train_state.TrainState.create(apply_fn=network.apply, params=params, tx=tx)
    obs, env_state = v_reset(jax.random.split(key_env, c.num_envs), env_params)
    zeros = jnp.zeros((c.num_envs,), jnp.float32)
    return (state, env_state, obs, zeros, key_run)

  def env_step(carry, _):
    state, env_state, obs, ep_return, key = carry
    key, key_act, key_env = jax.random.split(key, 3)
    dist, value = network.apply(state.params, preprocess(obs))
    action = sample(dist, key_act, discrete)
    logp = log_prob(dist, action, discrete)
    env_action = jax.vmap(lambda a: gymnax_envs.unit_to_env_action(space, a))(action)
    next_obs, env_state, reward, terminated, truncated, info = v_step(
      jax.random.split(key_env, c.num_envs), env_state, env_action, env_params
    )
    done = terminated | truncated
    # A time limit is not a terminal state: fold gamma * V(final observation) into the reward.
    _, final_value = network.apply(state.params, preprocess(info["final_observation"]))
    learn_reward = reward * c.reward_scale + c.gamma * final_value * (truncated & ~terminated)
    ep_return = ep_return + reward
    transition = dict(
      obs=obs,
      action=action,
      logp=logp,
      value=value,
      reward=learn_reward,
      done=done,
      episode_return=jnp.where(done, ep_return, 0.0),
    )
    ep_return = jnp.where(done, 0.0, ep_return)
    return (state, env_state, next_obs, ep_return, key), transition

  def gae(traj, last_value):
    def body(carry, t):
      next_adv, next_value = carry
      not_done = 1.0 - t["done"].astype(jnp.float32)
      delta = t["reward"] + c.gamma * next_value * not_done - t["value"]
      adv = delta + c.gamma * c.gae_lambda * not_done * next_adv
      return (adv, t["value"]), adv

    init = (jnp.zeros_like(last_value), last_value)
    _, adv = jax.lax.scan(body, init, traj, reverse=True)
    return adv, adv + traj["value"]

  def loss_fn(params, batch):
    dist, value = network.apply(params, preprocess(batch["obs"]))
    logp = log_prob(dist, batch["action"], discrete)
    ratio = jnp.exp(logp - batch["logp"])
    adv = (batch["adv"] - batch["adv"].mean()) / (batch["adv"].std() + 1e-8)
    policy_loss = -jnp.minimum(
      ratio * adv, jnp.clip(ratio, 1 - c.clip_eps, 1 + c.clip_eps) * adv
    ).mean()
    value_loss = (value - batch["target"]) ** 2
    if c.clip_value:
      value_clipped = batch["value"] + jnp.clip(value - batch["value"], -c.clip_eps, c.clip_eps)
      value_loss = jnp.maximum(value_loss, (value_clipped - batch["target"]) ** 2)
    value_loss = 0.5 * value_loss.mean()
    ent = entropy(dist, discrete).mean()
    total = policy_loss + c.vf_coef * value_loss - c.ent_coef * ent
    return total, dict(policy_loss=policy_loss, value_loss=value_loss, entropy=ent)

  def update(runner):
    runner, traj = jax.lax.scan(env_step, runner, None, c.num_steps)  # leaves [T, N, ...]
    state, env_state, obs, ep_return, key = runner
    _, last_value = network.apply(state.params, preprocess(obs))
    adv, target = gae(traj, last_value)
    data = dict(
      obs=traj["obs"],
      action=traj["action"],
      logp=traj["logp"],
      value=traj["value"],
      adv=adv,
      target=target,
    )
    data = jax.tree.map(lambda x: x.reshape((c.batch_size,) + x.shape[2:]), data)  # [T*N, ...]

    def epoch(carry, key_perm):
      state = carry
      perm = jax.random.permutation(key_perm, c.batch_size)
      minibatches = jax.tree.map(  # [M, B/M, ...]
        lambda x: x[perm].reshape((c.num_minibatches, -1) + x.shape[1:]), data
      )

      def minibatch_step(state, batch):
        grads, aux = jax.grad(loss_fn, has_aux=True)(state.params, batch)
        return state.apply_gradients(grads=grads), aux

      return jax.lax.scan(minibatch_step, state, minibatches)

    key, key_epochs = jax.random.split(key)
    state, losses = jax.lax.scan(epoch, state, jax.random.split(key_epochs, c.num_epochs))
    num_done = traj["done"].sum()
    metrics = jax.tree.map(jnp.mean, losses)
    metrics["episodes"] = num_done
    # Mean return of the episodes that ended in this rollout (NaN when none did).
    metrics["episode_return"] = jnp.where(
      num_done > 0, traj["episode_return"].sum() / jnp.maximum(num_done, 1), jnp.nan
    )
    return (state, env_state, obs, ep_return, key), metrics

  return init, update


def train(
  env_id: str,
  config: PPOConfig,
  seed: int = 0,
  log_every: int | None = None,
  log_fn: Callable[[int, dict], None] | None = None,
  checkpoint: str | None = None,
  checkpoint_seconds: float = 30.0,
) -> tuple[Any, dict[str, np.ndarray]]:
  """Trains PPO on a gymnax task; with `checkpoint`, resumes where a killed run stopped.

  Args:
    env_id: a supported task id (see `gymnax_envs.TASKS`).
    config: hyper-parameters.
    seed: seeds parameters, environments and sampling; a seed gives one result per platform.
    log_every: at most this many updates per jitted chunk, `log_fn` called after each: chunks
      are of one length, the largest that divides the updates, as a shorter last chunk would be
      compiled again (as long as the first: ~8 s of a 30 s CartPole run). Default: all at once.
    log_fn: called as log_fn(env_steps_so_far, the chunk's mean metrics).
    checkpoint: a file that holds the whole training state after a chunk (written at most every
      `checkpoint_seconds`, atomically). A run that finds one for the same task, config, seed
      and chunk size continues from it and ends with the parameters of an uninterrupted run.

  Returns:
    (network params, metrics): each metric is a numpy array with one entry per update.
  """
  init, update = make_update_fn(env_id, config)
  longest = min(log_every or config.num_updates, config.num_updates)
  chunk = max(n for n in range(1, longest + 1) if config.num_updates % n == 0)

  @functools.partial(jax.jit, static_argnums=1, donate_argnums=0)
  def run_chunk(runner, length):
    return jax.lax.scan(lambda r, _: update(r), runner, None, length)

  runner = jax.jit(init)(jax.random.key(seed))
  history, done = [], 0
  fingerprint = dict(env_id=env_id, config=dataclasses.asdict(config), seed=seed, chunk=chunk)
  saved = cache.load_progress(checkpoint, fingerprint)
  if saved is not None:
    runner = _unflatten_runner(runner, saved["leaves"])
    history, done = saved["history"], saved["done"]
    logging.info("%s: resuming PPO at update %d of %d", env_id, done, config.num_updates)
  last_save = time.time()
  while done < config.num_updates:
    runner, metrics = run_chunk(runner, chunk)
    metrics = jax.device_get(metrics)
    history.append(metrics)
    done += chunk
    if checkpoint and time.time() - last_save >= checkpoint_seconds:
      cache.save_progress(
        checkpoint, fingerprint, dict(done=done, history=history, leaves=_flatten_runner(runner))
      )
      last_save = time.time()
    if log_fn is not None:
      # NaN-aware means over the chunk: some updates end no episode.
      summary = {
        k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        for k, v in metrics.items()
      }
      log_fn(done * config.batch_size, summary)
  metrics = {k: np.concatenate([h[k] for h in history]) for k in history[0]}
  return runner[0].params, metrics


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten_runner(runner) -> list[np.ndarray]:
  """The runner's leaves as numpy arrays (PRNG keys as their raw data)."""
  return [np.asarray(jax.random.key_data(x) if _is_key(x) else x) for x in jax.tree.leaves(runner)]


def _unflatten_runner(template, leaves: list[np.ndarray]):
  """`template`'s tree (static parts included) with `leaves` put back on the device."""
  template_leaves, treedef = jax.tree.flatten(template)
  if len(leaves) != len(template_leaves):
    raise ValueError(f"PPO checkpoint has {len(leaves)} arrays, the runner {len(template_leaves)}")
  return jax.tree.unflatten(
    treedef,
    [
      jax.random.wrap_key_data(x) if _is_key(t) else jnp.asarray(x, t.dtype)
      for t, x in zip(template_leaves, leaves)
    ],
  )
