"""The style-method interface, its registry, and the functional interface by name.

A style method holds its parameters (a frozen dataclass, so it is hashable and can parametrise a compiled
function) and knows everything a run needs of it:

* ``target(y)``: the style side's statistics of one layer, computed once per run (a dict of arrays);
* ``loss(x, target, key=...)``: the layer's loss of the generated samples x (M, N) against that target;
* ``target(y, weights=v)``, ``loss(x, target, key=..., weights=w)``: the same for weighted samples, one region
  of each image (spatial control, :mod:`nst_jax.losses.regions`): one code path, the statistics of
  :mod:`nst_jax.losses.stats`, :mod:`~nst_jax.losses.mmd` and :mod:`~nst_jax.losses.wasserstein` taking
  optional weights (None: uniform);
* ``streamable``, ``sums(x, target, weights)`` and ``loss_from_sums(sums, target)``: whether the loss needs only
  weighted sums over x's rows, which add up over horizontal strips of an image (:mod:`nst_jax.strips`), and how;
* ``paper_scale(m, n)``: the official code's per-layer constant (lyttonhao/Neural-Style-MMD);
* ``mixture_target(ys, weights)``: the target of a mixture of several styles' distributions (blends);
* ``spatial``: whether ``target`` and ``loss`` take the layer's activations (h, w, N), its spatial layout, in
  place of its samples (M, N) (:func:`layout`: the fusion, blend and region code hands each method its form);
* ``runs_at(layer)``: whether the method's loss is computed at a style layer (default: at all of a run's);
* ``check()``: refuses parameter values it cannot use (:class:`ParamError`, one line naming the parameter);
* ``config_fields`` and ``from_config(config)``: which run config field sets each parameter, and the method
  with a run config's parameters (one generic reader: a refused value names its config field).

:data:`REGISTRY` maps the ``--kernel`` names to the classes; :func:`register` adds one. Every loss is the pure
statistical quantity (e.g. MMD^2 itself); ``paper_scale`` maps it to the official code's energy.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax

from nst_jax.errors import ConfigError
from nst_jax.losses import mmd
from nst_jax.losses.stats import check_samples, mixture_samples, to_samples

Target = dict[str, jax.Array]


class SampleSums(NamedTuple):
    """One layer's generated-side statistics as sums over its M positions (:func:`nst_jax.losses.fusion.sample_sums`).

    What the additive methods need of x (M, N) is a sum over its rows, so the sums of disjoint parts of an
    image (horizontal strips, :mod:`nst_jax.strips`) add up to those of the whole; :func:`style_loss` accepts
    this in place of x. ``count`` is M (a Python int), or for weighted samples (a region) the sum of the
    weights (an array).
    """

    sums: Mapping[str, jax.Array]
    count: int | jax.Array


def require(target: Mapping[str, Any], names: Sequence[str], method: str) -> None:
    """ValueError unless ``target`` (a style target of ``method``) holds every one of ``names``."""
    missing = [name for name in names if name not in target]
    if missing:
        raise ValueError(
            f"style target for {method!r} lacks {', '.join(missing)}: build it with style_target and the "
            "same parameters"
        )


class ParamError(ValueError):
    """A parameter value a style method cannot use, in one line: the parameter (``field``), its ``value`` and
    the ``problem``. :meth:`StyleMethod.from_config` reports it under the config field that set it."""

    def __init__(self, method: str, field: str, value: Any, problem: str):
        super().__init__(f"style method {method!r}: {field}={value!r}: {problem}")
        self.field, self.value, self.problem = field, value, problem


def is_int(value: Any, low: int = 1) -> bool:
    """Whether ``value`` is an integer (not a bool) >= ``low``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def is_number(value: Any, low: float = 0.0) -> bool:
    """Whether ``value`` is a finite real number (not a bool) >= ``low``."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and value >= low)


@dataclasses.dataclass(frozen=True)
class StyleMethod:
    """Base class of the style methods; subclasses are frozen dataclasses whose fields are the parameters.

    A subclass checks its parameters in :meth:`check` (run on construction) and names in :attr:`config_fields`
    the run config fields that set them, so that the generic :meth:`from_config` builds it from a config.
    """

    name: ClassVar[str] = ""
    spatial: ClassVar[bool] = False
    """Whether :meth:`target` and :meth:`loss` take a layer's activations (h, w, N) (its spatial layout: patches,
    neighbourhoods) in place of its samples x (M, N) = (h*w, N); :func:`layout` gives each method its form."""
    config_fields: ClassVar[Mapping[str, str]] = {}
    """{parameter (a dataclass field): the run config field that sets it in runs (``configs/default.py``)};
    the parameters not named keep their defaults in runs."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises :class:`ParamError` (a ValueError) for a parameter value the method cannot use. Default: none."""

    def _require(self, field: str, ok: bool, problem: str) -> None:
        """:class:`ParamError` for ``field`` unless ``ok``."""
        if not ok:
            raise ParamError(self.name, field, getattr(self, field), problem)

    @classmethod
    def from_config(cls, config: Any) -> StyleMethod:
        """The method with the parameters a run config (``configs/default.py``) gives it: each of
        :attr:`config_fields` read from its config field, the others at their defaults.

        Raises:
          ConfigError: a value the method refuses, in one line naming the config field (``--poly_d=0: ...``).
        """
        values = {field: getattr(config, name) for field, name in cls.config_fields.items()}
        try:
            return cls(**values)
        except ParamError as e:
            if e.field not in cls.config_fields:
                raise
            raise ConfigError(f"--{cls.config_fields[e.field]}={values[e.field]}: {e.problem}") from None

    def params(self) -> dict[str, Any]:
        """The parameters, by name (defaults included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """``"c=1.0, d=2"``, for messages (tile sizes left out: they do not change the value)."""
        return ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "block_size") or "no parameters"

    def runs_at(self, layer: str) -> bool:
        """Whether the method's loss is computed at the style layer ``layer`` (a VGG-19 name, ``relu3_1``); at a
        run's other style layers it has no target and adds nothing. Default: at every style layer of the run."""
        return True

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
        built-in method does; a method added without them works everywhere but in masked runs, as does a
        :attr:`spatial` one (its target is of the layout, not of weighted samples)."""
        return not self.spatial and all("weights" in inspect.signature(f).parameters for f in (self.target, self.loss))

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        """Style-side statistics of one layer: y (M', N) -> a dict of arrays (a pytree); with ``weights``
        (M',), those of the weighted samples (one region). A :attr:`spatial` method gets y (h', w', N)."""
        raise NotImplementedError

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        """The layer's loss of x (M, N) against a :meth:`target` (built with weights if ``weights`` (M,) is
        given: then the loss of the weighted samples): a scalar. A :attr:`spatial` method gets x (h, w, N)."""
        raise NotImplementedError

    def sums(self, x: jax.Array, target: Mapping[str, jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
        """The sums over the rows of x (M, N), each weighted by the rows' ``weights`` (M,), that
        :meth:`loss_from_sums` needs: 1 for rows inside the image and 0 for padding rows, or one region's
        weights (then ``SampleSums.count`` is their sum)."""
        raise ValueError(f"style method {self.name!r} with {self.params()} needs all samples at once")

    def loss_from_sums(self, x: SampleSums, target: Mapping[str, jax.Array]) -> jax.Array:
        """:meth:`loss` from the sums of all of x's rows (added over strips)."""
        raise ValueError(f"style method {self.name!r} with {self.params()} needs the samples, not their sums")

    def paper_scale(self, m: int, n: int) -> float:
        """The official code's factor c(M, N) at a layer of M = H*W positions, N channels (docs/methods.md)."""
        raise NotImplementedError

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        """The target of the mixture sum_k w_k P_k of two or more styles' distributions (w_k > 0, summing to
        1), each style's layer in the method's form (:func:`layout`). Default: the target of
        :func:`nst_jax.losses.stats.mixture_samples` (pooled samples)."""
        return self.target(mixture_samples(ys, weights))

    def evaluation(self, reference: jax.Array, y: jax.Array) -> StyleMethod:
        """The method as a fixed, deterministic distance to the style samples y (M', N) at one layer, for
        comparing results (:mod:`nst_jax.evaluate`): random estimators replaced by exact ones, and anything
        that would adapt to the generated side (a bandwidth rule) fixed on ``reference`` (M, N), the content
        image's samples, so that every result is measured with the same function. (Random directions are
        fixed by the key the caller passes.) Default: the method itself."""
        return self


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


def check_estimator(method: StyleMethod, rff: bool = False) -> None:
    """:class:`ParamError` unless ``method.estimator`` is one of :data:`nst_jax.losses.mmd.ESTIMATORS`, ``rff``
    included only where ``rff`` (Gaussian kernels)."""
    method._require("estimator", method.estimator in mmd.ESTIMATORS, f"expected one of {', '.join(mmd.ESTIMATORS)}")
    method._require("estimator", rff or method.estimator != "rff", "the rff estimator needs the gaussian kernel")


# ----------------------------------------------------------------------------------------------------------
# The functional interface by name (what existed before the objects; kept for scripts and notebooks).


def layout(method: StyleMethod, features: jax.Array) -> jax.Array:
    """One layer of an image in the form ``method`` takes: its activations (h, w, N) for a
    :attr:`~StyleMethod.spatial` method, else its samples (M, N) (:func:`~nst_jax.losses.stats.to_samples`;
    samples given pass through).

    Raises:
      ValueError: samples (M, N) for a spatial method (their layout is lost), or another number of axes.
    """
    if features.ndim == 3:
        return features if method.spatial else to_samples(features)
    if method.spatial:
        raise ValueError(f"style method {method.name!r} needs the layer's spatial layout (h, w, N), got shape "
                         f"{tuple(features.shape)}")
    check_samples(features)
    return features


def layer_loss(method: StyleMethod, x: jax.Array | SampleSums, target: Mapping[str, jax.Array], *,
               key: jax.Array | None = None) -> jax.Array:
    """``method``'s loss of x, activations (h, w, N) or samples (M, N) (:func:`layout`) or their
    :class:`SampleSums`, against ``target``."""
    if isinstance(x, SampleSums):
        if not method.streamable:
            raise ValueError(f"style method {method.name!r} with {method.params()} needs the samples, not their sums")
        return method.loss_from_sums(x, target)
    x = layout(method, x)
    if method.needs_key and key is None:
        est = getattr(method, "estimator", None)
        what = f"the {est!r} estimator" if est else f"style method {method.name!r}"
        raise ValueError(f"{what} draws random numbers and needs a key")
    return method.loss(x, target, key=key)


def style_target(method: str | StyleMethod, y: jax.Array, **params: Any) -> Target:
    """One layer's style target, computed once per run: ``get(method, **params).target(y)``, y the layer's
    activations (h', w', N) or samples (M', N) (:func:`layout`)."""
    obj = resolve(method, params)
    return obj.target(layout(obj, y))


def style_loss(method: str | StyleMethod, x: jax.Array | SampleSums, target: Mapping[str, jax.Array], *,
               key: jax.Array | None = None, **params: Any) -> jax.Array:
    """One layer's style loss of x (M, N) or (h, w, N) (:func:`layout`), or its :class:`SampleSums` for a
    streamable method, against a :func:`style_target` built with the same method and parameters; ``key`` for
    random estimators.

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

