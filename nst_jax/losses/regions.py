"""Style losses per region (spatial control): each content region aligned with its style region.

A run with masks (:mod:`nst_jax.masks`) has R content regions with a style loss; at each style layer region r
is a weight vector w_r (M,) over the generated image's samples and a weighted target built from the style
samples with weights v_r (:meth:`~nst_jax.losses.methods.StyleMethod.target` with ``weights``). The layer's
loss is the share-weighted sum sum_r (W_r / M) L(x, w_r; target_r), W_r = sum_i w_r,i: the content's
distribution is the mixture of its regions' distributions with those shares, and each component is aligned
with its own style. With one region covering everything (W = M) this is the unmasked loss, and the gradient
per position has the unmasked size whatever the regions' sizes. Positions of content regions without a style
region carry no weight in any region: no style loss there.

The regions are a leading axis of the stacked targets and weights, and the method is ``jax.vmap``-ed over it,
so a region costs one more evaluation of the layer's statistics but no more compiled code. (Gatys et al.,
"Controlling Perceptual Factors in Neural Style Transfer", CVPR 2017, guided Gram matrices.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nst_jax.losses import methods
from nst_jax.losses.fusion import StyleTerm, flattened, term_names


def region_targets(method: methods.StyleMethod, ys: Sequence[jax.Array], weights: jax.Array) -> dict[str, Any]:
    """Targets of R regions, stacked: the style samples of every style image (activations (h'_k, w'_k, N) or
    samples (M'_k, N)) concatenated (sum_k M'_k, N), each region's target built with its row of ``weights``
    (R, sum_k M'_k) (:class:`nst_jax.masks.RunMasks`).

    Raises:
      ValueError: a :attr:`~nst_jax.losses.methods.StyleMethod.spatial` method (its target is of the layout,
        not of weighted samples).
    """
    if method.spatial:
        raise ValueError(f"the {method.name} method takes its layer's spatial layout, not weighted samples: "
                         f"no regions")
    ys = [methods.layout(method, y) for y in ys]
    y = ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=0)
    return jax.vmap(lambda w: method.target(y, weights=w))(weights)


def region_losses(method: methods.StyleMethod, x: jax.Array | methods.SampleSums, targets: Mapping[str, Any],
                  weights: jax.Array, key: jax.Array | None) -> jax.Array:
    """Each region's loss (R,): x (h, w, N) activations or (M, N) samples with ``weights`` (R, M), or
    :class:`SampleSums` stacked per region (their ``count`` the weight sums, (R,)); ``targets`` from
    :func:`region_targets`. Region r draws with ``fold_in(key, r)``."""
    if isinstance(x, methods.SampleSums):
        return jax.vmap(lambda s, c, t: method.loss_from_sums(methods.SampleSums(s, c), t))(x.sums, x.count, targets)
    x = methods.layout(method, x)
    if method.needs_key and key is None:
        raise ValueError(f"the {method.name!r} method draws random numbers and needs a key")
    keys = None if key is None else jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(weights.shape[0]))
    if keys is None:
        return jax.vmap(lambda w, t: method.loss(x, t, weights=w))(weights, targets)
    return jax.vmap(lambda w, t, k: method.loss(x, t, key=k, weights=w))(weights, targets, keys)


def fused_region_loss(
    features: Mapping[str, jax.Array | methods.SampleSums],
    targets: Mapping[str, Sequence[Mapping[str, Any]]],
    terms: Sequence[StyleTerm],
    layer_weights: Mapping[str, float],
    region_weights: Mapping[str, jax.Array],
    *,
    key: jax.Array | None = None,
    scales: Mapping[tuple[int, str], float | jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """:func:`nst_jax.losses.fused_style_loss` with regions.

    Args:
      features: {layer: (h, w, N) activations or (M, N) samples, or SampleSums stacked per region}.
      targets: {layer: [stacked region targets per term]} (:func:`region_targets`).
      region_weights: {layer: (R, h, w)} the content regions' weights at the layer (h * w = M).
      key, scales: as :func:`nst_jax.losses.fused_style_loss` (the same key per layer and term, then per region).

    Returns:
      (total, per term as fused_style_loss, (R,) each region's part of the total).
    """
    names = term_names(terms)
    per_term = {name: jnp.zeros(()) for name in names}
    per_region = None
    scales = scales or {}
    for li, (layer, x) in enumerate(features.items()):
        w = region_weights[layer]
        w = w.reshape(w.shape[0], -1)
        shares = jnp.sum(w, axis=1) / w.shape[1]
        layer_key = None if key is None else jax.random.fold_in(key, li)
        samples = flattened(x)
        for ti, term in enumerate(terms):
            if not term.method.runs_at(layer):
                continue
            term_key = None if layer_key is None else jax.random.fold_in(layer_key, ti)
            values = shares * region_losses(term.method, x if term.method.spatial else samples, targets[layer][ti],
                                            w, term_key)
            factor = layer_weights[layer] * term.weight * scales.get((ti, layer), 1.0)
            per_term[names[ti]] = per_term[names[ti]] + factor * jnp.sum(values)
            per_region = factor * values if per_region is None else per_region + factor * values
    total = sum(per_term.values(), jnp.zeros(()))
    return total, per_term, per_region
