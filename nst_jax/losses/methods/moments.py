"""The style methods of moments: Gram (Gatys), linear and polynomial MMD, BN statistics, W2 between fitted
Gaussians, CORAL. Each is a function of the samples' means and second moments or covariances, so most are
streamable (sums over positions add up over strips) and blends have exact mixture targets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nst_jax import kernels
from nst_jax.losses import mmd
from nst_jax.losses.methods.base import (
    SampleSums,
    StyleMethod,
    Target,
    check_estimator,
    is_int,
    is_number,
    register,
    require,
)
from nst_jax.losses.stats import (
    bn_stats,
    bn_term,
    check_samples,
    coral_term,
    covariance,
    gram,
    gram_term,
    mean,
    safe_sqrt,
)
from nst_jax.losses.wasserstein import psd_sqrt, w2_from_moments


def poly2_closed(gx: jax.Array, mu_x: jax.Array, target: Mapping[str, jax.Array], c: float,
                 self_x: jax.Array | None) -> jax.Array:
    """MMD^2 under (a.b + c)^2 from x's Gram matrix gx (N, N) and mean mu_x (N,) and the target's ``gram`` and
    ``mean``; with ``self_x`` (x's diagonal correction), the unbiased estimator. A scalar."""
    out = jnp.sum(jnp.square(gx - target["gram"])) + 2.0 * c * jnp.sum(jnp.square(mu_x - target["mean"]))
    if self_x is not None:
        out = out + self_x + target["self"]
    return out



def weighted_moments(method: StyleMethod, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
    """The ``gram`` and ``mean`` entries of a mixture's target, where ``method``'s target has them: a mixture's
    second moment (Gram, (N, N)) and mean ((N,)) are the w-weighted sums of the components'."""
    singles = [method.target(y) for y in ys]
    out = {}
    for name in ("gram", "mean"):
        if name in singles[0]:
            out[name] = sum(wk * t[name] for wk, t in zip(weights, singles, strict=True))
    return out


@register
@dataclasses.dataclass(frozen=True)
class Gram(StyleMethod):
    """Gatys' loss :func:`nst_jax.losses.gram_loss` = MMD^2 under k = (x.y)^2 / (4 N^2): second moments.

    Target: ``gram`` = y^T y / M'. Streamable (x^T x). Paper scale 0.1 M (the poly energy with c = 0)."""

    name: ClassVar[str] = "gram"

    @property
    def streamable(self) -> bool:
        return True

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return {"gram": gram(y, weights)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("gram",), self.name)
        return gram_term(gram(x, weights), target["gram"])

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        return {"xx": (x * weights[:, None]).T @ x}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        require(target, ("gram",), self.name)
        return gram_term(x.sums["xx"] / x.count, target["gram"])

    def paper_scale(self, m: int, n: int) -> float:
        return 0.1 * m

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        return weighted_moments(self, ys, weights)


@register
@dataclasses.dataclass(frozen=True)
class Linear(StyleMethod):
    """MMD^2 under the linear kernel k = x.y: ||mean x - mean y||^2, the channel means.

    Target: ``mean``. Streamable (sum x). Paper scale 1e3 M / N."""

    name: ClassVar[str] = "linear"

    @property
    def streamable(self) -> bool:
        return True

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return {"mean": mean(y, weights)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("mean",), self.name)
        return jnp.sum(jnp.square(mean(x, weights) - target["mean"]))

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        return {"x": jnp.sum(x * weights[:, None], axis=0)}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        require(target, ("mean",), self.name)
        return jnp.sum(jnp.square(x.sums["x"] / x.count - target["mean"]))

    def paper_scale(self, m: int, n: int) -> float:
        return 1e3 * m / n

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        return weighted_moments(self, ys, weights)


@register
@dataclasses.dataclass(frozen=True)
class Poly(StyleMethod):
    """MMD^2 under k = (x.y + c)^d: ``mmd2(x, y, kernel="poly", c=c, d=d, estimator=estimator)``.

    With d = 2 and the full or unbiased estimator: the closed form ||G_x - G_y||^2 + 2c ||mu_x - mu_y||^2
    (second moments and means; target ``gram``, ``mean``, plus ``self``, the style side's diagonal correction,
    for unbiased), streamable. Otherwise the target keeps the ``samples`` and, for full and unbiased, ``kyy``,
    the style side's mean kernel value, so it costs nothing per step. Paper scale 0.1 M / (4 N^2).
    """

    name: ClassVar[str] = "poly"
    c: float = 1.0
    d: int | float = 2
    estimator: str = "full"
    block_size: int = 512

    # Runs use the full estimator; the tile size stays at its default (the config's block_size is the Gaussian's).
    config_fields: ClassVar[Mapping[str, str]] = {"c": "poly_c", "d": "poly_d"}

    def check(self) -> None:
        self._require("c", is_number(self.c), "must be a finite number >= 0")
        self._require("d", is_int(self.d) or (is_number(self.d, 1) and float(self.d).is_integer()),
                      "must be an integer >= 1")
        check_estimator(self)
        self._require("block_size", is_int(self.block_size), "must be an integer >= 1")

    @property
    def closed(self) -> bool:
        """d = 2 with the full or unbiased estimator: computed from Gram matrices and means."""
        return self.estimator in ("full", "unbiased") and mmd.is_two(self.d)

    @property
    def needs_key(self) -> bool:
        return self.estimator == "linear"

    @property
    def streamable(self) -> bool:
        return self.closed

    def _kparams(self) -> dict[str, Any]:
        return {"c": self.c, "d": self.d}

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        unbiased = self.estimator == "unbiased"
        if self.closed:
            g, mu = gram(y, weights), mean(y, weights)
            out = {"gram": g, "mean": mu}
            if unbiased:
                out["self"] = mmd.poly2_self(y, g, mu, self.c, weights)
            return out
        out = {"samples": y} if weights is None else {"samples": y, "weights": weights}
        if self.estimator in ("full", "unbiased"):
            out["kyy"] = mmd.pairwise_mean(kernels.poly, y, y, self.block_size, self._kparams(), unbiased, weights,
                                           weights)
        return out

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        unbiased = self.estimator == "unbiased"
        if self.closed:
            require(target, ("gram", "mean") + (("self",) if unbiased else ()), self.name)
            gx, mu_x = gram(x, weights), mean(x, weights)
            self_x = mmd.poly2_self(x, gx, mu_x, self.c, weights) if unbiased else None
            return poly2_closed(gx, mu_x, target, self.c, self_x)
        require(target, ("samples",) + (("weights",) if weights is not None else ()), self.name)
        y, wy = target["samples"], target.get("weights")
        check_samples(x, y)
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "poly", key, self._kparams(), wx=weights, wy=wy)
        return mmd.pairwise_mmd2(x, y, kernels.poly, unbiased, self.block_size, self._kparams(), target.get("kyy"),
                                 weights, wy)

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        if not self.closed:
            return super().sums(x, target, weights)
        out = {"xx": (x * weights[:, None]).T @ x, "x": jnp.sum(x * weights[:, None], axis=0)}
        if self.estimator == "unbiased":
            # The U-statistic's correction (mmd.poly2_self): sum w^2 q, sum w^2 q^2 and sum w^2, q_i = ||x_i||^2.
            q, w2 = jnp.sum(jnp.square(x), axis=1), jnp.square(weights)
            out["wq"], out["wq2"], out["w2"] = w2 @ q, w2 @ jnp.square(q), jnp.sum(w2)
        return out

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        if not self.closed:
            return super().loss_from_sums(x, target)
        m, sums = x.count, x.sums
        unbiased = self.estimator == "unbiased"
        require(target, ("gram", "mean") + (("self",) if unbiased else ()), self.name)
        gx, mu_x = sums["xx"] / m, sums["x"] / m
        self_x = None
        if unbiased:
            m2 = jnp.square(m)
            self_x = mmd.poly2_self_from(gx, mu_x, sums["wq2"] / m2, sums["wq"] / m2, sums["w2"] / m2, self.c)
        return poly2_closed(gx, mu_x, target, self.c, self_x)

    def paper_scale(self, m: int, n: int) -> float:
        return 0.1 * m / (4.0 * n * n)

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        return self if self.estimator in ("full", "unbiased") else dataclasses.replace(self, estimator="full")

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        if self.estimator == "full" and mmd.is_two(self.d):
            return weighted_moments(self, ys, weights)
        return super().mixture_target(ys, weights)



@register
@dataclasses.dataclass(frozen=True)
class BN(StyleMethod):
    """BatchNorm-statistics matching :func:`nst_jax.losses.bn_loss`: per-channel mean and deviation.

    Target: ``mean``, ``sd`` from :func:`nst_jax.losses.bn_stats`. Streamable: sums of x - s and (x - s)^2 with
    s the target's mean, a shift that keeps the one-pass variance accurate in float32 (the generated and
    style means are close). Paper scale 1e3 M / 2."""

    name: ClassVar[str] = "bn"

    @property
    def streamable(self) -> bool:
        return True

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        mu, sd = bn_stats(y, weights)
        return {"mean": mu, "sd": sd}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("mean", "sd"), self.name)
        return bn_term(*bn_stats(x, weights), target["mean"], target["sd"])

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        d = x - target["mean"]
        wd = d * weights[:, None]
        return {"bn": jnp.sum(wd, axis=0), "bn2": jnp.sum(wd * d, axis=0)}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        require(target, ("mean", "sd"), self.name)
        m, sums = x.count, x.sums
        d = sums["bn"] / m
        return bn_term(target["mean"] + d, safe_sqrt(sums["bn2"] / m - jnp.square(d)), target["mean"], target["sd"])

    def paper_scale(self, m: int, n: int) -> float:
        return 1e3 * m / 2.0

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        # The mixture's variance is sum_k w_k (sd_k^2 + mu_k^2) - mu^2.
        singles = [self.target(y) for y in ys]
        mean = sum(wk * t["mean"] for wk, t in zip(weights, singles, strict=True))
        second = sum(wk * (t["sd"] ** 2 + t["mean"] ** 2) for wk, t in zip(weights, singles, strict=True))
        return {"mean": mean, "sd": safe_sqrt(jnp.maximum(second - mean**2, 0.0))}



