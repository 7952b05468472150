"""Run configurations (``ml_collections.ConfigDict``); pass one to ``python -m nst_jax.main --config=FILE``."""
