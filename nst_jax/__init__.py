"""nst_jax: neural style transfer as distribution alignment (Li, Wang, Liu, Hou, IJCAI 2017) in JAX.

``nst_jax.stylize(content, style, config) -> (image, record)`` is the Python API (see :mod:`nst_jax.runner`).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["stylize"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import nst_jax.weights` (the converter's fast path) does not load the run.
    if name == "stylize":
        from nst_jax.runner import stylize

        return stylize
    raise AttributeError(f"module 'nst_jax' has no attribute {name!r}")
