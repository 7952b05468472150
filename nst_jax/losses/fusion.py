"""Fusions of style methods over layers, and mixtures of several styles' distributions (blends).

A fused style loss is a weighted sum over layers and :class:`StyleTerm` s (a method and its weight). Several
style images are blended as the mixture of their feature distributions (:func:`mixture_style_target`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nst_jax.losses import methods
from nst_jax.losses.stats import check_samples, mixture_weights, to_samples


@dataclasses.dataclass(frozen=True, init=False)
class StyleTerm:
    """One method of a fused style loss: a :class:`~nst_jax.losses.methods.StyleMethod` and its ``weight``.

    ``StyleTerm("poly", 0.5, {"c": 0.0})`` builds the method from its name and parameters;
    ``StyleTerm(Poly(c=0.0), 0.5)`` takes the object. Hashable (a compiled function can depend on it).
    """

    method: methods.StyleMethod
    weight: float

    def __init__(self, method: str | methods.StyleMethod, weight: float = 1.0,
                 params: Mapping[str, Any] | None = None):
        object.__setattr__(self, "method", methods.resolve(method, params or {}))
        object.__setattr__(self, "weight", weight)

    @property
    def name(self) -> str:
        """The method's ``--kernel`` name."""
        return self.method.name

    @property
    def params(self) -> dict[str, Any]:
        """The method's parameters."""
        return self.method.params()


def term_names(terms: Sequence[StyleTerm]) -> list[str]:
    """Each term's method name, or ``method_i`` (i its index) when a method appears more than once."""
    names = [t.name for t in terms]
    return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def fused_style_targets(
    style_features: Mapping[str, jax.Array], terms: Sequence[StyleTerm]
) -> dict[str, list[dict[str, jax.Array]]]:
    """Targets for every layer and term: {layer: (h', w', N) activations or (M', N) samples} -> {layer: [target
    per term]}; a term's target is empty ({}) at a layer its method does not run at (``runs_at``)."""
    if not terms:
        raise ValueError("no style term given")
    return {layer: [methods.style_target(t.method, y) if t.method.runs_at(layer) else {} for t in terms]
            for layer, y in style_features.items()}


