"""lmjax: language modelling and machine translation in JAX/Flax."""

__version__ = "0.1.0"
