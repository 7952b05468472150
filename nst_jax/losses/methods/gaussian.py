"""The style methods of Gaussian kernels: MMD^2 under one Gaussian kernel (the paper's) or the mean of
several bandwidths (multi-kernel MMD), with the four estimators of :mod:`nst_jax.losses.mmd`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nst_jax import kernels
from nst_jax.losses import mmd
from nst_jax.losses.methods.base import StyleMethod, Target, check_estimator, is_int, is_number, register, require
from nst_jax.losses.stats import check_samples, moments, weight_totals

_ESTIMATOR_FIELDS = {"estimator": "gaussian_estimator", "block_size": "block_size", "num_features": "rff_features"}
"""The config fields of the estimator's parameters, shared by ``gaussian`` and ``mkmmd``."""


class _GaussianKernels(StyleMethod):
    """MMD^2 under Gaussian kernels, shared by ``gaussian`` and ``mkmmd``: one bandwidth or the mean of several,
    each fixed or a multiple of the paper's rule. The subclasses hold ``estimator``, ``block_size`` and
    ``num_features``."""

    def check(self) -> None:
        check_estimator(self, rff=True)
        for field in ("block_size", "num_features"):
            self._require(field, is_int(getattr(self, field)), "must be an integer >= 1")

    @property
    def needs_key(self) -> bool:
        return self.estimator in ("linear", "rff")

    def _target(self, y: jax.Array, gamma: Any, w: jax.Array | None = None) -> Target:
        # ``gamma`` None: the paper's rule, which depends on x, so k(y, y) cannot be kept; the pooled rule of the
        # full, unbiased and rff estimators needs y's moments. Weights (a region) are kept beside the samples.
        out = {"samples": y} if w is None else {"samples": y, "weights": w}
        if self.estimator in ("full", "unbiased") and gamma is not None:
            out["kyy"] = mmd.pairwise_mean(kernels.gaussian, y, y, self.block_size, {"gamma": gamma},
                                           self.estimator == "unbiased", w, w)
        if gamma is None and self.estimator != "linear":
            out["mean"], out["ss"] = moments(y, w)
        return out

    def _loss(self, x: jax.Array, target: Mapping[str, jax.Array], key: jax.Array | None, gamma: Any,
              scales: Sequence[float] | None, w: jax.Array | None = None) -> jax.Array:
        # ``gamma`` None: the rule (of the sampled pairs for the linear estimator, pooled otherwise), times each
        # of ``scales`` if given (several bandwidths).
        require(target, ("samples",) + (("weights",) if w is not None else ()), self.name)
        y, wy = target["samples"], target.get("weights")
        check_samples(x, y)
        kparams: dict[str, Any] = {"gamma": gamma}
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "gaussian", key, kparams, gamma_scales=scales, wx=w, wy=wy)
        if gamma is None:
            require(target, ("mean", "ss"), self.name)
            kparams["gamma"] = mmd.pooled_gamma_from_moments((*moments(x, w), *weight_totals(x, w)),
                                                             (target["mean"], target["ss"], *weight_totals(y, wy)))
            if scales is not None:
                kparams["gamma"] = kparams["gamma"] * jnp.asarray(scales, x.dtype)
        if self.estimator == "rff":
            return mmd.mmd2_rff(x, y, key, kparams["gamma"], self.num_features, self.block_size, w, wy)
        kyy = target["kyy"] if "kyy" in target and gamma is not None else None
        return mmd.pairwise_mmd2(x, y, kernels.gaussian, self.estimator == "unbiased", self.block_size, kparams, kyy,
                                 w, wy)

    def paper_scale(self, m: int, n: int) -> float:
        return 3e14 * (m // 2) / (2.0 * n * m)


@register
@dataclasses.dataclass(frozen=True)
class Gaussian(_GaussianKernels):
    """MMD^2 under k = exp(-gamma ||x - y||^2): all moments. ``gamma`` None is the paper's rule, 1 / mean
    squared distance under ``stop_gradient``; ``estimator`` "linear" (the paper's paired estimator, fresh pairs
    each step), "full", "unbiased" or "rff" (``num_features`` random Fourier features).

    Target: ``samples`` = y. With full or unbiased and an explicit gamma also ``kyy``, the style side's mean
    kernel value. With the paper's rule and full, unbiased or rff: ``mean`` and ``ss`` (centred sum of
    squares, :func:`nst_jax.losses.stats.moments`) for the pooled bandwidth; gamma then depends on x, so
    k(y, y) is recomputed every step for full and unbiased (an extra O(M'^2 N) per step). Paper scale
    3e14 K / (2 N M) with K = floor(M / 2) pairs.
    """

    name: ClassVar[str] = "gaussian"
    gamma: float | tuple[float, ...] | None = None  # a tuple: several bandwidths (the kernels' mean)
    estimator: str = "linear"
    block_size: int = 512
    num_features: int = 1024

    config_fields: ClassVar[Mapping[str, str]] = {"gamma": "gaussian_gamma", **_ESTIMATOR_FIELDS}

    def check(self) -> None:
        gammas = self.gamma if isinstance(self.gamma, tuple) else (self.gamma,)
        self._require("gamma", self.gamma is None or (len(gammas) > 0 and all(is_number(g) for g in gammas)),
                      "must be a finite number >= 0")
        super().check()

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return self._target(y, self.gamma, weights)

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        return self._loss(x, target, key, self.gamma, None, weights)

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        # The exact tiled estimator, with the paper's pooled bandwidth of the reference and the style fixed.
        gamma = self.gamma if self.gamma is not None else float(mmd.pooled_gamma(reference, y))
        return dataclasses.replace(self, gamma=gamma, estimator="full")



@register
@dataclasses.dataclass(frozen=True)
class MKMMD(_GaussianKernels):
    """Multi-kernel MMD (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML
    2015): MMD^2 under k = (1/B) sum_b exp(-gamma_b ||x - y||^2) with gamma_b = scales_b times the paper's
    bandwidth rule (of the sampled pairs for the linear estimator, pooled for the others), so texture at
    several distance scales at once. Estimators as the Gaussian's (``linear`` by default).

    Target: ``samples``, plus ``mean`` and ``ss`` for the pooled rule. Not streamable. Paper scale: the
    Gaussian's (it is that method when B = 1 and the scale is 1)."""

    name: ClassVar[str] = "mkmmd"
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    estimator: str = "linear"
    block_size: int = 512
    num_features: int = 1024

    config_fields: ClassVar[Mapping[str, str]] = {"scales": "mkmmd_scales", **_ESTIMATOR_FIELDS}

    def __post_init__(self) -> None:
        # The config gives the scales as text ("0.25,0.5,1,2,4"); the method holds a tuple of floats (hashable).
        try:
            scales = self.scales.split(",") if isinstance(self.scales, str) else self.scales
            object.__setattr__(self, "scales", tuple(float(v) for v in scales if str(v).strip()))
        except (TypeError, ValueError):
            pass  # left as given, for check to refuse
        super().__post_init__()

    def check(self) -> None:
        self._require("scales", isinstance(self.scales, tuple) and len(self.scales) > 0
                      and all(is_number(s) and s > 0 for s in self.scales), "expected positive numbers, e.g. 0.5,1,2")
        super().check()

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return self._target(y, None, weights)

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        return self._loss(x, target, key, None, self.scales, weights)

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        # The exact tiled estimator of the B-bandwidth kernel, the bandwidths fixed on the reference and style.
        base = float(mmd.pooled_gamma(reference, y))
        return Gaussian(gamma=tuple(s * base for s in self.scales), estimator="full", block_size=self.block_size)
