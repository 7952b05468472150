"""Per-channel histogram matching: Risser, Wilmot, Barnes, "Stable and controllable neural texture synthesis and
style transfer using histogram losses", arXiv 1701.08893, 2017.

Each channel's whole distribution of values is matched, as the exact 1-D Wasserstein-2 distance between the
result's values and the style's, solved by sorting. It is the sliced Wasserstein measure of ``swd``
(:mod:`nst_jax.losses.methods.transport`) with its directions fixed to the N channel axes, and it uses the same
sort and quantile helpers (:func:`~nst_jax.losses.wasserstein.sort_columns`, NumPy's sort on a CPU): nothing is
random, and the style side is sorted once per run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax

from nst_jax.losses.methods.base import StyleMethod, Target, register, require
from nst_jax.losses.stats import check_samples
from nst_jax.losses.wasserstein import sorted_target, transport_1d


@register
@dataclasses.dataclass(frozen=True)
class Hist(StyleMethod):
    """Histogram matching: the mean over the N channels c of mean_i (sort(x_c)_i - q_c,i)^2, where q_c holds the
    style channel's values at the generated side's quantile levels (i + 0.5) / M, interpolated linearly when
    M' != M (:func:`nst_jax.losses.wasserstein.quantiles`): per channel the squared 1-D Wasserstein-2 distance of
    the two sets of values, averaged over channels. 0 when every channel holds the same values (M' = M).

    With weights (a region): sum_i p_i (sort(x_c)_i - q_c(t_i))^2 with p_i the weight shares in sorted order,
    t_i the midpoints of their cumulative shares and q_c the style's weighted quantile function (as swd's).

    Target: ``sorted``, each column of y (M', N) sorted, computed once per run; with weights also ``cum``, the
    cumulative weight shares in each column's order (M', N). Not streamable. No paper constant: ``paper_scale``
    is 1, so ``balance=none`` weighs the raw loss by the style weight alone.
    """

    name: ClassVar[str] = "hist"

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        check_samples(y)
        return sorted_target(y, weights)

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("sorted",) + (("cum",) if weights is not None else ()), self.name)
        check_samples(x, target["sorted"])
        return transport_1d(x, target["sorted"], weights, target.get("cum"))

    def paper_scale(self, m: int, n: int) -> float:
        return 1.0
