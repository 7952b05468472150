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
from nst_jax.losses import draws, weighted
from nst_jax.losses.stats import check_samples, gram, moments

KERNELS: tuple[str, ...] = tuple(kernels.KERNELS)
"""Kernel names accepted by :func:`mmd2`: ``"linear"``, ``"poly"``, ``"gaussian"``."""

ESTIMATORS: tuple[str, ...] = ("full", "unbiased", "linear", "rff")
"""MMD^2 estimators: V-statistic, U-statistic, the paper's paired linear-time one, random Fourier features."""

_KERNEL_PARAMS = {"linear": (), "poly": ("c", "d"), "gaussian": ("gamma", "num_features")}


def safe_inverse(mean_sq: jax.Array) -> jax.Array:
    # All samples equal: every distance is 0 and any gamma gives k = 1; pick 1 rather than 1/0.
    pos = mean_sq > 0
    return jnp.where(pos, 1.0 / jnp.where(pos, mean_sq, 1.0), 1.0)


def pooled_gamma_from_moments(
    mu_x: jax.Array, ss_x: jax.Array, m: int, mu_y: jax.Array, ss_y: jax.Array, m2: int
) -> jax.Array:
    # Pooled sample z of P = M + M' rows: sum_{i,j} ||z_i - z_j||^2 = 2 P sum_i ||z_i - mean z||^2, and the
    # pooled centred sum of squares is ss_x + ss_y + (M M' / P) ||mu_x - mu_y||^2 (parallel-variance formula,
    # stable in float32 where 2 mean||z||^2 - 2 ||mean z||^2 would cancel). Mean over the P (P - 1) ordered
    # pairs with i != j: 2 ss / (P - 1).
    p = m + m2
    ss = ss_x + ss_y + (m * m2 / p) * jnp.sum(jnp.square(mu_x - mu_y))
    return lax.stop_gradient(safe_inverse(2.0 * ss / (p - 1)))


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
    check_samples(x, y)
    mu_x, ss_x = moments(x)
    mu_y, ss_y = moments(y)
    return pooled_gamma_from_moments(mu_x, ss_x, x.shape[0], mu_y, ss_y, y.shape[0])


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
    x: jax.Array, y: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The paired samples of the linear-time estimator: (x0, x1, y0, y1), each (K, N).

    The rows of x and of y are shuffled by independent permutations drawn from ``key``, cut to the first 2K
    rows with K = min(M // 2, M' // 2) (the official code, where M == M', drops the last row when M is odd),
    and paired consecutively: x0 = x[0::2], x1 = x[1::2], likewise for y.
    """
    check_samples(x, y)
    pairs = min(x.shape[0] // 2, y.shape[0] // 2)
    if pairs == 0:
        raise ValueError(f"the linear estimator needs at least 2 rows on each side, got M={x.shape[0]}, "
                         f"M'={y.shape[0]}")
    kx, ky = jax.random.split(key)

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

    With sample weights ``wx``, ``wy`` (both or neither), the same number of pairs drawn on each side in
    proportion to the weights (:func:`nst_jax.losses.weighted.sample_pairs`): an estimate of the weighted
    full MMD^2."""
    if wx is None:
        x0, x1, y0, y1 = linear_time_pairs(x, y, key)
    else:
        check_samples(x, y)
        pairs = max(1, min(x.shape[0] // 2, y.shape[0] // 2))
        kx, ky = jax.random.split(key)
        (x0, x1), (y0, y1) = weighted.sample_pairs(x, wx, kx, pairs), weighted.sample_pairs(y, wy, ky, pairs)
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
    """Mean random Fourier feature of the rows of z: (M, N), w (N, D) -> (2D,), tiled over rows; with
    ``weights`` (M,), the weighted mean sum_i weights_i phi(z_i) / sum_i weights_i."""
    m, n = z.shape
    d = w.shape[1]
    bs = min(block_size, m)
    nb = -(-m // bs)
    blocks = jnp.pad(z, ((0, nb * bs - m), (0, 0))).reshape(nb, bs, n)
    starts = jnp.arange(nb) * bs
    if weights is not None:
        return _weighted_rff_mean(blocks, jnp.pad(weights, (0, nb * bs - m)).reshape(nb, bs), w) / jnp.sum(weights)

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


def _weighted_rff_mean(blocks: jax.Array, weight_blocks: jax.Array, w: jax.Array) -> jax.Array:
    """sum_i weights_i phi(z_i) * sqrt(D) over row blocks (nb, bs, N) with their weights (nb, bs)."""

    @jax.checkpoint
    def block_sum(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        zb, wb = args
        proj = zb @ w
        return jnp.concatenate([wb @ jnp.cos(proj), wb @ jnp.sin(proj)])

    if blocks.shape[0] == 1:
        return block_sum((blocks[0], weight_blocks[0])) / w.shape[1] ** 0.5
    return jnp.sum(lax.map(block_sum, (blocks, weight_blocks)), axis=0) / w.shape[1] ** 0.5


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


def self_mean(
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
    check_samples(x, y)
    check_mmd_args(kernel, "unbiased" if unbiased else "full", None, kernel_params)
    if kernel == "gaussian" and kernel_params.get("gamma") is None:
        raise ValueError("mmd2_pairwise needs an explicit gamma for the gaussian kernel")
    return pairwise_mmd2(x, y, kernels.get(kernel), unbiased, block_size, kernel_params)


def pairwise_mmd2(x: jax.Array, y: jax.Array, k: kernels.Kernel, unbiased: bool, block_size: int,
                  params: Mapping[str, Any], kyy: jax.Array | None = None) -> jax.Array:
    """:func:`mmd2_pairwise` for a kernel function ``k`` with its ``params``, taking the style side's mean
    kernel value ``kyy`` where it is already known (a style method's target, computed once per run; None:
    computed here). x (M, N), y (M', N) -> scalar."""
    if unbiased and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("the unbiased estimator needs at least 2 rows on each side")
    if kyy is None:
        kyy = self_mean(k, y, unbiased, block_size, params)
    kxy = kernels.pairwise_sum(k, x, y, block_size, **params) / float(x.shape[0] * y.shape[0])
    return self_mean(k, x, unbiased, block_size, params) + kyy - 2.0 * kxy


def weighted_pairwise_mmd2(x: jax.Array, wx: jax.Array, y: jax.Array, wy: jax.Array, k: kernels.Kernel,
                           unbiased: bool, block_size: int, params: Mapping[str, Any],
                           kyy: jax.Array | None = None) -> jax.Array:
    """:func:`pairwise_mmd2` of weighted samples, x (M, N) with weights wx (M,) and y (M', N) with wy (M',): the
    weighted V- or U-statistic (:func:`nst_jax.losses.weighted.pairwise_mean`)."""
    if kyy is None:
        kyy = weighted.pairwise_mean(k, y, wy, y, wy, block_size, params, unbiased)
    kxx = weighted.pairwise_mean(k, x, wx, x, wx, block_size, params, unbiased)
    return kxx + kyy - 2.0 * weighted.pairwise_mean(k, x, wx, y, wy, block_size, params)


def poly2_self(x: jax.Array, g: jax.Array, mu: jax.Array, c: float) -> jax.Array:
    """(V - D) / (M - 1) for k = (a.b + c)^2 minus c^2: the U-statistic's correction of one side's mean.

    V = mean_ij k(x_i, x_j) = ||G||_F^2 + 2c ||mu||^2 (+ c^2), D = mean_i k(x_i, x_i) = mean (q_i^2 + 2c q_i)
    (+ c^2) with q_i = ||x_i||^2; mean_{i != j} k = (M V - D) / (M - 1) = V + (V - D) / (M - 1).
    """
    q = jnp.sum(jnp.square(x), axis=1)
    return poly2_self_from(g, mu, jnp.mean(jnp.square(q)), jnp.mean(q), c, x.shape[0])


def poly2_self_from(g: jax.Array, mu: jax.Array, q2: jax.Array, q: jax.Array, c: float, m: int) -> jax.Array:
    """:func:`poly2_self` from the Gram matrix, the mean, mean_i q_i^2 and mean_i q_i (q_i = ||x_i||^2)."""
    v = jnp.sum(jnp.square(g)) + 2.0 * c * jnp.sum(jnp.square(mu))
    return (v - (q2 + 2.0 * c * q)) / (m - 1)


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
        mu_x, ss_x = moments(x)
        mu_y, ss_y = moments(y)
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
