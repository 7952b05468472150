"""The style methods of optimal transport: the sliced Wasserstein distance (random directions, sorting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax

from nst_jax.losses.methods.base import StyleMethod, Target, is_int, register, require
from nst_jax.losses.wasserstein import sliced_wasserstein


@register
@dataclasses.dataclass(frozen=True)
class SWD(StyleMethod):
    """Sliced Wasserstein distance (Heitz et al. CVPR 2021, :func:`nst_jax.losses.sliced_wasserstein`): the
    whole 1-D marginal distributions along ``num_projections`` random directions (None: N, the layer's
    channels), drawn afresh every step from the step's key.

    Target: ``samples`` = y (each step projects them on its own directions). Not streamable. No paper constant:
    ``paper_scale`` is 1 (the raw loss), so ``balance=none`` weighs it by the style weight alone."""

    name: ClassVar[str] = "swd"
    num_projections: int | None = None

    config_fields: ClassVar[Mapping[str, str]] = {"num_projections": "swd_projections"}

    def check(self) -> None:
        self._require("num_projections", self.num_projections is None or is_int(self.num_projections),
                      "must be an integer >= 1")

    @property
    def needs_key(self) -> bool:
        return True

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return {"samples": y} if weights is None else {"samples": y, "weights": weights}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("samples",) + (("weights",) if weights is not None else ()), self.name)
        return sliced_wasserstein(x, target["samples"], key=key, num_projections=self.num_projections, wx=weights,
                                  wy=target.get("weights"))

    def paper_scale(self, m: int, n: int) -> float:
        return 1.0

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        return dataclasses.replace(self, num_projections=256)
