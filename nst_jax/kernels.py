"""Kernels on feature vectors and tiled pairwise sums over sample matrices.

A kernel is a pure function of two vectors ``a``, ``b`` of shape (N,) (one spatial position's N channel
activations each) returning a scalar. :func:`matrix`, :func:`rowwise` and :func:`pairwise_sum` lift it to
sample matrices with ``jax.vmap``; :func:`pairwise_sum` tiles the rows (:func:`tiled_sum`, the one tiling
mechanism) so that memory stays O(block_size x M') however many samples there are.

Reference: Li, Wang, Liu, Hou, "Demystifying Neural Style Transfer", IJCAI 2017, section 3 (MMD kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Kernel = Callable[..., jax.Array]


def linear(a: jax.Array, b: jax.Array) -> jax.Array:
    """k(a, b) = a . b for a, b of shape (N,). Returns a scalar."""
    return jnp.dot(a, b)


def poly(a: jax.Array, b: jax.Array, *, c: float = 1.0, d: int | float = 2) -> jax.Array:
    """k(a, b) = (a . b + c)^d for a, b of shape (N,). Returns a scalar.

    An integer ``d`` uses repeated multiplication (defined for a negative base); a non-integer ``d`` uses
    ``jnp.power`` and is NaN where a . b + c < 0.
    """
    t = jnp.dot(a, b) + c
    if isinstance(d, int):
        return lax.integer_pow(t, d)
    return jnp.power(t, d)


def gaussian(a: jax.Array, b: jax.Array, *, gamma: Any) -> jax.Array:
    """k(a, b) = exp(-gamma ||a - b||^2) for a, b of shape (N,); gamma = 1 / (2 sigma^2). Returns a scalar.

    ``gamma`` may also be B bandwidths (a tuple or a (B,) array): then k is their mean,
    (1/B) sum_b exp(-gamma_b ||a - b||^2), the multi-kernel MMD's kernel (Long et al., ICML 2015).

    The squared distance is written as a.a + b.b - 2 a.b so that, once vmapped over two sample matrices, the
    cross term becomes one matrix product (and a.a, b.b are computed once per row) instead of an
    (M, M', N) broadcast difference. Rounding can make the expansion slightly negative for a == b; it is
    clamped at 0.
    """
    sq = jnp.dot(a, a) + jnp.dot(b, b) - 2.0 * jnp.dot(a, b)
    if jnp.ndim(jnp.asarray(gamma)) == 1:
        return jnp.mean(jnp.exp(-jnp.asarray(gamma, sq.dtype) * jnp.maximum(sq, 0.0)))
    return jnp.exp(-gamma * jnp.maximum(sq, 0.0))


KERNELS: dict[str, Kernel] = {"linear": linear, "poly": poly, "gaussian": gaussian}
"""The kernels by name, as used by :func:`nst_jax.losses.mmd2`."""


def get(name: str) -> Kernel:
    """The kernel called ``name``; ``ValueError`` naming the known ones if there is none."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known kernels: {', '.join(KERNELS)}")
    return KERNELS[name]


def _check(x: jax.Array, y: jax.Array) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"sample matrices must be 2-D (M, N), got shapes {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"channel counts differ: x has N={x.shape[1]}, y has N={y.shape[1]}")


def matrix(kernel: Kernel, x: jax.Array, y: jax.Array, **params: Any) -> jax.Array:
    """The full kernel matrix K[i, j] = k(x_i, y_j): (M, N), (M', N) -> (M, M').

    Untiled, O(M M') memory: for small inputs and as the reference the tiled sums are tested against.
    """
    _check(x, y)
    k = jax.vmap(jax.vmap(lambda a, b: kernel(a, b, **params), (None, 0)), (0, None))
    return k(x, y)


def rowwise(kernel: Kernel, a: jax.Array, b: jax.Array, **params: Any) -> jax.Array:
    """k(a_i, b_i) for each row: (K, N), (K, N) -> (K,). The paired (linear-time) estimator's kernel calls."""
    _check(a, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"rowwise needs equal row counts, got {a.shape[0]} and {b.shape[0]}")
    return jax.vmap(lambda u, v: kernel(u, v, **params))(a, b)


