"""Basic statistics of feature samples and the losses built on them alone: Gram, BN moments, content, TV; the
pooled samples of a mixture of several styles (blends).

One VGG layer's activations of an image, (H, W, N), are M = H*W samples of an N-vector (:func:`to_samples`).
``x`` is the generated image's side (the one differentiated), ``y`` the style image's; M and M' may differ.

Weighted samples: every statistic takes optional weights w (M,), w_i >= 0, the share of position i inside a
region (spatial control: Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling Perceptual Factors in Neural
Style Transfer", CVPR 2017; the mask resized to the layer, soft at its borders). The region's distribution is
the weighted empirical one, sum_i w_i delta(x_i) / W with W = sum_i w_i, so each statistic is the plain one
with 1/M replaced by w_i / W; no weights (None) are uniform weights, computed as the plain mean. A weight
vector of zeros has no distribution (its statistics are NaN), which :mod:`nst_jax.masks` rules out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def to_samples(features: jax.Array) -> jax.Array:
    """Activations to sample matrices: (H, W, C) -> (H*W, C); (B, H, W, C) -> (B, H*W, C).

    Row i is spatial position i in row-major order; the order does not matter to any loss here except the
    content loss, which is computed on the activations directly.
    """
    if features.ndim == 3:
        return features.reshape(-1, features.shape[-1])
    if features.ndim == 4:
        return features.reshape(features.shape[0], -1, features.shape[-1])
    raise ValueError(f"features must be (H, W, C) or (B, H, W, C), got shape {tuple(features.shape)}")


def check_samples(x: jax.Array, y: jax.Array | None = None) -> None:
    """ValueError unless x (and y) are sample matrices (M, N) with the same N."""
    for name, z in (("x", x), ("y", y)):
        if z is not None and z.ndim != 2:
            raise ValueError(f"{name} must be a sample matrix (M, N), got shape {tuple(z.shape)}")
    if y is not None and x.shape[1] != y.shape[1]:
        raise ValueError(f"channel counts differ: x has N={x.shape[1]}, y has N={y.shape[1]}")


def check_weights(x: jax.Array, w: jax.Array | None) -> None:
    """ValueError unless x is a sample matrix (M, N) and w is None or a weight vector (M,) for it."""
    check_samples(x)
    if w is not None and (w.ndim != 1 or w.shape[0] != x.shape[0]):
        raise ValueError(f"weights must be (M,) = ({x.shape[0]},) for samples of shape {tuple(x.shape)}, got "
                         f"shape {tuple(w.shape)}")


def probabilities(w: jax.Array) -> jax.Array:
    """w / sum(w): the weights as the probabilities of the weighted empirical distribution."""
    return w / jnp.sum(w)


def average(values: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """The mean over the first axis of ``values`` (M, ...), weighted by w (M,) if given: sum_i w_i v_i / W."""
    if w is None:
        return jnp.mean(values, axis=0)
    return jnp.tensordot(probabilities(w), values, axes=1)


def mean(x: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """Mean of the samples x (M, N), weighted by w (M,) if given: (N,)."""
    check_weights(x, w)
    return average(x, w)


def outer_mean(a: jax.Array, b: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """mean_i a_i b_i^T of the rows of a (M, N) and b (M, N), weighted by w (M,) if given: (N, N)."""
    if w is None:
        return a.T @ b / a.shape[0]
    return (a * probabilities(w)[:, None]).T @ b


def gram(x: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """Normalised Gram matrix x^T x / M: (M, N) -> (N, N), the mean of the outer products of the samples;
    with weights w (M,), x^T diag(w) x / W (Gatys' guided Gram matrix)."""
    check_weights(x, w)
    return outer_mean(x, x, w)


def weight_totals(x: jax.Array, w: jax.Array | None = None) -> tuple[Any, Any]:
    """W = sum_i w_i and sum_i w_i^2 of the weights of the samples x (M, N), the weights counting as
    frequencies; without weights (all 1) both are M, a Python int."""
    if w is None:
        return x.shape[0], x.shape[0]
    return jnp.sum(w), jnp.sum(jnp.square(w))


def moments(x: jax.Array, w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean (N,) and centred total sum of squares sum_i w_i ||x_i - mean||^2 (a scalar) of x (M, N), weighted by
    w (M,) if given (all 1 otherwise)."""
    check_weights(x, w)
    mu = mean(x, w)
    if w is None:
        return mu, jnp.sum(jnp.square(x - mu))
    return mu, w @ jnp.sum(jnp.square(x - mu), axis=1)


def safe_sqrt(v: jax.Array) -> jax.Array:
    """sqrt with derivative 0 at v == 0 instead of inf (see :func:`bn_stats` for why 0 is right there)."""
    # The double where keeps the untaken branch's gradient finite too.
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def gram_term(gx: jax.Array, gy: jax.Array) -> jax.Array:
    """1/(4 N^2) ||G_x - G_y||_F^2 of two normalised (N, N) Gram matrices."""
    n = gx.shape[0]
    return jnp.sum(jnp.square(gx - gy)) / (4.0 * n * n)


def gram_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    """Gatys' style loss 1/(4 N^2) ||x^T x / M - y^T y / M'||_F^2 (each Gram normalised by its own count).

    For M == M' this is 1/(4 N^2 M^2) ||G_x - G_y||^2 with unnormalised Grams, and for any M, M' it equals
    ``mmd2(x, y, kernel="poly", c=0, d=2, estimator="full") / (4 N^2)`` (Li et al. 2017, theorem 1).
    x: (M, N), y: (M', N) -> scalar.
    """
    check_samples(x, y)
    return gram_term(gram(x), gram(y))


def bn_stats(x: jax.Array, w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and population standard deviation (1/M, as the official code): (M, N) -> (N,), (N,);
    with weights w (M,), the weighted ones.

    The deviation is sqrt(mean_i (x_i - mu)^2) exactly, with no epsilon, through a guarded square root whose
    derivative at 0 is 0. Why that is right: sd_c = ||x_c - mu_c|| / sqrt(M) is a scaled Euclidean norm of the
    centred channel, so its gradient (x_c - mu_c) / (M sd_c) has norm 1/sqrt(M) wherever sd_c > 0 and never
    blows up; only at sd_c == 0 (a constant channel, e.g. a dead ReLU) does the chain rule form 0 * inf =
    NaN (the official code's BN NaN). There the norm has no gradient and 0 is a valid subgradient, which is
    what the guard returns. An epsilon (sqrt(var + eps)) would bias every value instead.
    """
    check_weights(x, w)
    mu = average(x, w)
    return mu, safe_sqrt(average(jnp.square(x - mu), w))


def bn_term(mu_x: jax.Array, sd_x: jax.Array, mu_y: jax.Array, sd_y: jax.Array) -> jax.Array:
    """1/N sum_c (mu_x,c - mu_y,c)^2 + (sd_x,c - sd_y,c)^2 from the two sides' (N,) statistics."""
    return jnp.mean(jnp.square(mu_x - mu_y) + jnp.square(sd_x - sd_y))


def bn_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    """BN-statistics loss 1/N sum_c [(mu_x,c - mu_y,c)^2 + (sd_x,c - sd_y,c)^2]: (M, N), (M', N) -> scalar.

    Statistics from :func:`bn_stats`; the gradient is finite for constant channels.
    """
    check_samples(x, y)
    return bn_term(*bn_stats(x), *bn_stats(y))


def content_loss(f: jax.Array, p: jax.Array) -> jax.Array:
    """sum (F - P)^2 over all elements: the paper's content energy without its weight alpha (the caller's).

    f, p: activations of the generated and the content image, same shape (any). No 1/2, no normalisation,
    as the official code.
    """
    if f.shape != p.shape:
        raise ValueError(f"content features differ in shape: {tuple(f.shape)} and {tuple(p.shape)}")
    return jnp.sum(jnp.square(f - p))


def total_variation(image: jax.Array, *, boundary: str = "free") -> jax.Array:
    """Squared total variation: sum of squared differences of vertically and horizontally adjacent pixels.

    TV(x) = sum_{h, w, c} (x[h+1, w, c] - x[h, w, c])^2 + (x[h, w+1, c] - x[h, w, c])^2, summed over the
    batch too. ``boundary="free"`` counts only pairs inside the image. ``boundary="zero"`` also counts each
    border pixel's differences to a zero frame (zero padding by one pixel).

    The official code applies no TV loss but adds tv_weight * conv(x, [[0,-1,0],[-1,4,-1],[0,-1,0]] / 8)
    (zero padding) to the gradient; that equals tv_weight / 16 * grad of ``total_variation(x,
    boundary="zero")`` exactly, since d TV / d x = 2 (4 x - sum of the four neighbours, 0 outside). With x in
    mean-subtracted units the zero frame is the mean colour.

    Args:
      image: (H, W, C) or (B, H, W, C).
      boundary: ``"free"`` or ``"zero"``.

    Returns:
      A scalar in squared image units.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (B, H, W, C), got shape {tuple(image.shape)}")
    if boundary == "zero":
        pad = [(0, 0)] * (image.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
        image = jnp.pad(image, pad)
    elif boundary != "free":
        raise ValueError(f"boundary must be 'free' or 'zero', not {boundary!r}")
    dh = image[..., 1:, :, :] - image[..., :-1, :, :]
    dw = image[..., :, 1:, :] - image[..., :, :-1, :]
    return jnp.sum(jnp.square(dh)) + jnp.sum(jnp.square(dw))


def covariance(x: jax.Array, w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean (N,) and population covariance (N, N) of the samples x (M, N): denominator M, like :func:`gram`
    and :func:`bn_stats` (two passes: the mean first, then the centred products, accurate in float32); with
    weights w (M,), the weighted ones (denominator W)."""
    check_weights(x, w)
    mu = average(x, w)
    xc = x - mu
    return mu, outer_mean(xc, xc, w)


def coral_term(cx: jax.Array, cy: jax.Array) -> jax.Array:
    """||C_x - C_y||_F^2 / (4 N^2) of two (N, N) covariances."""
    n = cx.shape[0]
    return jnp.sum(jnp.square(cx - cy)) / (4.0 * n * n)


def coral(x: jax.Array, y: jax.Array) -> jax.Array:
    """CORAL, the distance of second-order statistics: ||C_x - C_y||_F^2 / (4 N^2): (M, N), (M', N) -> scalar.

    Sun and Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016 workshops. The
    covariances here are population ones (denominator M, as :func:`gram` and :func:`bn_stats`); the CORAL
    paper divides by M - 1. It is :func:`gram_loss` with the means taken out.
    """
    check_samples(x, y)
    return coral_term(covariance(x)[1], covariance(y)[1])


def mixture_weights(ys: Sequence[jax.Array], weights: Sequence[float]) -> list[float]:
    """The blend weights checked against the styles' samples and normalised to sum 1."""
    if len(ys) != len(weights) or not ys:
        raise ValueError(f"{len(ys)} style(s) but {len(weights)} blend weight(s)")
    for y in ys:
        check_samples(y, ys[0])
    w = [float(v) for v in weights]
    if any(not np.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"blend weights must be non-negative, finite and not all zero, got {weights}")
    return [v / sum(w) for v in w]


def mixture_samples(ys: Sequence[jax.Array], weights: Sequence[float]) -> jax.Array:
    """Pooled samples of the mixture sum_k w_k P_k of several styles' empirical distributions.

    Style k contributes n_k = round(w_k * s) of its rows, evenly spaced, with s = min over w_k > 0 of
    M_k / w_k (so no style needs more rows than it has); the pooled rows then weigh each style by w_k.
    With one non-zero weight the pool is exactly that style's samples.

    Args:
      ys: (M_k, N) samples per style.
      weights: non-negative, not all zero (normalised here).
    Returns:
      (sum_k n_k, N).
    """
    w = mixture_weights(ys, weights)
    s = min(y.shape[0] / wk for y, wk in zip(ys, w, strict=True) if wk > 0)
    parts = []
    for y, wk in zip(ys, w, strict=True):
        n = min(y.shape[0], int(round(wk * s)))
        if n > 0:
            parts.append(y[(np.arange(n) * y.shape[0]) // n])
    return jnp.concatenate(parts, axis=0)
