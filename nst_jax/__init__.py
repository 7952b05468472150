"""nst_jax: neural style transfer as distribution alignment (Li, Wang, Liu, Hou, IJCAI 2017) in JAX."""

__version__ = "0.1.0"