def tiled_sum(
    block_sum: Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array],
    z: jax.Array,
    block_size: int,
    weights: jax.Array | None = None,
) -> jax.Array:
    """sum over the row blocks of z of ``block_sum(zb, rows, wb)``, with O(block_size) rows in memory at once.

    The rows of z (M, N) are padded with zeros to a multiple of ``block_size`` (capped at M, so small inputs
    are not padded to a large block) and cut into blocks; ``lax.map`` walks them. ``block_sum`` gets a block zb
    (bs, N), its row indices ``rows`` (bs,) (>= M on padding rows, which it must leave out) and, with
    ``weights`` (M,), the block's weights wb (bs,) (0 on padding rows), else None. Each block is under
    ``jax.checkpoint`` so that reverse mode recomputes a block's intermediates rather than storing them for
    every block. The one mechanism behind the pairwise kernel sums and the random-feature means.

    Returns:
      The sum of the blocks' results (any shape ``block_sum`` returns).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    m, n = z.shape
    bs = min(block_size, m)
    nb = -(-m // bs)
    blocks = jnp.pad(z, ((0, nb * bs - m), (0, 0))).reshape(nb, bs, n)
    starts = jnp.arange(nb) * bs
    weight_blocks = None if weights is None else jnp.pad(weights, (0, nb * bs - m)).reshape(nb, bs)

    @jax.checkpoint
    def one(args: tuple[jax.Array, jax.Array, jax.Array | None]) -> jax.Array:
        zb, start, wb = args
        return block_sum(zb, start + jnp.arange(bs), wb)

    if nb == 1:  # one block: no loop to compile
        return one((blocks[0], starts[0], None if weight_blocks is None else weight_blocks[0]))
    return jnp.sum(lax.map(one, (blocks, starts, weight_blocks)), axis=0)


def pairwise_sum(
    kernel: Kernel,
    x: jax.Array,
    y: jax.Array,
    block_size: int = 512,
    exclude_diagonal: bool = False,
    *,
    row_weights: jax.Array | None = None,
    col_weights: jax.Array | None = None,
    **params: Any,
) -> jax.Array:
    """sum_{i, j} k(x_i, y_j) over all pairs, without an M x M' matrix; with ``row_weights`` (M,) and
    ``col_weights`` (M',), sum_{i, j} row_weights_i col_weights_j k(x_i, y_j) (weighted samples, both given).

    Tiled over the rows of x (:func:`tiled_sum`): each block gives a (block_size, M') tile of the vmapped
    kernel that is masked (padding rows, and the diagonal if asked) or weighted and summed. Memory:
    O(block_size x M') forward and backward. Time: O(M M' N).

    Args:
      kernel: a vector kernel such as :func:`gaussian`.
      x: (M, N).
      y: (M', N).
      block_size: rows of ``x`` per tile.
      exclude_diagonal: leave out the i == j terms (the U-statistic); needs x and y of the same shape and
        means "x and y are the same sample".
      row_weights, col_weights: per-sample weights of x and y (:mod:`nst_jax.losses.stats`), or None.
      **params: the kernel's keyword parameters (``c``, ``d``, ``gamma``).

    Returns:
      A scalar with x's dtype.
    """
    _check(x, y)
    m = x.shape[0]
    if exclude_diagonal and x.shape != y.shape:
        raise ValueError(f"exclude_diagonal needs x and y of the same shape, got {x.shape} and {y.shape}")
    cols = jnp.arange(y.shape[0])
    tile = jax.vmap(jax.vmap(lambda a, b: kernel(a, b, **params), (None, 0)), (0, None))

    def block_sum(xb: jax.Array, rows: jax.Array, wb: jax.Array | None) -> jax.Array:
        if wb is None:
            keep = rows[:, None] < m
            if exclude_diagonal:
                keep = keep & (rows[:, None] != cols[None, :])
            return jnp.sum(jnp.where(keep, tile(xb, y), 0.0))
        weighted = tile(xb, y) * wb[:, None] * col_weights[None, :]  # padding rows have weight 0
        if exclude_diagonal:
            weighted = jnp.where(rows[:, None] != cols[None, :], weighted, 0.0)
        return jnp.sum(weighted)

    return tiled_sum(block_sum, x, block_size, row_weights)
