"""Maximum mean discrepancy (MMD) between two sets of feature samples: kernels' estimators and closed forms.

Gatys' Gram loss is 1/(4 N^2) times the squared MMD of the generated image's samples ``x`` (M, N) and the style
image's samples ``y`` (M', N) under the kernel k(a, b) = (a . b)^2 (Li et al. 2017, theorem 1). This module has
MMD^2 under the linear, polynomial and Gaussian kernels (:mod:`nst_jax.kernels`) with four estimators, the
paper's bandwidth rule for the Gaussian, and the closed forms the style methods build on.

Reference: Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017 (arXiv 1701.01036);
Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (the estimators); Rahimi & Recht, "Random Features for
Large-Scale Kernel Machines", NIPS 2007 (random Fourier features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import kernels
from nst_jax.losses import draws
from nst_jax.losses.stats import check_samples, check_weights, gram, moments, probabilities, weight_totals

KERNELS: tuple[str, ...] = tuple(kernels.KERNELS)
"""Kernel names accepted by :func:`mmd2`: ``"linear"``, ``"poly"``, ``"gaussian"``."""

ESTIMATORS: tuple[str, ...] = ("full", "unbiased", "linear", "rff")
"""MMD^2 estimators: V-statistic, U-statistic, the paper's paired linear-time one, random Fourier features."""

_KERNEL_PARAMS = {"linear": (), "poly": ("c", "d"), "gaussian": ("gamma", "num_features")}


def safe_inverse(mean_sq: jax.Array) -> jax.Array:
    # All samples equal: every distance is 0 and any gamma gives k = 1; pick 1 rather than 1/0.
    pos = mean_sq > 0
    return jnp.where(pos, 1.0 / jnp.where(pos, mean_sq, 1.0), 1.0)


def pooled_gamma_from_moments(side_x: Sequence[Any], side_y: Sequence[Any]) -> jax.Array:
    """The paper's bandwidth rule from each side's mean, centred sum of squares (:func:`nst_jax.losses.stats.moments`),
    W = sum w_i and sum w_i^2 (:func:`nst_jax.losses.stats.weight_totals`; unweighted samples have all weights
    1), under ``stop_gradient``.

    Pooled sample z of P = W_x + W_y (weighted) rows: sum_{i,j} w_i w_j ||z_i - z_j||^2 = 2 P ss, with the pooled
    centred sum of squares ss = ss_x + ss_y + (W_x W_y / P) ||mu_x - mu_y||^2 (the parallel-variance formula,
    stable in float32 where 2 mean||z||^2 - 2 ||mean z||^2 would cancel). The mean over the pairs i != j (a
    point paired with itself is no pair) divides it by P^2 - sum_i w_i^2, which is P (P - 1) for unit weights.
    """
    mu_x, ss_x, wx, sx = side_x
    mu_y, ss_y, wy, sy = side_y
    p = wx + wy
    ss = ss_x + ss_y + (wx * wy / p) * jnp.sum(jnp.square(mu_x - mu_y))
    return lax.stop_gradient(safe_inverse(2.0 * ss / ((p * p - (sx + sy)) / p)))


def pooled_gamma(x: jax.Array, y: jax.Array, wx: jax.Array | None = None, wy: jax.Array | None = None
                 ) -> jax.Array:
    """The paper's bandwidth rule over all pairs: gamma = 1 / mean ||z_i - z_j||^2, under ``stop_gradient``.

    The mean runs over all ordered pairs i != j of the pooled sample z = [x; y] (a point paired with itself is
    no pair, and the paired estimator never draws one); with sample weights wx (M,), wy (M',) (both or
    neither) each pair counts w_i w_j. Closed form through means and centred sums of squares
    (:func:`pooled_gamma_from_moments`): O((M + M') N), no pair is formed. Used by the ``full``, ``unbiased``
    and ``rff`` estimators; the ``linear`` estimator uses its own sampled pairs, as the official code does. If
    all samples are equal the mean is 0 and gamma is 1 (every kernel value is 1 whatever gamma is).

    Args:
      x: (M, N); y: (M', N).

    Returns:
      gamma, a scalar, for k(a, b) = exp(-gamma ||a - b||^2).
    """
    check_samples(x, y)
    return pooled_gamma_from_moments((*moments(x, wx), *weight_totals(x, wx)),
                                     (*moments(y, wy), *weight_totals(y, wy)))


# ----------------------------------------------------------------------------------------------------------
# MMD^2


