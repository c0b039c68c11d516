"""Expert recipes, one module per domain whose experts are trained here (gato_jax.envs.registry
names the domain: `gymnax` PPO, `dm_control` SAC); `get_config(task)` gives a task's recipe."""
