"""Style methods as objects: one class per way of aligning a layer's feature distributions, one module per family.

* :mod:`~nst_jax.losses.methods.base`: the interface every method implements (:class:`StyleMethod`), the
  registry of ``--kernel`` names (:data:`REGISTRY`, :func:`register`) and the functional interface by name
  (:func:`style_target`, :func:`style_loss`, :func:`paper_scale`, ...);
* :mod:`~nst_jax.losses.methods.moments`: ``gram``, ``linear``, ``poly``, ``bn``, ``w2``, ``coral``;
* :mod:`~nst_jax.losses.methods.gaussian`: ``gaussian``, ``mkmmd``;
* :mod:`~nst_jax.losses.methods.transport`: ``swd``.

Importing this package registers every method: the family modules above in that order, then every other
module of the package (:func:`pkgutil.iter_modules`, by name). A new method is therefore one new file here,
holding one ``@register``-ed subclass of :class:`StyleMethod` (docs/methods.md, "Adding a method").

Reference: Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
"""

import importlib
import pkgutil

from nst_jax.losses.methods.base import (
    REGISTRY,
    SampleSums,
    StyleMethod,
    Target,
    get,
    layer_loss,
    layout,
    paper_scale,
    register,
    resolve,
    streamable,
    style_loss,
    style_target,
)

# The families, in the registry's order (that of the --kernel names everywhere), then every other module by name.
from nst_jax.losses.methods.moments import BN, CORAL, W2, Gram, Linear, Poly, poly2_closed  # isort: split

from nst_jax.losses.methods.gaussian import MKMMD, Gaussian  # isort: split

from nst_jax.losses.methods.transport import SWD  # isort: split

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

METHODS: tuple[str, ...] = tuple(REGISTRY)
"""The ``--kernel`` names, in the order they were registered (:data:`REGISTRY`)."""

__all__ = [
    "BN", "CORAL", "METHODS", "MKMMD", "REGISTRY", "SWD", "W2", "Gaussian", "Gram", "Linear", "Poly", "SampleSums",
    "StyleMethod", "Target", "get", "layer_loss", "layout", "paper_scale", "poly2_closed", "register", "resolve",
    "streamable", "style_loss", "style_target",
]