def fused_style_loss(
    features: Mapping[str, jax.Array | methods.SampleSums],
    targets: Mapping[str, Sequence[Mapping[str, jax.Array]]],
    terms: Sequence[StyleTerm],
    layer_weights: Mapping[str, float],
    *,
    key: jax.Array | None = None,
    scales: Mapping[tuple[int, str], float | jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Style loss fused over methods and layers.

    total = sum_layers sum_terms layer_weights[layer] * terms[i].weight * scales[(i, layer)] *
    terms[i].method's loss of features[layer] against targets[layer][i], over the layers where terms[i].method
    runs (``runs_at``).

    Each term's weight multiplies that term only: the paper's intended fusion rule. (The official code
    multiplies only the first method's factor by the product of all fusion weights, a defect not reproduced.)

    Args:
      features: {layer: (h, w, N)} generated-image activations (each method takes them in its form,
        :func:`~nst_jax.losses.methods.layout`), (M, N) samples, or their :class:`SampleSums` (streamable terms).
      targets: {layer: [target per term]} from :func:`fused_style_targets` with the same ``terms``.
      terms: the methods and weights.
      layer_weights: {layer: weight} for every layer of ``features``.
      key: split per layer and per term (``fold_in`` of the layer's position in ``features``, then of the
        term's index), so each layer and term draws independent pairs or frequencies; needed if any term
        uses the linear or rff estimator.
      scales: optional {(term index, layer): multiplier}, e.g. the paper's constants times a balance factor;
        absent entries are 1.

    Returns:
      (total, per_term) where per_term[name] is that term's weighted contribution summed over layers (they
      add up to total); names from :func:`term_names`.
    """
    if not terms:
        raise ValueError("no style term given")
    names = term_names(terms)
    per_term = {name: jnp.zeros(()) for name in names}
    scales = scales or {}
    for li, (layer, x) in enumerate(features.items()):
        if layer not in targets:
            raise ValueError(f"no style target for layer {layer!r}")
        if layer not in layer_weights:
            raise ValueError(f"no layer weight for layer {layer!r}")
        if len(targets[layer]) != len(terms):
            raise ValueError(f"layer {layer!r} has {len(targets[layer])} targets for {len(terms)} terms")
        layer_key = None if key is None else jax.random.fold_in(key, li)
        samples = flattened(x)
        for ti, term in enumerate(terms):
            if not term.method.runs_at(layer):
                continue
            term_key = None if layer_key is None else jax.random.fold_in(layer_key, ti)
            value = methods.layer_loss(term.method, x if term.method.spatial else samples, targets[layer][ti],
                                       key=term_key)
            factor = layer_weights[layer] * term.weight * scales.get((ti, layer), 1.0)
            per_term[names[ti]] = per_term[names[ti]] + factor * value
    total = sum(per_term.values(), jnp.zeros(()))
    return total, per_term


def flattened(x: jax.Array | methods.SampleSums) -> jax.Array | methods.SampleSums:
    """A layer's activations (h, w, N) as samples (M, N), anything else as it is: flattened once per layer for
    all of its non-spatial terms, whose gradients then meet on the samples (the same arithmetic as ever)."""
    return to_samples(x) if not isinstance(x, methods.SampleSums) and x.ndim == 3 else x


def sample_sums(
    terms: Sequence[StyleTerm], x: jax.Array, targets: Sequence[Mapping[str, jax.Array]], weights: jax.Array,
) -> dict[str, jax.Array]:
    """The sums over the rows of x that every (streamable) term's loss needs.

    Args:
      terms: the style terms of a layer, each streamable.
      x: (M, N) samples (one strip of a layer); targets: that layer's target per term.
      weights: (M,) the rows' sample weights, by which every sum is weighted: 1 for rows inside the image and
        0 for padding rows (whose x is 0), or one region's weights in a masked run (0 on padding rows).

    Returns:
      The union of the terms' :meth:`~nst_jax.losses.methods.StyleMethod.sums`: ``xx`` (N, N) = x^T x;
      ``x`` (N,) = sum x_i; ``q``, ``q2`` = sum q_i, sum q_i^2 with q_i = ||x_i||^2 (poly, unbiased); ``bn``,
      ``bn2`` (N,) = sum w_i (x_i - s), sum w_i (x_i - s)^2 with s the bn target's mean. Add them over strips
      for :class:`SampleSums`.
    """
    check_samples(x)
    out: dict[str, jax.Array] = {}
    for term, target in zip(terms, targets, strict=True):
        if not term.method.streamable:
            raise ValueError(f"style method {term.name!r} with {term.params} needs all samples at once")
        out.update(term.method.sums(x, target, weights))
    return out


def mixture_style_target(
    method: str | methods.StyleMethod, ys: Sequence[jax.Array], weights: Sequence[float], **params: Any
) -> dict[str, jax.Array]:
    """The style target of the mixture sum_k w_k P_k of several styles' feature distributions.

    The paper's view of a style is the distribution of its feature samples, so a blend of styles is a mixture
    of distributions. Where a target is made of moments the mixture's are exact: the second moment (gram,
    poly with d = 2 and the full estimator) and the mean (linear, poly) are the w-weighted sums, and for bn the
    mixture's variance is sum_k w_k (sd_k^2 + mu_k^2) - mu^2. Otherwise (gaussian, other poly estimators) the
    target is built from :func:`~nst_jax.losses.stats.mixture_samples` (each method's ``mixture_target``).
    ``ys``: each style's layer, activations (h'_k, w'_k, N) or samples (M'_k, N) (given to the method in its
    form, :func:`~nst_jax.losses.methods.layout`).

    (The other way to blend, a weighted sum of per-style losses, is not a distribution distance to any single
    target; it pulls toward each style separately.)
    """
    obj = methods.resolve(method, params)
    w = mixture_weights([to_samples(y) if y.ndim == 3 else y for y in ys], weights)
    ys = [methods.layout(obj, y) for y in ys]
    # Components of weight 0 are not in the mixture; dropping them also spares bn's variance formula the
    # cancellation (sd^2 + mu^2) - mu^2 when a single style remains.
    ys, w = [y for y, wk in zip(ys, w, strict=True) if wk > 0], [wk for wk in w if wk > 0]
    if len(ys) == 1:
        return methods.style_target(obj, ys[0])
    return obj.mixture_target(ys, w)
