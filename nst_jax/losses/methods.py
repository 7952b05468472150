"""Style methods as objects: one class per way of aligning a layer's feature distributions.

A style method holds its parameters (a frozen dataclass, so it is hashable and can parametrise a compiled
function) and knows everything a run needs of it:

* ``target(y)``: the style side's statistics of one layer, computed once per run (a dict of arrays);
* ``loss(x, target, key=...)``: the layer's loss of the generated samples x (M, N) against that target;
* ``target(y, weights=v)``, ``loss(x, target, key=..., weights=w)``: the same for weighted samples, one region
  of each image (spatial control, :mod:`nst_jax.losses.weighted`, :mod:`nst_jax.losses.regions`); without
  weights the unweighted code runs, unchanged;
* ``streamable``, ``sums(x, target, weights)`` and ``loss_from_sums(sums, target)``: whether the loss needs only
  sums over x's rows, which add up over horizontal strips of an image (:mod:`nst_jax.strips`), and how;
* ``paper_scale(m, n)``: the official code's per-layer constant (lyttonhao/Neural-Style-MMD);
* ``mixture_target(ys, weights)``: the target of a mixture of several styles' distributions (blends);
* ``from_config(config)``: the method with a run config's parameters.

:data:`REGISTRY` maps the ``--kernel`` names to the classes. To add a method: subclass :class:`StyleMethod`
with ``@register``, give it a ``name``, its parameters as dataclass fields with defaults, ``target``, ``loss``
and ``paper_scale`` (the rest have defaults: not streamable, blends by pooled samples), and add a test class
that checks its loss against an independent NumPy computation.

Every loss is the pure statistical quantity (e.g. MMD^2 itself); ``paper_scale`` maps it to the official
code's energy. Reference: Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import kernels
from nst_jax.losses import mmd, weighted
from nst_jax.losses.stats import (
    bn_stats,
    bn_term,
    check_samples,
    coral_term,
    covariance,
    gram,
    gram_term,
    mixture_samples,
    moments,
    safe_sqrt,
)
from nst_jax.losses.wasserstein import psd_sqrt, random_directions, sliced_wasserstein, w2_from_moments

Target = dict[str, jax.Array]


class SampleSums(NamedTuple):
    """One layer's generated-side statistics as sums over its M positions (see :func:`sample_sums`).

    What the additive methods need of x (M, N) is a sum over its rows, so the sums of disjoint parts of an
    image (horizontal strips, :mod:`nst_jax.strips`) add up to those of the whole; :func:`style_loss` accepts
    this in place of x. ``count`` is M (a Python int), or for weighted samples (a region) the sum of the
    weights (an array).
    """

    sums: Mapping[str, jax.Array]
    count: int | jax.Array


def _need(target: Mapping[str, Any], names: Sequence[str], method: str) -> None:
    missing = [name for name in names if name not in target]
    if missing:
        raise ValueError(
            f"style target for {method!r} lacks {', '.join(missing)}: build it with style_target and the "
            "same parameters"
        )


@dataclasses.dataclass(frozen=True)
class StyleMethod:
    """Base class of the style methods; subclasses are frozen dataclasses whose fields are the parameters."""

    name: ClassVar[str] = ""

    @classmethod
    def from_config(cls, config: Any) -> StyleMethod:
        """The method with the parameters a run config (``configs/default.py``) gives it."""
        del config
        return cls()

    def params(self) -> dict[str, Any]:
        """The parameters, by name (defaults included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """``"c=1.0, d=2"``, for messages (tile sizes left out: they do not change the value)."""
        return ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "block_size") or "no parameters"

    @property
    def needs_key(self) -> bool:
        """Whether :meth:`loss` draws random numbers (and so needs a key)."""
        return False

    @property
    def streamable(self) -> bool:
        """Whether the loss needs only :class:`SampleSums` of x (:meth:`sums`), not x itself."""
        return False

    @property
    def unbiased_estimate(self) -> bool:
        """Whether the loss is an unbiased estimate of MMD^2 (the linear-time paired estimator or the
        U-statistic), which fluctuates around its expectation and so falls below 0 when the two distributions
        are close: its sign means nothing, its trend does."""
        return getattr(self, "estimator", None) in ("linear", "unbiased")

    @property
    def takes_weights(self) -> bool:
        """Whether :meth:`target` and :meth:`loss` accept sample ``weights`` (regions, spatial control): every
        built-in method does; a method added without them works everywhere but in masked runs."""
        import inspect

        return all("weights" in inspect.signature(f).parameters for f in (self.target, self.loss))

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        """Style-side statistics of one layer: y (M', N) -> a dict of arrays (a pytree); with ``weights``
        (M',), those of the weighted samples (one region)."""
        raise NotImplementedError

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        """The layer's loss of x (M, N) against a :meth:`target` (built with weights if ``weights`` (M,) is
        given: then the loss of the weighted samples): a scalar."""
        raise NotImplementedError

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        """The sums over the rows of x (M, N) that :meth:`loss_from_sums` needs. ``weighted`` False: ``weights``
        (M,) is 1 for rows inside the image and 0 for padding rows (whose x is 0), so a sum may ignore it;
        True: general sample weights (a region), every sum weighted, and ``SampleSums.count`` their sum."""
        raise ValueError(f"style method {self.name!r} with {self.params()} needs all samples at once")

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        """:meth:`loss` from the sums of all of x's rows (added over strips)."""
        raise ValueError(f"style method {self.name!r} with {self.params()} needs the samples, not their sums")

    def paper_scale(self, m: int, n: int) -> float:
        """The official code's factor c(M, N) at a layer of M = H*W positions, N channels (docs/methods.md)."""
        raise NotImplementedError

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        """The target of the mixture sum_k w_k P_k of two or more styles' distributions (w_k > 0, summing to
        1). Default: the target of :func:`nst_jax.losses.stats.mixture_samples` (pooled samples)."""
        return self.target(mixture_samples(ys, weights))

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        """The method as a fixed, deterministic distance to the style samples y (M', N) at one layer, for
        comparing results (:mod:`nst_jax.evaluate`): random estimators replaced by exact ones, and anything
        that would adapt to the generated side (a bandwidth rule) fixed on ``reference`` (M, N), the content
        image's samples, so that every result is measured with the same function. (Random directions are
        fixed by the key the caller passes.) Default: the method itself."""
        return self

    def _weighted_moments(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        # A mixture's second moment (Gram) and mean are the w-weighted sums of the components'.
        singles = [self.target(y) for y in ys]
        out = {}
        for name in ("gram", "mean"):
            if name in singles[0]:
                out[name] = sum(wk * t[name] for wk, t in zip(weights, singles, strict=True))
        return out


REGISTRY: dict[str, type[StyleMethod]] = {}
"""``--kernel`` name -> style method class, in the order they are registered."""


def register(cls: type[StyleMethod]) -> type[StyleMethod]:
    """Class decorator: adds a :class:`StyleMethod` subclass to :data:`REGISTRY` under its ``name``."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"style method name {cls.name!r} is empty or taken")
    REGISTRY[cls.name] = cls
    return cls


def get(name: str, **params: Any) -> StyleMethod:
    """The method called ``name`` with ``params`` (the others at their defaults).

    Raises:
      ValueError: an unknown method or parameter name, or an invalid parameter value.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown style method {name!r}; known methods: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    mmd.check_param_names(params, [f.name for f in dataclasses.fields(cls)], f"style method {name!r}")
    return cls(**params)


def resolve(method: str | StyleMethod, params: Mapping[str, Any]) -> StyleMethod:
    """A method object from a name and parameters, or an object (then ``params`` must be empty)."""
    if isinstance(method, StyleMethod):
        if params:
            raise ValueError(f"parameters {dict(params)} given with the method object {method}")
        return method
    return get(method, **params)


def _check_estimator(method: str, estimator: str) -> None:
    if estimator not in mmd.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; known estimators: {', '.join(mmd.ESTIMATORS)}")
    if estimator == "rff" and method != "gaussian":
        raise ValueError(f"the rff estimator needs the gaussian kernel, got style method {method!r}")


def _pairwise_loss(x: jax.Array, y: jax.Array, k: kernels.Kernel, unbiased: bool, block_size: int,
                   kparams: Mapping[str, Any], kyy: jax.Array | None) -> jax.Array:
    """Tiled V- or U-statistic MMD^2 with the style side's mean kernel value ``kyy`` if already known."""
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    if kyy is None:
        kyy = mmd.self_mean(k, y, unbiased, block_size, kparams)
    kxy = kernels.pairwise_sum(k, x, y, block_size, **kparams) / float(x.shape[0] * y.shape[0])
    return mmd.self_mean(k, x, unbiased, block_size, kparams) + kyy - 2.0 * kxy


def _weighted_pairwise_loss(x: jax.Array, wx: jax.Array, y: jax.Array, wy: jax.Array, k: kernels.Kernel,
                            unbiased: bool, block_size: int, kparams: Mapping[str, Any], kyy: jax.Array | None
                            ) -> jax.Array:
    """:func:`_pairwise_loss` of weighted samples (weighted V- or U-statistic)."""
    if kyy is None:
        kyy = weighted.pairwise_mean(k, y, wy, y, wy, block_size, kparams, unbiased)
    kxx = weighted.pairwise_mean(k, x, wx, x, wx, block_size, kparams, unbiased)
    return kxx + kyy - 2.0 * weighted.pairwise_mean(k, x, wx, y, wy, block_size, kparams)


def poly2_closed(gx: jax.Array, mu_x: jax.Array, target: Mapping[str, jax.Array], c: float,
                 self_x: jax.Array | None) -> jax.Array:
    """MMD^2 under (a.b + c)^2 from Gram matrices and means; with ``self_x``, the unbiased estimator."""
    out = jnp.sum(jnp.square(gx - target["gram"])) + 2.0 * c * jnp.sum(jnp.square(mu_x - target["mean"]))
    if self_x is not None:
        out = out + self_x + target["self"]
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
        return {"gram": gram(y) if weights is None else weighted.gram(y, weights)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        _need(target, ("gram",), self.name)
        return gram_term(gram(x) if weights is None else weighted.gram(x, weights), target["gram"])

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        return {"xx": (x * weights[:, None]).T @ x if weighted else x.T @ x}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        _need(target, ("gram",), self.name)
        return gram_term(x.sums["xx"] / x.count, target["gram"])

    def paper_scale(self, m: int, n: int) -> float:
        return 0.1 * m

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        return self._weighted_moments(ys, weights)


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
        return {"mean": jnp.mean(y, axis=0) if weights is None else weighted.mean(y, weights)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        _need(target, ("mean",), self.name)
        mu = jnp.mean(x, axis=0) if weights is None else weighted.mean(x, weights)
        return jnp.sum(jnp.square(mu - target["mean"]))

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        return {"x": weights @ x if weighted else jnp.sum(x, axis=0)}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        _need(target, ("mean",), self.name)
        return jnp.sum(jnp.square(x.sums["x"] / x.count - target["mean"]))

    def paper_scale(self, m: int, n: int) -> float:
        return 1e3 * m / n

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        return self._weighted_moments(ys, weights)


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

    def __post_init__(self) -> None:
        _check_estimator(self.name, self.estimator)

    @classmethod
    def from_config(cls, config: Any) -> Poly:
        # The tile size stays at its default (the config's block_size is the Gaussian's).
        return cls(c=float(config.poly_c), d=int(config.poly_d))

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
        if weights is not None:
            return self._weighted_target(y, weights)
        unbiased = self.estimator == "unbiased"
        if self.closed:
            g, mu = gram(y), jnp.mean(y, axis=0)
            out = {"gram": g, "mean": mu}
            if unbiased:
                out["self"] = mmd.poly2_self(y, g, mu, self.c)
            return out
        out = {"samples": y}
        if self.estimator in ("full", "unbiased"):
            out["kyy"] = mmd.self_mean(kernels.poly, y, unbiased, self.block_size, self._kparams())
        return out

    def _weighted_target(self, y: jax.Array, w: jax.Array) -> Target:
        unbiased = self.estimator == "unbiased"
        if self.closed:
            g, mu = weighted.gram(y, w), weighted.mean(y, w)
            out = {"gram": g, "mean": mu}
            if unbiased:
                out["self"] = weighted.poly2_self(jnp.sum(jnp.square(y), axis=1), w, g, mu, self.c)
            return out
        out = {"samples": y, "weights": w}
        if self.estimator in ("full", "unbiased"):
            out["kyy"] = weighted.pairwise_mean(kernels.poly, y, w, y, w, self.block_size, self._kparams(), unbiased)
        return out

    def _weighted_loss(self, x: jax.Array, target: Mapping[str, jax.Array], key: jax.Array | None, w: jax.Array
                       ) -> jax.Array:
        unbiased = self.estimator == "unbiased"
        if self.closed:
            _need(target, ("gram", "mean") + (("self",) if unbiased else ()), self.name)
            gx, mu_x = weighted.gram(x, w), weighted.mean(x, w)
            self_x = weighted.poly2_self(jnp.sum(jnp.square(x), axis=1), w, gx, mu_x, self.c) if unbiased else None
            return poly2_closed(gx, mu_x, target, self.c, self_x)
        _need(target, ("samples", "weights"), self.name)
        y, wy = target["samples"], target["weights"]
        check_samples(x, y)
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "poly", key, self._kparams(), wx=w, wy=wy)
        return _weighted_pairwise_loss(x, w, y, wy, kernels.poly, unbiased, self.block_size, self._kparams(),
                                       target.get("kyy"))

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        if weights is not None:
            return self._weighted_loss(x, target, key, weights)
        unbiased = self.estimator == "unbiased"
        if self.closed:
            _need(target, ("gram", "mean") + (("self",) if unbiased else ()), self.name)
            gx, mu_x = gram(x), jnp.mean(x, axis=0)
            return poly2_closed(gx, mu_x, target, self.c, mmd.poly2_self(x, gx, mu_x, self.c) if unbiased else None)
        _need(target, ("samples",), self.name)
        y = target["samples"]
        check_samples(x, y)
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "poly", key, self._kparams())
        return _pairwise_loss(x, y, kernels.poly, unbiased, self.block_size, self._kparams(), target.get("kyy"))

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        if not self.closed:
            return super().sums(x, target, weights)
        if weighted:
            # Weighted: sum w x x^T, sum w x, and for the U-statistic's correction sum w^2 q, sum w^2 q^2, sum w^2.
            out = {"xx": (x * weights[:, None]).T @ x, "x": weights @ x}
            if self.estimator == "unbiased":
                q, w2 = jnp.sum(jnp.square(x), axis=1), jnp.square(weights)
                out["wq"], out["wq2"], out["w2"] = w2 @ q, w2 @ jnp.square(q), jnp.sum(w2)
            return out
        out = {"xx": x.T @ x, "x": jnp.sum(x, axis=0)}
        if self.estimator == "unbiased":
            q = jnp.sum(jnp.square(x), axis=1)
            out["q"], out["q2"] = jnp.sum(q), jnp.sum(jnp.square(q))
        return out

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        if not self.closed:
            return super().loss_from_sums(x, target)
        m, sums = x.count, x.sums
        unbiased = self.estimator == "unbiased"
        _need(target, ("gram", "mean") + (("self",) if unbiased else ()), self.name)
        gx, mu_x = sums["xx"] / m, sums["x"] / m
        if unbiased and "w2" in sums:  # weighted sums (a region)
            m2 = jnp.square(m)
            self_x = weighted.poly2_self_from(gx, mu_x, sums["wq2"] / m2, sums["wq"] / m2, sums["w2"] / m2, self.c)
        else:
            self_x = mmd.poly2_self_from(gx, mu_x, sums["q2"] / m, sums["q"] / m, self.c, m) if unbiased else None
        return poly2_closed(gx, mu_x, target, self.c, self_x)

    def paper_scale(self, m: int, n: int) -> float:
        return 0.1 * m / (4.0 * n * n)

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        return self if self.estimator in ("full", "unbiased") else dataclasses.replace(self, estimator="full")

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        if self.estimator == "full" and mmd.is_two(self.d):
            return self._weighted_moments(ys, weights)
        return super().mixture_target(ys, weights)


class _GaussianKernels(StyleMethod):
    """MMD^2 under Gaussian kernels, shared by ``gaussian`` and ``mkmmd``: one bandwidth or the mean of several,
    each fixed or a multiple of the paper's rule. The subclasses hold ``estimator``, ``block_size`` and
    ``num_features``."""

    @property
    def needs_key(self) -> bool:
        return self.estimator in ("linear", "rff")

    def _target(self, y: jax.Array, gamma: Any, w: jax.Array | None = None) -> Target:
        if w is not None:
            return self._weighted_target(y, gamma, w)
        # ``gamma`` None: the paper's rule, which depends on x, so k(y, y) cannot be kept; the pooled rule of the
        # full, unbiased and rff estimators needs y's mean and centred sum of squares.
        out = {"samples": y}
        if self.estimator in ("full", "unbiased") and gamma is not None:
            out["kyy"] = mmd.self_mean(kernels.gaussian, y, self.estimator == "unbiased", self.block_size,
                                       {"gamma": gamma})
        if gamma is None and self.estimator != "linear":
            out["mean"], out["ss"] = moments(y)
        return out

    def _weighted_target(self, y: jax.Array, gamma: Any, w: jax.Array) -> Target:
        # As _target, with the weights kept beside the samples and the rule's moments weighted.
        out = {"samples": y, "weights": w}
        if self.estimator in ("full", "unbiased") and gamma is not None:
            out["kyy"] = weighted.pairwise_mean(kernels.gaussian, y, w, y, w, self.block_size, {"gamma": gamma},
                                                self.estimator == "unbiased")
        if gamma is None and self.estimator != "linear":
            out["mean"], out["var"] = weighted.variance(y, w)
        return out

    def _weighted_loss(self, x: jax.Array, target: Mapping[str, jax.Array], key: jax.Array | None, gamma: Any,
                       scales: Sequence[float] | None, w: jax.Array) -> jax.Array:
        _need(target, ("samples", "weights"), self.name)
        y, wy = target["samples"], target["weights"]
        check_samples(x, y)
        kparams: dict[str, Any] = {"gamma": gamma}
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "gaussian", key, kparams, gamma_scales=scales, wx=w, wy=wy)
        if gamma is None:
            _need(target, ("mean", "var"), self.name)
            kparams["gamma"] = weighted.pooled_gamma(*weighted.variance(x, w), target["mean"], target["var"])
            if scales is not None:
                kparams["gamma"] = kparams["gamma"] * jnp.asarray(scales, x.dtype)
        if self.estimator == "rff":
            return mmd.mmd2_rff(x, y, key, kparams["gamma"], self.num_features, self.block_size, w, wy)
        kyy = target["kyy"] if "kyy" in target and gamma is not None else None
        return _weighted_pairwise_loss(x, w, y, wy, kernels.gaussian, self.estimator == "unbiased", self.block_size,
                                       kparams, kyy)

    def _loss(self, x: jax.Array, target: Mapping[str, jax.Array], key: jax.Array | None, gamma: Any,
              scales: Sequence[float] | None, w: jax.Array | None = None) -> jax.Array:
        if w is not None:
            return self._weighted_loss(x, target, key, gamma, scales, w)
        # ``gamma`` None: the rule (of the sampled pairs for the linear estimator, pooled otherwise), times each
        # of ``scales`` if given (several bandwidths).
        _need(target, ("samples",), self.name)
        y = target["samples"]
        check_samples(x, y)
        kparams: dict[str, Any] = {"gamma": gamma}
        if self.estimator == "linear":
            return mmd.mmd2_linear_time(x, y, "gaussian", key, kparams, gamma_scales=scales)
        if gamma is None:
            _need(target, ("mean", "ss"), self.name)
            mu_x, ss_x = moments(x)
            kparams["gamma"] = mmd.pooled_gamma_from_moments(
                mu_x, ss_x, x.shape[0], target["mean"], target["ss"], y.shape[0]
            )
            if scales is not None:
                kparams["gamma"] = kparams["gamma"] * jnp.asarray(scales, x.dtype)
        if self.estimator == "rff":
            return mmd.mmd2_rff(x, y, key, kparams["gamma"], self.num_features, self.block_size)
        kyy = target["kyy"] if "kyy" in target and gamma is not None else None
        return _pairwise_loss(x, y, kernels.gaussian, self.estimator == "unbiased", self.block_size, kparams, kyy)

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
    squares) for the pooled bandwidth; gamma then depends on x, so k(y, y) is recomputed every step for full
    and unbiased (an extra O(M'^2 N) per step). Paper scale 3e14 K / (2 N M) with K = floor(M / 2) pairs.
    """

    name: ClassVar[str] = "gaussian"
    gamma: float | tuple[float, ...] | None = None  # a tuple: several bandwidths (the kernels' mean)
    estimator: str = "linear"
    block_size: int = 512
    num_features: int = 1024

    def __post_init__(self) -> None:
        _check_estimator(self.name, self.estimator)

    @classmethod
    def from_config(cls, config: Any) -> Gaussian:
        return cls(gamma=None if config.gaussian_gamma is None else float(config.gaussian_gamma),
                   estimator=config.gaussian_estimator, block_size=int(config.block_size),
                   num_features=int(config.rff_features))

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
        mu, sd = bn_stats(y) if weights is None else weighted.bn_stats(y, weights)
        return {"mean": mu, "sd": sd}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        _need(target, ("mean", "sd"), self.name)
        return bn_term(*(bn_stats(x) if weights is None else weighted.bn_stats(x, weights)), target["mean"],
                       target["sd"])

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        if weighted:
            d = x - target["mean"]
            return {"bn": weights @ d, "bn2": weights @ jnp.square(d)}
        d = (x - target["mean"]) * weights[:, None]
        return {"bn": jnp.sum(d, axis=0), "bn2": jnp.sum(jnp.square(d), axis=0)}

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        _need(target, ("mean", "sd"), self.name)
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

    @classmethod
    def from_config(cls, config: Any) -> SWD:
        return cls(num_projections=None if config.swd_projections is None else int(config.swd_projections))

    @property
    def needs_key(self) -> bool:
        return True

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return {"samples": y} if weights is None else {"samples": y, "weights": weights}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        if weights is not None:
            _need(target, ("samples", "weights"), self.name)
            check_samples(x, target["samples"])
            projections = random_directions(key, x.shape[1], self.num_projections or x.shape[1])
            return weighted.sliced_wasserstein(x, weights, target["samples"], target["weights"], projections)
        _need(target, ("samples",), self.name)
        return sliced_wasserstein(x, target["samples"], key=key, num_projections=self.num_projections)

    def paper_scale(self, m: int, n: int) -> float:
        return 1.0

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        return dataclasses.replace(self, num_projections=256)


class _CovarianceMethod(StyleMethod):
    """Methods of the mean and covariance: streamable through sums of x - s and (x - s)^T (x - s), with s the
    style mean, a shift that keeps the one-pass covariance accurate in float32."""

    @property
    def streamable(self) -> bool:
        return True

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array, *,
             weighted: bool = False) -> dict[str, jax.Array]:
        if weighted:
            d = x - target["mean"]
            return {"cov1": weights @ d, "cov2": (d * weights[:, None]).T @ d}
        d = (x - target["mean"]) * weights[:, None]
        return {"cov1": jnp.sum(d, axis=0), "cov2": d.T @ d}

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
        mu, c = covariance(y) if weights is None else weighted.covariance(y, weights)
        return {"mean": mu, "cov_sqrt": psd_sqrt(c), "trace": jnp.trace(c)}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        _need(target, ("mean", "cov_sqrt", "trace"), self.name)
        moments_x = covariance(x) if weights is None else weighted.covariance(x, weights)
        return w2_from_moments(*moments_x, target["mean"], target["cov_sqrt"], target["trace"])

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        _need(target, ("mean", "cov_sqrt", "trace"), self.name)
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
        mu, c = covariance(y) if weights is None else weighted.covariance(y, weights)
        return {"mean": mu, "cov": c}

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        _need(target, ("mean", "cov"), self.name)
        return coral_term((covariance(x) if weights is None else weighted.covariance(x, weights))[1], target["cov"])

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        _need(target, ("mean", "cov"), self.name)
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

    def __post_init__(self) -> None:
        _check_estimator("gaussian", self.estimator)
        if not self.scales or any(not (float(s) > 0) for s in self.scales):
            raise ValueError(f"mkmmd bandwidth scales must be positive, got {self.scales}")

    @classmethod
    def from_config(cls, config: Any) -> MKMMD:
        return cls(scales=tuple(float(v) for v in str(config.mkmmd_scales).split(",") if v.strip()),
                   estimator=config.gaussian_estimator, block_size=int(config.block_size),
                   num_features=int(config.rff_features))

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        return self._target(y, None, weights)

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        return self._loss(x, target, key, None, self.scales, weights)

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        # The exact tiled estimator of the B-bandwidth kernel, the bandwidths fixed on the reference and style.
        base = float(mmd.pooled_gamma(reference, y))
        return Gaussian(gamma=tuple(s * base for s in self.scales), estimator="full", block_size=self.block_size)


METHODS: tuple[str, ...] = tuple(REGISTRY)
"""The ``--kernel`` names: ``gram``, ``linear``, ``poly``, ``gaussian``, ``bn``, ``swd``, ``w2``, ``coral``,
``mkmmd``."""


# ----------------------------------------------------------------------------------------------------------
# The functional interface by name (what existed before the objects; kept for scripts and notebooks).


def layer_loss(method: StyleMethod, x: jax.Array | SampleSums, target: Mapping[str, jax.Array], *,
               key: jax.Array | None = None) -> jax.Array:
    """``method``'s loss of x, samples (M, N) or their :class:`SampleSums`, against ``target``."""
    if isinstance(x, SampleSums):
        if not method.streamable:
            raise ValueError(f"style method {method.name!r} with {method.params()} needs the samples, not their sums")
        return method.loss_from_sums(x, target)
    check_samples(x)
    if method.needs_key and key is None:
        raise ValueError(f"the {method.estimator!r} estimator draws random numbers and needs a key")
    return method.loss(x, target, key=key)


def style_target(method: str | StyleMethod, y: jax.Array, **params: Any) -> Target:
    """One layer's style target, computed once per run: ``get(method, **params).target(y)``."""
    check_samples(y)
    return resolve(method, params).target(y)


def style_loss(method: str | StyleMethod, x: jax.Array | SampleSums, target: Mapping[str, jax.Array], *,
               key: jax.Array | None = None, **params: Any) -> jax.Array:
    """One layer's style loss of x (M, N), or its :class:`SampleSums` for a streamable method, against a
    :func:`style_target` built with the same method and parameters; ``key`` for random estimators.

    Equal to the direct loss with the style samples y the target was built from: ``gram``: :func:`gram_loss`;
    ``linear``: ``mmd2(x, y, kernel="linear")``; ``poly``: ``mmd2(x, y, kernel="poly", ...)``; ``gaussian``:
    ``mmd2(x, y, kernel="gaussian", ...)``; ``bn``: :func:`bn_loss`.
    """
    return layer_loss(resolve(method, params), x, target, key=key)


def paper_scale(method: str | StyleMethod, m: int, n: int, **params: Any) -> float:
    """The official code's per-layer factor c(M, N): energy = s * c * style_loss; derivation in docs/methods.md."""
    obj = resolve(method, params)
    if m < 1 or n < 1:
        raise ValueError(f"m and n must be positive, got m={m}, n={n}")
    return obj.paper_scale(m, n)


def streamable(method: str | StyleMethod, **params: Any) -> bool:
    """Whether ``method`` with ``params`` needs only :class:`SampleSums` of x: gram, linear, bn, and poly with
    d = 2 and the full or unbiased estimator (closed forms). The pairwise and random-feature estimators need
    all of x's samples at once."""
    return resolve(method, params).streamable