class _CovarianceMethod(StyleMethod):
    """Methods of the mean and covariance: streamable through sums of x - s and (x - s)^T (x - s), with s the
    style mean, a shift that keeps the one-pass covariance accurate in float32."""

    @property
    def streamable(self) -> bool:
        return True

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        d = x - target["mean"]
        wd = d * weights[:, None]
        return {"cov1": jnp.sum(wd, axis=0), "cov2": wd.T @ d}

    @staticmethod
    def _moments_from_sums(x: SampleSums, target: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        d = x.sums["cov1"] / x.count
        return target["mean"] + d, x.sums["cov2"] / x.count - jnp.outer(d, d)

    def paper_scale(self, m: int, n: int) -> float:
        return 1.0


@register
@dataclasses.dataclass(frozen=True)
class W2(_CovarianceMethod):
    """Wasserstein-2 distance between the Gaussians fitted to the two sample sets
    (:func:`nst_jax.losses.w2_gaussian`): mean and covariance, matched as a transport distance.

    Target: ``mean``, ``cov_sqrt`` = C_y^1/2 (computed once per run) and ``trace`` = tr(C_y). Streamable (sums
    of x and x^T x, shifted). No paper constant: ``paper_scale`` is 1."""

    name: ClassVar[str] = "w2"

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        mu, c = covariance(y, weights)
        return {"mean": mu, "cov_sqrt": psd_sqrt(c), "trace": jnp.trace(c)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("mean", "cov_sqrt", "trace"), self.name)
        return w2_from_moments(*covariance(x, weights), target["mean"], target["cov_sqrt"], target["trace"])

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        require(target, ("mean", "cov_sqrt", "trace"), self.name)
        return w2_from_moments(*self._moments_from_sums(x, target), target["mean"], target["cov_sqrt"],
                               target["trace"])

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        mu, c = _mixture_covariance(ys, weights)
        return {"mean": mu, "cov_sqrt": psd_sqrt(c), "trace": jnp.trace(c)}


@register
@dataclasses.dataclass(frozen=True)
class CORAL(_CovarianceMethod):
    """CORAL (Sun and Saenko 2016, :func:`nst_jax.losses.coral`): ||C_x - C_y||_F^2 / (4 N^2), the covariances
    (the Gram loss with the means removed).

    Target: ``mean``, ``cov``. Streamable. No paper constant: ``paper_scale`` is 1."""

    name: ClassVar[str] = "coral"

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        mu, c = covariance(y, weights)
        return {"mean": mu, "cov": c}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        require(target, ("mean", "cov"), self.name)
        return coral_term(covariance(x, weights)[1], target["cov"])

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        require(target, ("mean", "cov"), self.name)
        return coral_term(self._moments_from_sums(x, target)[1], target["cov"])

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        mu, c = _mixture_covariance(ys, weights)
        return {"mean": mu, "cov": c}


def _mixture_covariance(ys: Sequence[jax.Array], weights: Sequence[float]) -> tuple[jax.Array, jax.Array]:
    # A mixture's mean is sum_k w_k mu_k; its covariance sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T, written with
    # the deviations of the component means from it, which needs no cancellation.
    parts = [covariance(y) for y in ys]
    mu = sum(wk * m for wk, (m, _) in zip(weights, parts, strict=True))
    c = sum(wk * (ck + jnp.outer(m - mu, m - mu)) for wk, (m, ck) in zip(weights, parts, strict=True))
    return mu, c
