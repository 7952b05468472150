"""Style, content and smoothness losses as pure functions of feature sample matrices.

One VGG layer's activations of an image, (H, W, N), are M = H*W samples of an N-vector (:func:`to_samples`).
Gatys' Gram loss is 1/(4 N^2) times the squared maximum mean discrepancy (MMD) of the generated image's
samples ``x`` (M, N) and the style image's samples ``y`` (M', N) under the kernel k(a, b) = (a . b)^2 (Li et
al. 2017, theorem 1). This module has that loss, MMD under the linear, polynomial and Gaussian kernels with
four estimators, matching of per-channel means and standard deviations (BN statistics), their fusion over
methods and layers, the content loss and total variation.

Conventions:
  * ``x`` is the generated image's side (the one differentiated), ``y`` the style image's; M, M' may differ.
  * Every style loss here is the pure statistical quantity (e.g. MMD^2 itself); :func:`paper_scale` gives the
    per-layer factor of the official code (lyttonhao/Neural-Style-MMD) that turns it into that code's energy.
  * Style-side statistics are computed once per run by :func:`style_target`; :func:`style_loss` then only
    computes the generated side and the cross terms.

Reference: Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017 (arXiv 1701.01036);
Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (the estimators); Rahimi & Recht, "Random Features for
Large-Scale Kernel Machines", NIPS 2007 (random Fourier features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nst_jax import kernels

KERNELS: tuple[str, ...] = tuple(kernels.KERNELS)
"""Kernel names accepted by :func:`mmd2`: ``"linear"``, ``"poly"``, ``"gaussian"``."""

ESTIMATORS: tuple[str, ...] = ("full", "unbiased", "linear", "rff")
"""MMD^2 estimators: V-statistic, U-statistic, the paper's paired linear-time one, random Fourier features."""

METHODS: tuple[str, ...] = ("gram", "linear", "poly", "gaussian", "bn")
"""Style methods of :func:`style_target` / :func:`style_loss`."""

_KERNEL_PARAMS = {"linear": (), "poly": ("c", "d"), "gaussian": ("gamma", "num_features")}
_METHOD_PARAMS = {
    "gram": (),
    "linear": (),
    "poly": ("c", "d", "estimator", "block_size"),
    "gaussian": ("gamma", "estimator", "block_size", "num_features"),
    "bn": (),
}
_METHOD_DEFAULTS = {
    "poly": {"c": 1.0, "d": 2, "estimator": "full", "block_size": 512},
    "gaussian": {"gamma": None, "estimator": "linear", "block_size": 512, "num_features": 1024},
}


# ----------------------------------------------------------------------------------------------------------
# Samples and simple statistics


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


def _check_samples(x: jax.Array, y: jax.Array | None = None) -> None:
    for name, z in (("x", x), ("y", y)):
        if z is not None and z.ndim != 2:
            raise ValueError(f"{name} must be a sample matrix (M, N), got shape {tuple(z.shape)}")
    if y is not None and x.shape[1] != y.shape[1]:
        raise ValueError(f"channel counts differ: x has N={x.shape[1]}, y has N={y.shape[1]}")


