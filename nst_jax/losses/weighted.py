"""Statistics of weighted feature samples: one region of an image (spatial control) as a distribution.

Spatial control (Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling Perceptual Factors in Neural Style
Transfer", CVPR 2017) restricts the alignment to regions: a region of a layer's M samples is the weight vector
w (M,), w_i in [0, 1] the share of position i inside the region (soft at its borders, the mask resized to the
layer), and the region's distribution is the weighted empirical one, sum_i w_i delta(x_i) / sum_i w_i. Every
statistic here is the unweighted one of :mod:`nst_jax.losses.stats` and :mod:`nst_jax.losses.mmd` with 1/M
replaced by w_i / W (W = sum_i w_i); with all weights 1 they are those statistics (up to float rounding:
unmasked runs never come here). Weights need not sum to 1; a weight vector of zeros has no distribution (its
statistics are NaN), which the callers rule out (:mod:`nst_jax.masks` refuses empty regions).

x: (M, N) samples, w: (M,) non-negative weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import kernels
from nst_jax.losses.stats import check_samples, safe_sqrt
from nst_jax.losses.wasserstein import column_order


def check_weights(x: jax.Array, w: jax.Array) -> None:
    """ValueError unless w is a weight vector (M,) for the samples x (M, N)."""
    check_samples(x)
    if w.ndim != 1 or w.shape[0] != x.shape[0]:
        raise ValueError(f"weights must be (M,) = ({x.shape[0]},) for samples of shape {tuple(x.shape)}, got "
                         f"shape {tuple(w.shape)}")


def probabilities(w: jax.Array) -> jax.Array:
    """w / sum(w): the weights as the probabilities of the weighted empirical distribution."""
    return w / jnp.sum(w)


def mean(x: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted mean sum_i w_i x_i / W: (N,)."""
    check_weights(x, w)
    return probabilities(w) @ x