def check_mmd_args(kernel: str, estimator: str, key: jax.Array | None, params: Mapping[str, Any]) -> None:
    kernels.get(kernel)  # ValueError for an unknown kernel
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; known estimators: {', '.join(ESTIMATORS)}")
    if estimator == "rff" and kernel != "gaussian":
        raise ValueError(f"the rff estimator needs the gaussian kernel, got kernel {kernel!r}")
    if estimator in ("linear", "rff") and key is None:
        raise ValueError(f"the {estimator!r} estimator draws random numbers and needs a key")
    check_param_names(params, _KERNEL_PARAMS[kernel], f"kernel {kernel!r}")
    if "num_features" in params and estimator != "rff":
        raise ValueError("num_features is a parameter of the rff estimator only")


def check_param_names(params: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {what}; it takes: {', '.join(allowed) or 'none'}"
        )


def is_two(d: Any) -> bool:
    return isinstance(d, (int, float)) and not isinstance(d, bool) and d == 2


def linear_time_pairs(
    x: jax.Array, y: jax.Array, key: jax.Array, wx: jax.Array | None = None, wy: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The paired samples of the linear-time estimator: (x0, x1, y0, y1), each (K, N).

    The rows of x and of y are shuffled by independent permutations drawn from ``key``, cut to the first 2K
    rows with K = min(M // 2, M' // 2) (the official code, where M == M', drops the last row when M is odd),
    and paired consecutively: x0 = x[0::2], x1 = x[1::2], likewise for y.

    With sample weights wx (M,), wy (M',) (both or neither), the 2K rows of each side are drawn independently
    in proportion to the weights, with replacement: E k(x0_k, x1_k) is then the weighted V-statistic
    sum_ij p_i p_j k(x_i, x_j), so the paired estimator's mean is the weighted full estimator.
    """
    check_samples(x, y)
    pairs = min(x.shape[0] // 2, y.shape[0] // 2)
    kx, ky = jax.random.split(key)
    if wx is not None:
        def drawn(z: jax.Array, w: jax.Array, k: jax.Array) -> jax.Array:
            check_weights(z, w)
            return jnp.take(z, jax.random.choice(k, z.shape[0], (2 * max(pairs, 1),), p=probabilities(w)), axis=0)

        xs, ys = drawn(x, wx, kx), drawn(y, wy, ky)
        return xs[0::2], xs[1::2], ys[0::2], ys[1::2]
    if pairs == 0:
        raise ValueError(f"the linear estimator needs at least 2 rows on each side, got M={x.shape[0]}, "
                         f"M'={y.shape[0]}")

    def shuffled(z: jax.Array, k: jax.Array) -> jax.Array:
        # A permutation's entries are in range and distinct: no out-of-range masking in the gather or in its
        # gradient's scatter-add (that masking was an eighth of the Gaussian's compiled step).
        rows = draws.permutation(k, z.shape[0])[: 2 * pairs]
        return jnp.asarray(z).at[rows].get(mode="promise_in_bounds", unique_indices=True)

    xs, ys = shuffled(x, kx), shuffled(y, ky)
    return xs[0::2], xs[1::2], ys[0::2], ys[1::2]


def mmd2_linear_time(
    x: jax.Array, y: jax.Array, kernel: str, key: jax.Array, params: Mapping[str, Any],
    gamma_scales: Sequence[float] | None = None, wx: jax.Array | None = None, wy: jax.Array | None = None,
) -> jax.Array:
    """The paired estimator over :func:`linear_time_pairs`; a Gaussian with ``gamma`` None takes the official
    bandwidth rule of this draw's pairs, times each of ``gamma_scales`` if given (several bandwidths).

    With sample weights ``wx``, ``wy`` (both or neither), the pairs drawn in proportion to the weights
    (:func:`linear_time_pairs`): an estimate of the weighted full MMD^2."""
    x0, x1, y0, y1 = linear_time_pairs(x, y, key, wx, wy)
    params = dict(params)
    if kernel == "gaussian" and params.get("gamma") is None:
        # The official rule: 1 / mean squared distance over the 4K sampled pairs of this draw.
        pairs = ((x0, x1), (y0, y1), (x0, y1), (y0, x1))
        sq = jnp.concatenate([jnp.sum(jnp.square(a - b), axis=1) for a, b in pairs])
        params["gamma"] = lax.stop_gradient(safe_inverse(jnp.mean(sq)))
        if gamma_scales is not None:
            params["gamma"] = params["gamma"] * jnp.asarray(gamma_scales, sq.dtype)
    k = kernels.get(kernel)
    h = (
        kernels.rowwise(k, x0, x1, **params)
        + kernels.rowwise(k, y0, y1, **params)
        - kernels.rowwise(k, x0, y1, **params)
        - kernels.rowwise(k, y0, x1, **params)
    )
    return jnp.mean(h)


def rff_mean(z: jax.Array, w: jax.Array, block_size: int, weights: jax.Array | None = None) -> jax.Array:
    """Mean random Fourier feature of the rows of z: (M, N), w (N, D) -> (2D,), tiled over rows
    (:func:`nst_jax.kernels.tiled_sum`); with ``weights`` (M,), the weighted mean sum_i weights_i phi(z_i) /
    sum_i weights_i."""
    m = z.shape[0]

    def block_sum(zb: jax.Array, rows: jax.Array, wb: jax.Array | None) -> jax.Array:
        proj = zb @ w
        if wb is None:
            keep = (rows < m)[:, None]
            return jnp.concatenate([jnp.sum(jnp.where(keep, jnp.cos(proj), 0.0), 0),
                                    jnp.sum(jnp.where(keep, jnp.sin(proj), 0.0), 0)])
        return jnp.concatenate([wb @ jnp.cos(proj), wb @ jnp.sin(proj)])

    sums = kernels.tiled_sum(block_sum, z, block_size, weights)
    if weights is None:
        return sums / (float(m) * w.shape[1] ** 0.5)
    return sums / w.shape[1] ** 0.5 / jnp.sum(weights)


def mmd2_rff(
    x: jax.Array, y: jax.Array, key: jax.Array, gamma: jax.Array, num_features: int, block_size: int,
    wx: jax.Array | None = None, wy: jax.Array | None = None,
) -> jax.Array:
    # phi(a) = [cos(W a), sin(W a)] / sqrt(D) with the D columns of W ~ N(0, 2 gamma I): phi(a) . phi(b) =
    # (1/D) sum_d cos(w_d . (a - b)), an unbiased estimate of exp(-gamma ||a - b||^2). ||mean phi(x) -
    # mean phi(y)||^2 then estimates the full (V-statistic) MMD^2 in O((M + M') N D).
    # Several bandwidths (gamma of shape (B,)): the kernel is the mean of B Gaussians, the characteristic
    # function of an equal mixture of N(0, 2 gamma_b I), so each frequency comes from a component drawn
    # uniformly: the features still estimate the kernel without bias.
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    if jnp.ndim(jnp.asarray(gamma)) == 1:
        gammas = jnp.asarray(gamma)
        kw, kc = jax.random.split(key)
        component = jax.random.randint(kc, (num_features,), 0, gammas.shape[0])
        scale = jnp.sqrt(2.0 * gammas[component]).astype(x.dtype)
        w = jax.random.normal(kw, (x.shape[1], num_features), x.dtype) * scale[None, :]
    else:
        w = jax.random.normal(key, (x.shape[1], num_features), x.dtype) * jnp.sqrt(2.0 * gamma).astype(x.dtype)
    # With sample weights wx, wy (both or neither): the weighted mean features, estimating the weighted full MMD^2.
    diff = rff_mean(x, w, block_size, wx) - rff_mean(y, w, block_size, wy)
    return jnp.sum(jnp.square(diff))


def pairwise_mean(k: kernels.Kernel, x: jax.Array, y: jax.Array, block_size: int, params: Mapping[str, Any],
                  exclude_diagonal: bool = False, wx: jax.Array | None = None, wy: jax.Array | None = None
                  ) -> jax.Array:
    """mean_ij k(x_i, y_j), tiled (:func:`nst_jax.kernels.pairwise_sum`); ``exclude_diagonal`` (x is y): the
    U-statistic's mean over i != j. With sample weights wx (M,), wy (M',) (both or neither) each pair counts
    wx_i wy_j: sum_ij wx_i wy_j k / (Wx Wy), or over i != j, / (W^2 - sum_i w_i^2)."""
    total = kernels.pairwise_sum(k, x, y, block_size, exclude_diagonal, row_weights=wx, col_weights=wy, **params)
    if wx is None:
        m = x.shape[0]
        # Python floats: M^2 overflows int32 from M = 46341 on (relu1_1 of a 256 px image has M = 65536).
        return total / float(m * (m - 1) if exclude_diagonal else m * y.shape[0])
    if exclude_diagonal:
        return total / (jnp.square(jnp.sum(wx)) - jnp.sum(jnp.square(wx)))
    return total / (jnp.sum(wx) * jnp.sum(wy))


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
    check_samples(x, y)
    check_mmd_args(kernel, "unbiased" if unbiased else "full", None, kernel_params)
    if kernel == "gaussian" and kernel_params.get("gamma") is None:
        raise ValueError("mmd2_pairwise needs an explicit gamma for the gaussian kernel")
    return pairwise_mmd2(x, y, kernels.get(kernel), unbiased, block_size, kernel_params)


def pairwise_mmd2(x: jax.Array, y: jax.Array, k: kernels.Kernel, unbiased: bool, block_size: int,
                  params: Mapping[str, Any], kyy: jax.Array | None = None, wx: jax.Array | None = None,
                  wy: jax.Array | None = None) -> jax.Array:
    """:func:`mmd2_pairwise` for a kernel function ``k`` with its ``params``, taking the style side's mean
    kernel value ``kyy`` where it is already known (a style method's target, computed once per run; None:
    computed here); with sample weights wx (M,), wy (M',) (both or neither), the weighted V- or U-statistic
    (:func:`pairwise_mean`). x (M, N), y (M', N) -> scalar."""
    if unbiased and wx is None and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    if kyy is None:
        kyy = pairwise_mean(k, y, y, block_size, params, unbiased, wy, wy)
    kxy = pairwise_mean(k, x, y, block_size, params, False, wx, wy)
    return pairwise_mean(k, x, x, block_size, params, unbiased, wx, wx) + kyy - 2.0 * kxy


def poly2_self(x: jax.Array, g: jax.Array, mu: jax.Array, c: float, w: jax.Array | None = None) -> jax.Array:
    """The U-statistic's correction of one side's mean kernel value for k = (a.b + c)^2: U - V, with
    U = sum_{i != j} w_i w_j k_ij / (W^2 - sum w_i^2) and V = sum_ij w_i w_j k_ij / W^2 (all weights 1
    without ``w``: U - V = (V - D) / (M - 1), D = mean_i k(x_i, x_i)).

    x (M, N), g and mu its (weighted) Gram matrix and mean, w (M,) or None. With p = w / W and s = sum p_i^2:
    U - V = (s v - D) / (1 - s), v = ||g||^2 + 2c ||mu||^2, D = sum p_i^2 (q_i^2 + 2c q_i), q_i = ||x_i||^2
    (the c^2 terms cancel).
    """
    check_weights(x, w)
    q = jnp.sum(jnp.square(x), axis=1)
    p2 = jnp.square(probabilities(w) if w is not None else jnp.full(x.shape[:1], 1.0 / x.shape[0], x.dtype))
    return poly2_self_from(g, mu, p2 @ jnp.square(q), p2 @ q, jnp.sum(p2), c)


def poly2_self_from(g: jax.Array, mu: jax.Array, dq2: jax.Array, dq: jax.Array, s: jax.Array, c: float
                    ) -> jax.Array:
    """:func:`poly2_self` from g, mu, dq2 = sum p_i^2 q_i^2, dq = sum p_i^2 q_i and s = sum p_i^2."""
    v = jnp.sum(jnp.square(g)) + 2.0 * c * jnp.sum(jnp.square(mu))
    return (s * v - (dq2 + 2.0 * c * dq)) / (1.0 - s)


def linear_self(ss: jax.Array, m: int) -> jax.Array:
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
      * ``"gaussian"``: k(a, b) = exp(-gamma ||a - b||^2), ``gamma`` (a tuple of B bandwidths: the mean of B
        Gaussian kernels, the multi-kernel MMD; None or absent: the paper's rule,
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
    check_samples(x, y)
    check_mmd_args(kernel, estimator, key, kernel_params)
    params = dict(kernel_params)
    if estimator == "linear":
        return mmd2_linear_time(x, y, kernel, key, params)
    if estimator == "rff":
        gamma = params.get("gamma")
        if gamma is None:
            gamma = pooled_gamma(x, y)
        return mmd2_rff(x, y, key, gamma, params.get("num_features", 1024), block_size)
    unbiased = estimator == "unbiased"
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    if kernel == "linear":
        (mu_x, ss_x), (mu_y, ss_y) = moments(x), moments(y)
        out = jnp.sum(jnp.square(mu_x - mu_y))
        if unbiased:
            out = out + linear_self(ss_x, x.shape[0]) + linear_self(ss_y, y.shape[0])
        return out
    if kernel == "poly" and is_two(params.get("d", 2)):
        c = params.get("c", 1.0)
        gx, gy = gram(x), gram(y)
        mu_x, mu_y = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
        out = jnp.sum(jnp.square(gx - gy)) + 2.0 * c * jnp.sum(jnp.square(mu_x - mu_y))
        if unbiased:
            out = out + poly2_self(x, gx, mu_x, c) + poly2_self(y, gy, mu_y, c)
        return out
    if kernel == "gaussian" and params.get("gamma") is None:
        params["gamma"] = pooled_gamma(x, y)
    if kernel == "poly":
        params.setdefault("c", 1.0)
    return mmd2_pairwise(x, y, kernel=kernel, unbiased=unbiased, block_size=block_size, **params)
