"""gato_jax: a JAX/Flax reimplementation of Gato ("A Generalist Agent", Reed et al. 2022).

Importing the package stays light: TensorFlow, SeqIO and environment packages are imported only
by the modules that need them (see `gato_jax.tf_compat`).
"""

__version__ = "0.1.0"