def gram(x: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted Gram matrix sum_i w_i x_i x_i^T / W = x^T diag(w) x / W: (N, N), Gatys' guided Gram matrix."""
    check_weights(x, w)
    return (x * probabilities(w)[:, None]).T @ x


def covariance(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted mean (N,) and population covariance sum_i w_i (x_i - mu)(x_i - mu)^T / W (N, N), two passes."""
    p = probabilities(w)
    mu = mean(x, w)
    xc = x - mu
    return mu, (xc * p[:, None]).T @ xc


def bn_stats(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted per-channel mean and population standard deviation, (N,) each (the guarded square root of
    :func:`nst_jax.losses.stats.safe_sqrt`, finite gradient for a constant channel)."""
    mu = mean(x, w)
    return mu, safe_sqrt(probabilities(w) @ jnp.square(x - mu))


def variance(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weighted mean (N,) and total variance sum_i w_i ||x_i - mu||^2 / W (a scalar)."""
    mu = mean(x, w)
    return mu, probabilities(w) @ jnp.sum(jnp.square(x - mu), axis=1)


def pooled_gamma(mu_x: jax.Array, var_x: jax.Array, mu_y: jax.Array, var_y: jax.Array) -> jax.Array:
    """The paper's bandwidth rule for two weighted distributions: gamma = 1 / E||a - b||^2 with a, b drawn
    independently from the equal mixture of the two, under ``stop_gradient``.

    E||a - b||^2 = 2 Var(mixture) = var_x + var_y + ||mu_x - mu_y||^2 / 2 (the mixture's total variance is
    the mean of the parts' plus the spread of their means). The unweighted rule pools the M and M' samples in
    proportion to their counts and leaves out a point paired with itself; for the equal counts of a style
    resized to the content's size the two agree to a factor (P - 1) / P.
    """
    spread = var_x + var_y + 0.5 * jnp.sum(jnp.square(mu_x - mu_y))
    # All samples equal: any gamma gives k = 1; pick 1 rather than 1/0 (as mmd.safe_inverse).
    pos = spread > 0
    return lax.stop_gradient(jnp.where(pos, 1.0 / jnp.where(pos, spread, 1.0), 1.0))


def pairwise_mean(k: kernels.Kernel, x: jax.Array, wx: jax.Array, y: jax.Array, wy: jax.Array, block_size: int,
                  params: Mapping[str, Any], exclude_diagonal: bool = False) -> jax.Array:
    """sum_ij wx_i wy_j k(x_i, y_j) / (Wx Wy), tiled (:func:`nst_jax.kernels.pairwise_sum`).

    ``exclude_diagonal`` (x is y, wx is wy): the U-statistic's mean over i != j, sum_{i != j} w_i w_j k /
    (W^2 - sum_i w_i^2)."""
    total = kernels.pairwise_sum(k, x, y, block_size, exclude_diagonal, row_weights=wx, col_weights=wy, **params)
    if exclude_diagonal:
        return total / (jnp.square(jnp.sum(wx)) - jnp.sum(jnp.square(wx)))
    return total / (jnp.sum(wx) * jnp.sum(wy))


def poly2_self(q: jax.Array, w: jax.Array, g: jax.Array, mu: jax.Array, c: float) -> jax.Array:
    """The weighted U-statistic's correction of one side's mean kernel value for k = (a.b + c)^2: (U - V), with
    U = sum_{i != j} w_i w_j k_ij / (W^2 - sum w_i^2) and V = sum_ij w_i w_j k_ij / W^2.

    q (M,) = ||x_i||^2, w (M,), g and mu the weighted Gram matrix and mean. With p = w / W and s = sum p_i^2:
    U - V = (s v - D) / (1 - s), v = ||g||^2 + 2c ||mu||^2, D = sum p_i^2 (q_i^2 + 2c q_i) (the c^2 terms
    cancel); with all weights 1 it is :func:`nst_jax.losses.mmd.poly2_self`."""
    p = probabilities(w)
    p2 = jnp.square(p)
    return poly2_self_from(g, mu, p2 @ jnp.square(q), p2 @ q, jnp.sum(p2), c)


def poly2_self_from(g: jax.Array, mu: jax.Array, dq2: jax.Array, dq: jax.Array, s: jax.Array, c: float
                    ) -> jax.Array:
    """:func:`poly2_self` from g, mu, dq2 = sum p_i^2 q_i^2, dq = sum p_i^2 q_i and s = sum p_i^2."""
    v = jnp.sum(jnp.square(g)) + 2.0 * c * jnp.sum(jnp.square(mu))
    return (s * v - (dq2 + 2.0 * c * dq)) / (1.0 - s)


def sample_pairs(x: jax.Array, w: jax.Array, key: jax.Array, pairs: int) -> tuple[jax.Array, jax.Array]:
    """``pairs`` pairs (x0, x1), each (K, N), of rows drawn independently in proportion to w (with
    replacement): the weighted form of the linear-time estimator's pairs. E k(x0_k, x1_k) is the weighted
    V-statistic sum_ij p_i p_j k(x_i, x_j), so the paired estimator's mean is the weighted full estimator."""
    idx = jax.random.choice(key, x.shape[0], (2 * pairs,), replace=True, p=probabilities(w))
    rows = jnp.take(x, idx, axis=0)
    return rows[0::2], rows[1::2]


def sorted_with_weights(z: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each column of z (M, K) sorted, and the weights w (M,) in each column's order: (M, K), (M, K)."""
    order = column_order(z)
    return jnp.take_along_axis(z, order, axis=0), w[order]


def quantiles(sorted_y: jax.Array, cum_wy: jax.Array, levels: jax.Array) -> jax.Array:
    """The weighted empirical quantile function of each column: for each level t (M, K) the first sorted value
    whose cumulative weight share reaches t. sorted_y, cum_wy (M', K) with cum_wy the cumulative weights over
    their total (ending at 1); levels (M, K) -> (M, K). Rows of weight 0 are never chosen."""
    def column(sy, cw, t):
        return sy[jnp.clip(jnp.searchsorted(cw, t, side="left"), 0, sy.shape[0] - 1)]

    return jax.vmap(column, in_axes=(1, 1, 1), out_axes=1)(sorted_y, cum_wy, levels)


def sliced_wasserstein(x: jax.Array, wx: jax.Array, y: jax.Array, wy: jax.Array, projections: jax.Array
                       ) -> jax.Array:
    """Weighted sliced Wasserstein: the mean over the K directions of sum_i p_i (sort(x p)_i - q(t_i))^2, with
    p_i the generated sample's weight share, t_i the midpoint of its cumulative share in sorted order and q
    the style's weighted quantile function along the direction (:func:`quantiles`)."""
    px, pw = sorted_with_weights(x @ projections, probabilities(wx))
    sy, sw = sorted_with_weights(y @ projections, probabilities(wy))
    cum_x = jnp.cumsum(pw, axis=0)
    levels = cum_x - 0.5 * pw
    qy = quantiles(sy, jnp.cumsum(sw, axis=0), levels)
    return jnp.mean(jnp.sum(pw * jnp.square(px - qy), axis=0))

