"""Package-level promises: light imports, TensorFlow kept off accelerators, the demo runs."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def _run(code: str) -> str:
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                        env=env).stdout


def test_import_stays_light():
  out = _run(
      "import sys, gato_jax, gato_jax.tokenizer as T\n"
      "T.tokenize_timestep({'x': 0.5}, None, {'x': T.ContinuousSpec()})\n"
      "print(sorted(m for m in ('tensorflow', 'seqio', 'dm_control', 'gymnax', 'tensorflow_datasets')"
      " if m in sys.modules))"
  )
  assert out.strip() == "[]"


def test_tensorflow_hides_accelerators():
  out = _run(
      "from gato_jax import tf_compat\n"
      "tf = tf_compat.import_tensorflow()\n"
      "print(tf.config.get_visible_devices('GPU'), tf_compat.import_tensorflow() is tf)"
  )
  assert out.strip() == "[] True"


def test_tokenize_demo_on_real_dm_control():
  env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": "disable"}
  out = subprocess.run([sys.executable, str(ROOT / "experiments/tokenize_demo.py"),
                        "--domain=cartpole", "--task=swingup", "--steps=3"],
                       check=True, capture_output=True, text=True, env=env).stdout
  assert "7 tokens (observation, separator, action)" in out
  assert "separator" in out and "decoded action" in out
