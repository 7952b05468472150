"""Optimal-transport distances between two sets of feature samples: sliced Wasserstein and the Wasserstein-2
distance between fitted Gaussians.

``x`` (M, N) is the generated image's side, ``y`` (M', N) the style image's; M and M' may differ.

References: Heitz, Vanhoey, Chambon, Belcour, "A Sliced Wasserstein Loss for Neural Texture Synthesis", CVPR
2021; Dowson and Landau, "The Frechet distance between multivariate normal distributions", J. Multivariate
Anal. 1982 (the Gaussian W2 closed form); Givens and Shortt, Michigan Math. J. 1984.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.losses.stats import check_samples, covariance


def random_directions(key: jax.Array, n: int, k: int) -> jax.Array:
    """k directions drawn uniformly on the unit sphere of R^n: an (n, k) matrix of unit columns."""
    p = jax.random.normal(key, (n, k), jnp.float32)
    return p / jnp.linalg.norm(p, axis=0, keepdims=True)


def stable_order(a: np.ndarray) -> np.ndarray:
    """NumPy: the stable ascending order along axis -2 of a float32 array (..., M, K) as int32 indices, ordered
    as XLA's sort orders floats (-0.0 ties with 0.0; NaNs last).

    Each value becomes a 64-bit key, its bits made order-preserving as an unsigned integer in the high half and
    its index in the low half: keys are unique, so NumPy's vectorised (SIMD, unstable) sort of the keys gives
    the stable order, several times faster than its stable argsort."""
    z = np.swapaxes(np.asarray(a, np.float32), -1, -2) + np.float32(0.0)  # -0.0 + 0.0 is +0.0
    z = np.where(np.isnan(z), np.float32(np.nan), z)  # one NaN, sorted after +inf
    bits = np.ascontiguousarray(z).view(np.uint32)
    ordered = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    keys = (ordered << np.uint64(32)) | np.arange(z.shape[-1], dtype=np.uint64)
    keys.sort(axis=-1)
    return np.ascontiguousarray(np.swapaxes((keys & np.uint64(0xFFFFFFFF)).astype(np.int32), -1, -2))


def _host_order(z: jax.Array) -> jax.Array:
    """:func:`column_order` by NumPy on the host (the CPU backend's branch); vmap adds leading axes."""
    return jax.pure_callback(stable_order, jax.ShapeDtypeStruct(z.shape, jnp.int32), z, vmap_method="expand_dims")


def column_order(z: jax.Array) -> jax.Array:
    """The stable ascending order of each column of z (M, K): int32 (M, K) indices into the column, no gradient.

    On a CPU it is NumPy's vectorised sort (:func:`stable_order`), called from the compiled program: XLA:CPU's
    own sort is several times slower (docs/performance.md, "swd's sort on a CPU"). On GPUs and TPUs, and
    wherever several devices run the program together
    (a mesh of more than one device in the tracing context), it is XLA's sort. Both are stable: the same
    order, ties included.
    """
    z = jax.lax.stop_gradient(z)

    def on_device(a: jax.Array) -> jax.Array:
        return jnp.argsort(a, axis=0, stable=True).astype(jnp.int32)

    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        # Several devices run this program at once (batch mode's jobs, --shard_image's rows): on a CPU their
        # callbacks would wait for the Python interpreter that is waiting for all of them (a deadlock).
        return on_device(z)
    return jax.lax.platform_dependent(z, cpu=_host_order, default=on_device)


def sort_columns(z: jax.Array) -> jax.Array:
    """Each column of z (M, K) in ascending order; its gradient goes back to where each value came from (what
    ``jnp.sort``'s does), computed with :func:`column_order`."""
    return jnp.take_along_axis(z, column_order(z), axis=0)


def quantiles(sorted_y: jax.Array, m: int) -> jax.Array:
    """The values of sorted samples (M', K) at the M quantile levels (i + 0.5) / M, i = 0 ... M - 1: (M, K).

    Sample j of M' sits at level (j + 0.5) / M'; between samples the value is interpolated linearly, and
    beyond the first and last level it is clamped. For M == M' the levels coincide and these are the samples.
    """
    mp = sorted_y.shape[0]
    if m == mp:
        return sorted_y
    t = np.clip((np.arange(m) + 0.5) * (mp / m) - 0.5, 0.0, mp - 1)  # positions in sample index units
    j0 = np.floor(t).astype(np.int32)
    j1 = np.minimum(j0 + 1, mp - 1)
    w = jnp.asarray(t - j0, sorted_y.dtype)[:, None]
    return sorted_y[j0] * (1.0 - w) + sorted_y[j1] * w


def sorted_with_weights(z: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each column of z (M, K) sorted, and the weights w (M,) in each column's order: (M, K), (M, K)."""
    order = column_order(z)
    return jnp.take_along_axis(z, order, axis=0), w[order]


def weighted_quantiles(sorted_y: jax.Array, cum_wy: jax.Array, levels: jax.Array) -> jax.Array:
    """The weighted empirical quantile function of each column: for each level t (M, K) the first sorted value
    whose cumulative weight share reaches t. sorted_y, cum_wy (M', K) with cum_wy the cumulative weights over
    their total (ending at 1); levels (M, K) -> (M, K).

    A step function, not :func:`quantiles`' interpolation: rows of weight 0 (outside a region, padding) are
    never chosen, which interpolating between neighbours could not promise."""
    def column(sy, cw, t):
        return sy[jnp.clip(jnp.searchsorted(cw, t, side="left"), 0, sy.shape[0] - 1)]

    return jax.vmap(column, in_axes=(1, 1, 1), out_axes=1)(sorted_y, cum_wy, levels)


def transport_1d(z: jax.Array, sorted_y: jax.Array, wz: jax.Array | None = None, cum_wy: jax.Array | None = None
                 ) -> jax.Array:
    """The squared 1-D Wasserstein-2 distance of each column of z (M, K) to the sorted style values sorted_y
    (M', K), averaged over the K columns: mean_i (sort(z)_i - q_i)^2 with q the style's values at z's levels
    (i + 0.5) / M (:func:`quantiles`).

    With sample weights wz (M,) and the style's cumulative weight shares cum_wy (M', K) in sorted order (both or
    neither): sum_i p_i (sort(z)_i - q(t_i))^2, p_i z's weight shares in sorted order, t_i the midpoints of
    their cumulative shares and q the style's weighted quantile function (:func:`weighted_quantiles`).
    """
    if wz is None:
        return jnp.mean(jnp.square(sort_columns(z) - quantiles(sorted_y, z.shape[0])))
    sz, shares = sorted_with_weights(z, wz / jnp.sum(wz))
    levels = jnp.cumsum(shares, axis=0) - 0.5 * shares
    return jnp.mean(jnp.sum(shares * jnp.square(sz - weighted_quantiles(sorted_y, cum_wy, levels)), axis=0))


def sorted_target(y: jax.Array, wy: jax.Array | None = None) -> dict[str, jax.Array]:
    """The style side of :func:`transport_1d` for y (M', K): ``sorted``, each column sorted, and with weights wy
    (M',) also ``cum``, the cumulative weight shares in each column's order (M', K)."""
    if wy is None:
        return {"sorted": sort_columns(y)}
    sorted_y, shares = sorted_with_weights(y, wy / jnp.sum(wy))
    return {"sorted": sorted_y, "cum": jnp.cumsum(shares, axis=0)}


def sliced_wasserstein(x: jax.Array, y: jax.Array, *, projections: jax.Array | None = None,
                       key: jax.Array | None = None, num_projections: int | None = None,
                       wx: jax.Array | None = None, wy: jax.Array | None = None) -> jax.Array:
    """Sliced Wasserstein distance (squared, averaged): the mean over K directions p of
    mean_i (sort(x p)_i - q_i)^2, with q the quantiles of y p at x's levels (:func:`transport_1d`).

    Each direction's term is the squared 1-D Wasserstein-2 distance of the two projected sample sets (sorting
    solves 1-D optimal transport); its gradient moves each generated sample toward the style value of its rank.
    O(K (M + M') N + K M log M).

    Args:
      x: (M, N); y: (M', N).
      projections: (N, K) unit columns; else K random directions from ``key`` (fresh every step of a run).
      key: for the random directions.
      num_projections: K of the random directions (default N, as Heitz et al.).
      wx, wy: sample weights (M,), (M',) (both or neither): the weighted distributions (one region).

    Returns:
      A scalar in squared feature units.
    """
    check_samples(x, y)
    if projections is None:
        if key is None:
            raise ValueError("sliced_wasserstein needs projections or a key to draw them")
        projections = random_directions(key, x.shape[1], num_projections or x.shape[1])
    if projections.ndim != 2 or projections.shape[0] != x.shape[1]:
        raise ValueError(f"projections must be (N, K) with N={x.shape[1]}, got shape {tuple(projections.shape)}")
    target = sorted_target(y @ projections, wy)
    return transport_1d(x @ projections, target["sorted"], wx, target.get("cum"))


def psd_sqrt(c: jax.Array) -> jax.Array:
    """The symmetric square root of a positive semi-definite (N, N) matrix (eigenvalues rounded below 0 are
    taken as 0). For the style side, computed once per run: no gradient is needed through it."""
    w, v = jnp.linalg.eigh(c)
    return (v * jnp.sqrt(jnp.maximum(w, 0.0))) @ v.T


@jax.custom_jvp
def sqrt_trace(a: jax.Array) -> jax.Array:
    """tr(A^1/2) = sum_i sqrt(lambda_i) of a symmetric positive semi-definite (N, N) matrix A.

    Gradient: d tr(A^1/2) = sum_i (v_i^T dA v_i) / (2 sqrt(lambda_i)) over the eigenpairs of A (the eigenvalue
    derivatives need no eigenvector derivatives, so repeated eigenvalues are harmless). An eigenvalue at or
    below the rounding level of the spectrum (N eps lambda_max) counts as 0 and contributes no gradient: the
    pseudo-inverse square root. That is what keeps it finite for rank-deficient A (fewer samples than
    channels, dead channels): there 1 / sqrt(lambda) would be infinite or amplify rounding noise, while the
    exact gradient through A = S C_x S with respect to the samples stays bounded (it is the nuclear norm's
    U V^T), and the dropped directions are those where A is 0 to working precision.
    """
    w = jnp.linalg.eigvalsh(a)
    return jnp.sum(jnp.sqrt(jnp.maximum(w, 0.0)))


@sqrt_trace.defjvp
def _sqrt_trace_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = jnp.linalg.eigh(a)
    tol = a.shape[0] * jnp.finfo(a.dtype).eps * jnp.max(jnp.abs(w))
    keep = w > tol
    root = jnp.sqrt(jnp.where(keep, w, 1.0))
    dw = jnp.einsum("ji,jk,ki->i", v, da, v)  # v_i^T dA v_i
    value = jnp.sum(jnp.where(w > 0, jnp.sqrt(jnp.maximum(w, 0.0)), 0.0))
    return value, jnp.sum(jnp.where(keep, dw / (2.0 * root), 0.0))


def w2_from_moments(mu_x: jax.Array, c_x: jax.Array, mu_y: jax.Array, c_y_sqrt: jax.Array, tr_c_y: jax.Array
                    ) -> jax.Array:
    """:func:`w2_gaussian` from x's mean and covariance and y's mean, covariance square root and trace."""
    a = c_y_sqrt @ c_x @ c_y_sqrt
    a = 0.5 * (a + a.T)  # symmetric to rounding, as eigh assumes
    return jnp.sum(jnp.square(mu_x - mu_y)) + jnp.trace(c_x) + tr_c_y - 2.0 * sqrt_trace(a)


def w2_gaussian(x: jax.Array, y: jax.Array) -> jax.Array:
    """Squared Wasserstein-2 distance between the Gaussians fitted to x (M, N) and y (M', N):

    ||mu_x - mu_y||^2 + tr(C_x) + tr(C_y) - 2 tr((C_y^1/2 C_x C_y^1/2)^1/2), population covariances
    (denominator M). Mean and covariance matching: the Frechet distance of the two feature distributions.
    The matrix square roots are taken by symmetric eigendecomposition (:func:`psd_sqrt`, :func:`sqrt_trace`),
    whose gradient is finite for rank-deficient covariances. O(M N^2 + N^3). For nearly equal distributions
    the value is a difference of nearly equal traces: it carries a rounding error of order sqrt(eps) tr(C)
    (from the square roots of the smallest eigenvalues) and can dip that far below 0.
    """
    check_samples(x, y)
    mu_x, c_x = covariance(x)
    mu_y, c_y = covariance(y)
    return w2_from_moments(mu_x, c_x, mu_y, psd_sqrt(c_y), jnp.trace(c_y))
