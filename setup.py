"""gato_jax: a JAX/Flax reimplementation of DeepMind's Gato.

Exact pins for a set that installs together live in requirements.txt; the ranges here are what
the code needs, for users who install gato_jax into an environment of their own.
"""

import setuptools

setuptools.setup(
  name="gato_jax",
  version="0.1.0",
  description="A JAX/Flax reimplementation of Gato (Reed et al., 2022, A Generalist Agent).",
  packages=setuptools.find_packages(include=["gato_jax", "gato_jax.*"]),
  package_data={"gato_jax.tokenizer": ["assets/*.model"]},
  python_requires=">=3.11,<3.12",
  install_requires=[
    "jax>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    # Run folders on Cloud Storage (gs://): gcsfs for etils.epath, google-cloud-storage for
    # orbax and the bucket workdir lock.
    "gcsfs>=2026.10",
    "google-cloud-storage>=3.17,<4",
    "ml-collections>=1.1",
    "absl-py>=2.1",
    "numpy>=2.0",
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10",
    "seqio==0.0.20",
    # The derived training store (ArrayRecord) and parallel batch building (Grain).
    "grain==0.2.18",
    "array-record==0.8.6",
    "sentencepiece>=0.2",
    "gymnax==1.0.1",
    "dm-control==1.0.50",
    # dm-control 1.0.50 breaks with mujoco 4.0; see requirements.txt.
    "mujoco>=3.17,<4",
    # TensorBoard event files for training metrics.
    "tensorboard>=2.21,<2.22",
    # BabyAI levels and the BabyAI bot expert (gato_jax.envs.babyai).
    "minigrid==3.2.0",
    # Atari games, ROMs included (gato_jax.envs.atari).
    "ale-py>=0.12,<0.13",
    # TFDS 4.9.10 needs it to build datasets but declares it only for Python < 3.9.
    "importlib_resources>=5",
    # COCO's caption scorers (BLEU-4, CIDEr-D) for the vision-language evaluation.
    "pycocoevalcap==1.2",
    # Aggregate metrics and bootstrap intervals; arch 7.2 (rliable needs < 8) breaks with
    # pandas 3.
    "rliable==1.2.0",
    "pandas>=2,<3",
    # Evaluation and sweep plots; scipy's fits and image filters; BabyAI's environment API.
    "matplotlib>=3.8",
    "scipy>=1.11",
    "gymnasium>=1.0",
  ],
  extras_require={
    "cuda": ["jax[cuda12]==0.10.2"],
    # libtpu (about 200 MB) from PyPI; on a TPU VM it runs the TPUs, and on any machine,
    # CPU-only included, it compiles for a TPU slice that is not there (tools/aot_compile.py,
    # tests/test_aot.py). The default install and CI stay without it.
    "tpu": ["jax[tpu]==0.10.2"],
    "test": ["pytest>=9", "pytest-xdist>=3.8"],
    "dev": ["ruff==0.17.6"],
    # metaworld 3.1.1 pins mujoco==3.3.0, which dm-control 1.0.50 (mujoco>=3.17) rejects:
    # install it in an environment of its own, without dm-control (README, "Optional extras").
    "metaworld": ["metaworld==3.1.1"],
  },
)