def gram(x: jax.Array) -> jax.Array:
    """Normalised Gram matrix x^T x / M: (M, N) -> (N, N), the mean of the outer products of the samples."""
    _check_samples(x)
    return x.T @ x / x.shape[0]


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean (N,) and centred total sum of squares sum_i ||x_i - mean||^2 (scalar)."""
    mu = jnp.mean(x, axis=0)
    return mu, jnp.sum(jnp.square(x - mu))


def _safe_inverse(mean_sq: jax.Array) -> jax.Array:
    # All samples equal: every distance is 0 and any gamma gives k = 1; pick 1 rather than 1/0.
    pos = mean_sq > 0
    return jnp.where(pos, 1.0 / jnp.where(pos, mean_sq, 1.0), 1.0)


def _pooled_gamma_from_moments(
    mu_x: jax.Array, ss_x: jax.Array, m: int, mu_y: jax.Array, ss_y: jax.Array, m2: int
) -> jax.Array:
    # Pooled sample z of P = M + M' rows: sum_{i,j} ||z_i - z_j||^2 = 2 P sum_i ||z_i - mean z||^2, and the
    # pooled centred sum of squares is ss_x + ss_y + (M M' / P) ||mu_x - mu_y||^2 (parallel-variance formula,
    # stable in float32 where 2 mean||z||^2 - 2 ||mean z||^2 would cancel). Mean over the P (P - 1) ordered
    # pairs with i != j: 2 ss / (P - 1).
    p = m + m2
    ss = ss_x + ss_y + (m * m2 / p) * jnp.sum(jnp.square(mu_x - mu_y))
    return lax.stop_gradient(_safe_inverse(2.0 * ss / (p - 1)))


def pooled_gamma(x: jax.Array, y: jax.Array) -> jax.Array:
    """The paper's bandwidth rule over all pairs: gamma = 1 / mean ||z_i - z_j||^2, under ``stop_gradient``.

    The mean runs over all ordered pairs i != j of the pooled sample z = [x; y] (a point paired with itself is
    no pair, and the paired estimator never draws one). Closed form through means and centred sums of
    squares: O((M + M') N), no pair is formed. Used by the ``full``, ``unbiased`` and ``rff`` estimators;
    the ``linear`` estimator uses its own sampled pairs, as the official code does. If all samples are equal
    the mean is 0 and gamma is 1 (every kernel value is 1 whatever gamma is).

    Args:
      x: (M, N); y: (M', N).

    Returns:
      gamma, a scalar, for k(a, b) = exp(-gamma ||a - b||^2).
    """
    _check_samples(x, y)
    mu_x, ss_x = _moments(x)
    mu_y, ss_y = _moments(y)
    return _pooled_gamma_from_moments(mu_x, ss_x, x.shape[0], mu_y, ss_y, y.shape[0])


# ----------------------------------------------------------------------------------------------------------
# MMD^2


def _check_mmd_args(kernel: str, estimator: str, key: jax.Array | None, params: Mapping[str, Any]) -> None:
    kernels.get(kernel)  # ValueError for an unknown kernel
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; known estimators: {', '.join(ESTIMATORS)}")
    if estimator == "rff" and kernel != "gaussian":
        raise ValueError(f"the rff estimator needs the gaussian kernel, got kernel {kernel!r}")
    if estimator in ("linear", "rff") and key is None:
        raise ValueError(f"the {estimator!r} estimator draws random numbers and needs a key")
    _check_param_names(params, _KERNEL_PARAMS[kernel], f"kernel {kernel!r}")
    if "num_features" in params and estimator != "rff":
        raise ValueError("num_features is a parameter of the rff estimator only")


def _check_param_names(params: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {what}; it takes: {', '.join(allowed) or 'none'}"
        )


def _is_two(d: Any) -> bool:
    return isinstance(d, (int, float)) and not isinstance(d, bool) and d == 2


def linear_time_pairs(
    x: jax.Array, y: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The paired samples of the linear-time estimator: (x0, x1, y0, y1), each (K, N).

    The rows of x and of y are shuffled by independent permutations drawn from ``key``, cut to the first 2K
    rows with K = min(M // 2, M' // 2) (the official code, where M == M', drops the last row when M is odd),
    and paired consecutively: x0 = x[0::2], x1 = x[1::2], likewise for y.
    """
    _check_samples(x, y)
    pairs = min(x.shape[0] // 2, y.shape[0] // 2)
    if pairs == 0:
        raise ValueError(f"the linear estimator needs at least 2 rows on each side, got M={x.shape[0]}, "
                         f"M'={y.shape[0]}")
    kx, ky = jax.random.split(key)
    xs = jnp.take(x, jax.random.permutation(kx, x.shape[0])[: 2 * pairs], axis=0)
    ys = jnp.take(y, jax.random.permutation(ky, y.shape[0])[: 2 * pairs], axis=0)
    return xs[0::2], xs[1::2], ys[0::2], ys[1::2]


def _mmd2_linear_time(
    x: jax.Array, y: jax.Array, kernel: str, key: jax.Array, params: Mapping[str, Any]
) -> jax.Array:
    x0, x1, y0, y1 = linear_time_pairs(x, y, key)
    params = dict(params)
    if kernel == "gaussian" and params.get("gamma") is None:
        # The official rule: 1 / mean squared distance over the 4K sampled pairs of this draw.
        pairs = ((x0, x1), (y0, y1), (x0, y1), (y0, x1))
        sq = jnp.concatenate([jnp.sum(jnp.square(a - b), axis=1) for a, b in pairs])
        params["gamma"] = lax.stop_gradient(_safe_inverse(jnp.mean(sq)))
    k = kernels.get(kernel)
    h = (
        kernels.rowwise(k, x0, x1, **params)
        + kernels.rowwise(k, y0, y1, **params)
        - kernels.rowwise(k, x0, y1, **params)
        - kernels.rowwise(k, y0, x1, **params)
    )
    return jnp.mean(h)


def _rff_mean(z: jax.Array, w: jax.Array, block_size: int) -> jax.Array:
    """Mean random Fourier feature of the rows of z: (M, N), w (N, D) -> (2D,), tiled over rows."""
    m, n = z.shape
    d = w.shape[1]
    bs = min(block_size, m)
    nb = -(-m // bs)
    blocks = jnp.pad(z, ((0, nb * bs - m), (0, 0))).reshape(nb, bs, n)
    starts = jnp.arange(nb) * bs

    @jax.checkpoint
    def block_sum(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        zb, start = args
        keep = (start + jnp.arange(bs) < m)[:, None]
        proj = zb @ w
        return jnp.concatenate([jnp.sum(jnp.where(keep, jnp.cos(proj), 0.0), 0),
                                jnp.sum(jnp.where(keep, jnp.sin(proj), 0.0), 0)])

    if nb == 1:  # one tile: no loop to compile
        sums = block_sum((blocks[0], starts[0]))
    else:
        sums = jnp.sum(lax.map(block_sum, (blocks, starts)), axis=0)
    return sums / (float(m) * d**0.5)


def _mmd2_rff(
    x: jax.Array, y: jax.Array, key: jax.Array, gamma: jax.Array, num_features: int, block_size: int
) -> jax.Array:
    # phi(a) = [cos(W a), sin(W a)] / sqrt(D) with the D columns of W ~ N(0, 2 gamma I): phi(a) . phi(b) =
    # (1/D) sum_d cos(w_d . (a - b)), an unbiased estimate of exp(-gamma ||a - b||^2). ||mean phi(x) -
    # mean phi(y)||^2 then estimates the full (V-statistic) MMD^2 in O((M + M') N D).
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    w = jax.random.normal(key, (x.shape[1], num_features), x.dtype) * jnp.sqrt(2.0 * gamma).astype(x.dtype)
    diff = _rff_mean(x, w, block_size) - _rff_mean(y, w, block_size)
    return jnp.sum(jnp.square(diff))


def _self_mean(
    k: kernels.Kernel, z: jax.Array, unbiased: bool, block_size: int, params: Mapping[str, Any]
) -> jax.Array:
    """mean of k(z_i, z_j) over all pairs (V) or over i != j (U)."""
    m = z.shape[0]
    total = kernels.pairwise_sum(k, z, z, block_size, unbiased, **params)
    # Python floats: M^2 overflows int32 from M = 46341 on (relu1_1 of a 256 px image has M = 65536).
    return total / float(m * (m - 1) if unbiased else m * m)


def mmd2_pairwise(
    x: jax.Array,
    y: jax.Array,
    *,
    kernel: str,
    unbiased: bool = False,
    block_size: int = 512,
    **kernel_params: Any,
) -> jax.Array:
    """MMD^2 by tiled pairwise kernel sums, for any kernel with explicit parameters.

    full (V-statistic): mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j);
    unbiased (U-statistic): the first two means over i != j only. The general path :func:`mmd2` uses where
    no closed form exists, and the reference its closed forms are tested against. O((M + M')^2 N) time,
    O(block_size (M + M')) memory.

    Args:
      x: (M, N); y: (M', N).
      kernel: ``"linear"``, ``"poly"`` or ``"gaussian"``; ``gamma`` must be given (no bandwidth rule here).
      unbiased: U-statistic instead of V-statistic.
      block_size: rows per tile, see :func:`nst_jax.kernels.pairwise_sum`.
      **kernel_params: ``c``, ``d`` for poly, ``gamma`` for gaussian.
    """
    _check_samples(x, y)
    _check_mmd_args(kernel, "unbiased" if unbiased else "full", None, kernel_params)
    if kernel == "gaussian" and kernel_params.get("gamma") is None:
        raise ValueError("mmd2_pairwise needs an explicit gamma for the gaussian kernel")
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    k = kernels.get(kernel)
    kxy = kernels.pairwise_sum(k, x, y, block_size, **kernel_params) / float(x.shape[0] * y.shape[0])
    return (
        _self_mean(k, x, unbiased, block_size, kernel_params)
        + _self_mean(k, y, unbiased, block_size, kernel_params)
        - 2.0 * kxy
    )


def _poly2_self(x: jax.Array, g: jax.Array, mu: jax.Array, c: float) -> jax.Array:
    """(V - D) / (M - 1) for k = (a.b + c)^2 minus c^2: the U-statistic's correction of one side's mean.

    V = mean_ij k(x_i, x_j) = ||G||_F^2 + 2c ||mu||^2 (+ c^2), D = mean_i k(x_i, x_i) = mean (q_i^2 + 2c q_i)
    (+ c^2) with q_i = ||x_i||^2; mean_{i != j} k = (M V - D) / (M - 1) = V + (V - D) / (M - 1).
    """
    q = jnp.sum(jnp.square(x), axis=1)
    return _poly2_self_from(g, mu, jnp.mean(jnp.square(q)), jnp.mean(q), c, x.shape[0])


def _poly2_self_from(g: jax.Array, mu: jax.Array, q2: jax.Array, q: jax.Array, c: float, m: int) -> jax.Array:
    """:func:`_poly2_self` from the Gram matrix, the mean, mean_i q_i^2 and mean_i q_i (q_i = ||x_i||^2)."""
    v = jnp.sum(jnp.square(g)) + 2.0 * c * jnp.sum(jnp.square(mu))
    return (v - (q2 + 2.0 * c * q)) / (m - 1)


def _linear_self(ss: jax.Array, m: int) -> jax.Array:
    """(V - D) / (M - 1) for the linear kernel: (||mu||^2 - mean ||x_i||^2) / (M - 1) = -ss / (M (M - 1))."""
    return -ss / float(m * (m - 1))


def mmd2(
    x: jax.Array,
    y: jax.Array,
    *,
    kernel: str,
    estimator: str = "full",
    key: jax.Array | None = None,
    block_size: int = 512,
    **kernel_params: Any,
) -> jax.Array:
    """Squared maximum mean discrepancy between the samples x and y.

    Kernels (``kernel_params``):
      * ``"linear"``: k(a, b) = a . b.
      * ``"poly"``: k(a, b) = (a . b + c)^d, ``c`` (default 1.0), ``d`` (default 2).
      * ``"gaussian"``: k(a, b) = exp(-gamma ||a - b||^2), ``gamma`` (None or absent: the paper's rule,
        1 / mean squared distance of the sampled pairs under ``stop_gradient``; see :func:`pooled_gamma` and
        :func:`linear_time_pairs`); ``num_features`` (rff only, default 1024).

    Estimators:
      * ``"full"``: V-statistic mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j) (diagonal
        included; the one Gatys' loss equals). Linear kernel: ||mu_x - mu_y||^2, O(M N). Poly with d = 2:
        ||G_x - G_y||_F^2 + 2c ||mu_x - mu_y||^2 with G = z^T z / M, O(M N^2). Otherwise tiled pairs,
        O(M^2 N) time and O(block_size M) memory.
      * ``"unbiased"``: U-statistic, the within-sample means over i != j (closed forms as above, plus the
        diagonal terms, for linear and poly d = 2).
      * ``"linear"``: the paper's paired estimator mean_k [k(x0, x1) + k(y0, y1) - k(x0, y1) - k(y0, x1)]
        over the pairs of :func:`linear_time_pairs` (fresh permutations from ``key``). Unbiased for the
        U-statistic, O(M N), noisy.
      * ``"rff"``: random Fourier features (Gaussian only): ||mean phi(x) - mean phi(y)||^2 with
        ``num_features`` frequencies drawn from ``key``; estimates ``full``; O(M N D).

    Args:
      x: (M, N) generated-side samples; y: (M', N) style-side samples; M' may differ from M.
      key: a ``jax.random`` key, required by ``linear`` and ``rff``.
      block_size: rows per tile of the pairwise and rff paths.

    Returns:
      A scalar. ``ValueError`` for mismatched N, an unknown kernel, estimator or parameter, a missing key, or
      rff with another kernel than the Gaussian.
    """
    _check_samples(x, y)
    _check_mmd_args(kernel, estimator, key, kernel_params)
    params = dict(kernel_params)
    if estimator == "linear":
        return _mmd2_linear_time(x, y, kernel, key, params)
    if estimator == "rff":
        gamma = params.get("gamma")
        if gamma is None:
            gamma = pooled_gamma(x, y)
        return _mmd2_rff(x, y, key, gamma, params.get("num_features", 1024), block_size)
    unbiased = estimator == "unbiased"
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    if kernel == "linear":
        mu_x, ss_x = _moments(x)
        mu_y, ss_y = _moments(y)
        out = jnp.sum(jnp.square(mu_x - mu_y))
        if unbiased:
            out = out + _linear_self(ss_x, x.shape[0]) + _linear_self(ss_y, y.shape[0])
        return out
    if kernel == "poly" and _is_two(params.get("d", 2)):
        c = params.get("c", 1.0)
        gx, gy = gram(x), gram(y)
        mu_x, mu_y = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
        out = jnp.sum(jnp.square(gx - gy)) + 2.0 * c * jnp.sum(jnp.square(mu_x - mu_y))
        if unbiased:
            out = out + _poly2_self(x, gx, mu_x, c) + _poly2_self(y, gy, mu_y, c)
        return out
    if kernel == "gaussian" and params.get("gamma") is None:
        params["gamma"] = pooled_gamma(x, y)
    if kernel == "poly":
        params.setdefault("c", 1.0)
    return mmd2_pairwise(x, y, kernel=kernel, unbiased=unbiased, block_size=block_size, **params)


# ----------------------------------------------------------------------------------------------------------
# Gram and BN statistics, content, total variation


def gram_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    """Gatys' style loss 1/(4 N^2) ||x^T x / M - y^T y / M'||_F^2 (each Gram normalised by its own count).

    For M == M' this is 1/(4 N^2 M^2) ||G_x - G_y||^2 with unnormalised Grams, and for any M, M' it equals
    ``mmd2(x, y, kernel="poly", c=0, d=2, estimator="full") / (4 N^2)`` (Li et al. 2017, theorem 1).
    x: (M, N), y: (M', N) -> scalar.
    """
    _check_samples(x, y)
    return _gram_term(gram(x), gram(y))


def _safe_sqrt(v: jax.Array) -> jax.Array:
    # sqrt with derivative 0 at v == 0 instead of inf (the double where keeps the untaken branch's gradient
    # finite too). See bn_stats for why 0 is the right value there.
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def bn_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and population standard deviation (1/M, as the official code): (M, N) -> (N,), (N,).

    The deviation is sqrt(mean_i (x_i - mu)^2) exactly, with no epsilon, through a guarded square root whose
    derivative at 0 is 0. Why that is right: sd_c = ||x_c - mu_c|| / sqrt(M) is a scaled Euclidean norm of the
    centred channel, so its gradient (x_c - mu_c) / (M sd_c) has norm 1/sqrt(M) wherever sd_c > 0 and never
    blows up; only at sd_c == 0 (a constant channel, e.g. a dead ReLU) does the chain rule form 0 * inf =
    NaN (the official code's BN NaN). There the norm has no gradient and 0 is a valid subgradient, which is
    what the guard returns. An epsilon (sqrt(var + eps)) would bias every value instead.
    """
    _check_samples(x)
    mu = jnp.mean(x, axis=0)
    var = jnp.mean(jnp.square(x - mu), axis=0)
    return mu, _safe_sqrt(var)


def _bn_from_stats(mu_x: jax.Array, sd_x: jax.Array, mu_y: jax.Array, sd_y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(mu_x - mu_y) + jnp.square(sd_x - sd_y))


def bn_loss(x: jax.Array, y: jax.Array) -> jax.Array:
    """BN-statistics loss 1/N sum_c [(mu_x,c - mu_y,c)^2 + (sd_x,c - sd_y,c)^2]: (M, N), (M', N) -> scalar.

    Statistics from :func:`bn_stats`; the gradient is finite for constant channels.
    """
    _check_samples(x, y)
    return _bn_from_stats(*bn_stats(x), *bn_stats(y))


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


# ----------------------------------------------------------------------------------------------------------
# Style targets and losses by method


def _method_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"unknown style method {method!r}; known methods: {', '.join(METHODS)}")
    _check_param_names(params, _METHOD_PARAMS[method], f"style method {method!r}")
    out = dict(_METHOD_DEFAULTS.get(method, {}))
    out.update(params)
    if "estimator" in out:
        est = out["estimator"]
        if est not in ESTIMATORS:
            raise ValueError(f"unknown estimator {est!r}; known estimators: {', '.join(ESTIMATORS)}")
        if est == "rff" and method != "gaussian":
            raise ValueError(f"the rff estimator needs the gaussian kernel, got style method {method!r}")
    return out


class SampleSums(NamedTuple):
    """One layer's generated-side statistics as sums over its M positions (see :func:`sample_sums`).

    What the additive methods need of x (M, N) is a sum over its rows, so the sums of disjoint parts of an
    image (horizontal strips, :mod:`nst_jax.strips`) add up to those of the whole; :func:`style_loss` accepts
    this in place of x. ``count`` is M (a Python int).
    """

    sums: Mapping[str, jax.Array]
    count: int


def streamable(method: str, **params: Any) -> bool:
    """Whether ``method`` with ``params`` needs only :class:`SampleSums` of x: gram, linear, bn, and poly with
    d = 2 and the full or unbiased estimator (closed forms). The pairwise and random-feature estimators need
    all of x's samples at once."""
    p = _method_params(method, params)
    if method in ("gram", "linear", "bn"):
        return True
    return method == "poly" and p["estimator"] in ("full", "unbiased") and _is_two(p["d"])


def sample_sums(
    terms: Sequence[StyleTerm], x: jax.Array, targets: Sequence[Mapping[str, jax.Array]], weights: jax.Array
) -> dict[str, jax.Array]:
    """The sums over the rows of x that every (streamable) term's :func:`style_loss` needs.

    Args:
      terms: the style terms of a layer, each :func:`streamable`.
      x: (M, N) samples (one strip of a layer); targets: that layer's :func:`style_target` per term.
      weights: (M,) 1 for rows inside the image, 0 for padding rows (whose x is 0).

    Returns:
      A subset of ``xx`` (N, N) = x^T x; ``x`` (N,) = sum x_i; ``q``, ``q2`` = sum q_i, sum q_i^2 with
      q_i = ||x_i||^2 (poly, unbiased); ``bn`` (N,), ``bn2`` (N,) = sum w_i (x_i - s), sum w_i (x_i - s)^2
      with s the bn target's mean: a shift that keeps the one-pass variance accurate in float32 (the
      generated and style means are close), held constant. Add them over strips for :class:`SampleSums`.
    """
    _check_samples(x)
    out: dict[str, jax.Array] = {}
    for term, target in zip(terms, targets, strict=True):
        if not streamable(term.method, **term.params):
            raise ValueError(f"style method {term.method!r} with {dict(term.params)} needs all samples at once")
        if term.method in ("gram", "poly"):
            out["xx"] = x.T @ x
        if term.method in ("linear", "poly"):
            out["x"] = jnp.sum(x, axis=0)
        if term.method == "poly" and _method_params("poly", term.params)["estimator"] == "unbiased":
            q = jnp.sum(jnp.square(x), axis=1)
            out["q"], out["q2"] = jnp.sum(q), jnp.sum(jnp.square(q))
        if term.method == "bn":
            d = (x - target["mean"]) * weights[:, None]
            out["bn"], out["bn2"] = jnp.sum(d, axis=0), jnp.sum(jnp.square(d), axis=0)
    return out


def _style_loss_from_sums(method: str, x: SampleSums, target: Mapping[str, jax.Array], p: Mapping[str, Any]
                          ) -> jax.Array:
    m, sums = x.count, x.sums
    if method == "bn":
        _need(target, ("mean", "sd"), method)
        d = sums["bn"] / m
        return _bn_from_stats(target["mean"] + d, _safe_sqrt(sums["bn2"] / m - jnp.square(d)),
                              target["mean"], target["sd"])
    if method == "linear":
        _need(target, ("mean",), method)
        return jnp.sum(jnp.square(sums["x"] / m - target["mean"]))
    if method == "gram":
        _need(target, ("gram",), method)
        return _gram_term(sums["xx"] / m, target["gram"])
    unbiased = p["estimator"] == "unbiased"
    _need(target, ("gram", "mean") + (("self",) if unbiased else ()), method)
    gx, mu_x = sums["xx"] / m, sums["x"] / m
    self_x = _poly2_self_from(gx, mu_x, sums["q2"] / m, sums["q"] / m, p["c"], m) if unbiased else None
    return _poly2_closed(gx, mu_x, target, p["c"], self_x)


def _gram_term(gx: jax.Array, gy: jax.Array) -> jax.Array:
    n = gx.shape[0]
    return jnp.sum(jnp.square(gx - gy)) / (4.0 * n * n)


def _poly2_closed(gx: jax.Array, mu_x: jax.Array, target: Mapping[str, jax.Array], c: float,
                  self_x: jax.Array | None) -> jax.Array:
    """MMD^2 under (a.b + c)^2 from Gram matrices and means; with ``self_x``, the unbiased estimator."""
    out = jnp.sum(jnp.square(gx - target["gram"])) + 2.0 * c * jnp.sum(jnp.square(mu_x - target["mean"]))
    if self_x is not None:
        out = out + self_x + target["self"]
    return out


def style_target(method: str, y: jax.Array, **params: Any) -> dict[str, jax.Array]:
    """Style-side statistics of one layer, computed once per run: y (M', N) -> a dict of arrays (a pytree).

    What is kept, per method and parameters (see :func:`style_loss` for the parameters):
      * gram: ``gram`` = y^T y / M'.
      * linear: ``mean``.
      * poly, d = 2, full or unbiased: ``gram``, ``mean`` (closed form), plus for unbiased ``self``, the
        style side's diagonal correction.
      * poly otherwise, gaussian: ``samples`` = y. With full or unbiased and a fixed kernel (poly, or gaussian
        with an explicit gamma) also ``kyy``, the style side's mean kernel value, which then costs nothing per
        step. Gaussian with the paper's rule (gamma None): ``mean`` and ``ss`` (centred sum of squares) for
        the pooled bandwidth; gamma then depends on x, so k(y, y) is recomputed every step for full and
        unbiased: an extra O(M'^2 N) per step, about half again the cost of the x-x and x-y terms together
        when M == M'. The linear and rff estimators redraw pairs or frequencies each step and keep only the
        samples.
      * bn: ``mean``, ``sd`` from :func:`bn_stats`.
    """
    _check_samples(y)
    p = _method_params(method, params)
    if method == "gram":
        return {"gram": gram(y)}
    if method == "linear":
        return {"mean": jnp.mean(y, axis=0)}
    if method == "bn":
        mu, sd = bn_stats(y)
        return {"mean": mu, "sd": sd}
    est = p["estimator"]
    if method == "poly" and est in ("full", "unbiased") and _is_two(p["d"]):
        g, mu = gram(y), jnp.mean(y, axis=0)
        out = {"gram": g, "mean": mu}
        if est == "unbiased":
            out["self"] = _poly2_self(y, g, mu, p["c"])
        return out
    out = {"samples": y}
    if est in ("full", "unbiased"):
        unbiased = est == "unbiased"
        if method == "poly":
            out["kyy"] = _self_mean(kernels.poly, y, unbiased, p["block_size"], {"c": p["c"], "d": p["d"]})
        elif p["gamma"] is not None:
            out["kyy"] = _self_mean(kernels.gaussian, y, unbiased, p["block_size"], {"gamma": p["gamma"]})
    if method == "gaussian" and p["gamma"] is None and est != "linear":
        out["mean"], out["ss"] = _moments(y)
    return out


def _need(target: Mapping[str, Any], names: Sequence[str], method: str) -> None:
    missing = [name for name in names if name not in target]
    if missing:
        raise ValueError(
            f"style target for {method!r} lacks {', '.join(missing)}: build it with style_target and the "
            "same parameters"
        )


def style_loss(
    method: str,
    x: jax.Array | SampleSums,
    target: Mapping[str, jax.Array],
    *,
    key: jax.Array | None = None,
    **params: Any,
) -> jax.Array:
    """One layer's style loss of the generated samples x (M, N) against a :func:`style_target`.

    x may also be the :class:`SampleSums` of the samples, for a :func:`streamable` method.

    Equal to the direct loss with the style samples y the target was built from:
      * ``"gram"``: :func:`gram_loss` (x, y).
      * ``"linear"``: ``mmd2(x, y, kernel="linear")`` = ||mu_x - mu_y||^2.
      * ``"poly"``: ``mmd2(x, y, kernel="poly", c=c, d=d, estimator=estimator)``; params c (1.0), d (2),
        estimator ("full"; full and unbiased use the closed form when d == 2), block_size (512).
      * ``"gaussian"``: ``mmd2(x, y, kernel="gaussian", ...)``; params gamma (None: the paper's rule),
        estimator ("linear", as the paper; or "full", "unbiased", "rff"), block_size (512), num_features
        (1024, rff).
      * ``"bn"``: :func:`bn_loss` (x, y).

    ``params`` must be those the target was built with; ``key`` is needed by the linear and rff estimators.
    Returns a scalar; :func:`paper_scale` maps it to the official code's energy.
    """
    p = _method_params(method, params)
    if isinstance(x, SampleSums):
        if not streamable(method, **params):
            raise ValueError(f"style method {method!r} with {dict(params)} needs the samples, not their sums")
        return _style_loss_from_sums(method, x, target, p)
    _check_samples(x)
    if method == "gram":
        _need(target, ("gram",), method)
        return _gram_term(gram(x), target["gram"])
    if method == "linear":
        _need(target, ("mean",), method)
        return jnp.sum(jnp.square(jnp.mean(x, axis=0) - target["mean"]))
    if method == "bn":
        _need(target, ("mean", "sd"), method)
        return _bn_from_stats(*bn_stats(x), target["mean"], target["sd"])
    est = p["estimator"]
    if est in ("linear", "rff") and key is None:
        raise ValueError(f"the {est!r} estimator draws random numbers and needs a key")
    unbiased = est == "unbiased"
    if method == "poly" and est in ("full", "unbiased") and _is_two(p["d"]):
        _need(target, ("gram", "mean") + (("self",) if unbiased else ()), method)
        gx, mu_x = gram(x), jnp.mean(x, axis=0)
        return _poly2_closed(gx, mu_x, target, p["c"], _poly2_self(x, gx, mu_x, p["c"]) if unbiased else None)
    _need(target, ("samples",), method)
    y = target["samples"]
    _check_samples(x, y)
    if method == "poly":
        kparams: dict[str, Any] = {"c": p["c"], "d": p["d"]}
    else:
        kparams = {"gamma": p["gamma"]}
    if est == "linear":
        return _mmd2_linear_time(x, y, method, key, kparams)
    if method == "gaussian" and p["gamma"] is None:
        _need(target, ("mean", "ss"), method)
        mu_x, ss_x = _moments(x)
        kparams["gamma"] = _pooled_gamma_from_moments(
            mu_x, ss_x, x.shape[0], target["mean"], target["ss"], y.shape[0]
        )
    if est == "rff":
        return _mmd2_rff(x, y, key, kparams["gamma"], p["num_features"], p["block_size"])
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    k = kernels.get(method)
    if "kyy" in target and (method == "poly" or p["gamma"] is not None):
        kyy = target["kyy"]
    else:
        kyy = _self_mean(k, y, unbiased, p["block_size"], kparams)
    kxy = kernels.pairwise_sum(k, x, y, p["block_size"], **kparams) / float(x.shape[0] * y.shape[0])
    return _self_mean(k, x, unbiased, p["block_size"], kparams) + kyy - 2.0 * kxy


def paper_scale(method: str, m: int, n: int, **params: Any) -> float:
    """The official code's per-layer factor: energy = s * paper_scale * style_loss (s: the style weight).

    Derivation. The official code (lyttonhao/Neural-Style-MMD) never forms its energies; each layer's custom
    op back-propagates grad_scale * d, and d is half the gradient of the quantity below (e.g. the Gaussian
    op's dx0 = gamma (-k(x0,x1)(x0 - x1) + k(x0,y1)(x0 - y1)) = (1/2) d h / d x0). With the op's grad_scale
    (``w_style`` * s / (N M), or / (N^2 M) for poly, or * M for BN, where M = H*W and N = channels) the energy
    whose gradient it applies is (PAPER_SPEC "Style energies per layer"):
      * linear: s * 2e3 / (N M) * (1/2) ||sum F - sum S||^2 = s * 1e3 * (M/N) ||mu_F - mu_S||^2,
        so scale = 1e3 M / N for mmd2(linear, full).
      * poly (d = 2): s * 0.1 / (N^2 M) * 1/4 * (||F^T F - S^T S||^2 + 2c ||sum F - sum S||^2); the bracket is
        M^2 * mmd2(poly c, d=2, full), so scale = 0.1 M / (4 N^2). Applied as is for other d (not in the
        official code).
      * gram: the poly energy with c = 0, and gram_loss = mmd2 / (4 N^2), so scale = 0.1 M.
      * gaussian: s * 3e14 / (N M) * (1/2) h with h = K * mmd2(linear estimator), K = floor(M/2) pairs, so
        scale = 3e14 K / (2 N M) (= 3e14 / (4N) for even M). Applied as is to the other estimators, which
        estimate the same MMD^2.
      * bn: s * 1e3 * (M N / N) * (1/2) * (1/N) sum_c [...] = s * 1e3 * M / 2 * bn_loss, so scale = 500 M.
    Caveat: the official linear and poly ops do not back-propagate exactly these energies' gradients. The linear
    op's d gives row i the value sum_c (x_ic - y_ic) in every channel (positions of the two images paired), the
    gradient of ||F 1 - S 1||^2 / 2 rather than of ||sum F - sum S||^2 / 2; the poly op's d is
    F F^T (F - S) + c (F - S) rather than F (F^T F - S^T S) + c 1 1^T (F - S). The factors above are for the
    energies the ops were meant to apply (PAPER_SPEC), which are what this module computes.
    The official code forces the style image to the content's size (M' = M), and its factors were tuned for
    Caffe VGG features on the 0-255 scale.

    Args:
      method: one of :data:`METHODS`.
      m: M = H*W of the generated image at this layer; n: N, its channels.
      **params: the method's parameters (accepted for symmetry with :func:`style_loss`; the factors do not
        depend on them).
    """
    _method_params(method, params)
    if m < 1 or n < 1:
        raise ValueError(f"m and n must be positive, got m={m}, n={n}")
    if method == "linear":
        return 1e3 * m / n
    if method == "poly":
        return 0.1 * m / (4.0 * n * n)
    if method == "gram":
        return 0.1 * m
    if method == "gaussian":
        return 3e14 * (m // 2) / (2.0 * n * m)
    return 1e3 * m / 2.0


# ----------------------------------------------------------------------------------------------------------
# Fusion over methods and layers


class StyleTerm(NamedTuple):
    """One method of a fused style loss: ``method`` in :data:`METHODS`, its ``weight``, its ``params``."""

    method: str
    weight: float = 1.0
    params: Mapping[str, Any] = MappingProxyType({})


def _term_names(terms: Sequence[StyleTerm]) -> list[str]:
    methods = [t.method for t in terms]
    return [t.method if methods.count(t.method) == 1 else f"{t.method}_{i}" for i, t in enumerate(terms)]


def fused_style_targets(
    style_features: Mapping[str, jax.Array], terms: Sequence[StyleTerm]
) -> dict[str, list[dict[str, jax.Array]]]:
    """Targets for every layer and term: {layer: (M', N) samples} -> {layer: [style_target per term]}."""
    if not terms:
        raise ValueError("no style term given")
    return {
        layer: [style_target(t.method, y, **t.params) for t in terms] for layer, y in style_features.items()
    }


def fused_style_loss(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, Sequence[Mapping[str, jax.Array]]],
    terms: Sequence[StyleTerm],
    layer_weights: Mapping[str, float],
    *,
    key: jax.Array | None = None,
    scales: Mapping[tuple[int, str], float | jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Style loss fused over methods and layers.

    total = sum_layers sum_terms layer_weights[layer] * terms[i].weight * scales[(i, layer)] *
    style_loss(terms[i].method, features[layer], targets[layer][i], **terms[i].params).

    Each term's weight multiplies that term only: the paper's intended fusion rule. (The official code
    multiplies only the first method's factor by the product of all fusion weights, a defect not reproduced.)

    Args:
      features: {layer: (M, N)} generated-image samples.
      targets: {layer: [target per term]} from :func:`fused_style_targets` with the same ``terms``.
      terms: the methods, weights and parameters.
      layer_weights: {layer: weight} for every layer of ``features``.
      key: split per layer and per term (``fold_in`` of the layer's position in ``features``, then of the
        term's index), so each layer and term draws independent pairs or frequencies; needed if any term
        uses the linear or rff estimator.
      scales: optional {(term index, layer): multiplier}, e.g. :func:`paper_scale` or an automatic balance;
        absent entries are 1.

    Returns:
      (total, per_term) where per_term[name] is that term's weighted contribution summed over layers (they
      add up to total); name is the method, or ``method_i`` when a method appears more than once.
    """
    if not terms:
        raise ValueError("no style term given")
    names = _term_names(terms)
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
        for ti, term in enumerate(terms):
            term_key = None if layer_key is None else jax.random.fold_in(layer_key, ti)
            value = style_loss(term.method, x, targets[layer][ti], key=term_key, **term.params)
            factor = layer_weights[layer] * term.weight * scales.get((ti, layer), 1.0)
            per_term[names[ti]] = per_term[names[ti]] + factor * value
    total = sum(per_term.values(), jnp.zeros(()))
    return total, per_term


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
    w = _mixture_weights(ys, weights)
    s = min(y.shape[0] / wk for y, wk in zip(ys, w, strict=True) if wk > 0)
    parts = []
    for y, wk in zip(ys, w, strict=True):
        n = min(y.shape[0], int(round(wk * s)))
        if n > 0:
            parts.append(y[(np.arange(n) * y.shape[0]) // n])
    return jnp.concatenate(parts, axis=0)


def _mixture_weights(ys: Sequence[jax.Array], weights: Sequence[float]) -> list[float]:
    if len(ys) != len(weights) or not ys:
        raise ValueError(f"{len(ys)} style(s) but {len(weights)} blend weight(s)")
    for y in ys:
        _check_samples(y, ys[0])
    w = [float(v) for v in weights]
    if any(not np.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"blend weights must be non-negative, finite and not all zero, got {weights}")
    return [v / sum(w) for v in w]


def mixture_style_target(
    method: str, ys: Sequence[jax.Array], weights: Sequence[float], **params: Any
) -> dict[str, jax.Array]:
    """:func:`style_target` of the mixture sum_k w_k P_k of several styles' feature distributions.

    The paper's view of a style is the distribution of its feature samples, so a blend of styles is a mixture
    of distributions. Where a target is made of moments the mixture's are exact: the second moment (gram,
    poly with d = 2 and the full estimator) and the mean (linear, poly) are the w-weighted sums, and for bn the
    mixture's variance is sum_k w_k (sd_k^2 + mu_k^2) - mu^2. Otherwise (gaussian, other poly estimators) the
    target is built from :func:`mixture_samples`.

    (The other way to blend, a weighted sum of per-style losses, is not a distribution distance to any single
    target; it pulls toward each style separately.)
    """
    w = _mixture_weights(ys, weights)
    # Components of weight 0 are not in the mixture; dropping them also spares bn's variance formula the
    # cancellation (sd^2 + mu^2) - mu^2 when a single style remains.
    ys, w = [y for y, wk in zip(ys, w, strict=True) if wk > 0], [wk for wk in w if wk > 0]
    if len(ys) == 1:
        return style_target(method, ys[0], **params)
    p = _method_params(method, params)
    closed_poly = method == "poly" and p["estimator"] == "full" and _is_two(p["d"])
    if method in ("gram", "linear", "bn") or closed_poly:
        singles = [style_target(method, y, **params) for y in ys]
        out = {}
        for name in ("gram", "mean"):
            if name in singles[0]:
                out[name] = sum(wk * t[name] for wk, t in zip(w, singles, strict=True))
        if method == "bn":
            second = sum(wk * (t["sd"] ** 2 + t["mean"] ** 2) for wk, t in zip(w, singles, strict=True))
            out["sd"] = _safe_sqrt(jnp.maximum(second - out["mean"] ** 2, 0.0))
        return out
    return style_target(method, mixture_samples(ys, w), **params)
