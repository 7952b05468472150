"""Kernels on feature vectors and tiled pairwise sums over sample matrices.

A kernel is a pure function of two vectors ``a``, ``b`` of shape (N,) (one spatial position's N channel
activations each) returning a scalar. :func:`matrix`, :func:`rowwise` and :func:`pairwise_sum` lift it to
sample matrices with ``jax.vmap``; :func:`pairwise_sum` tiles the rows so that memory stays
O(block_size x M') however many samples there are.

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

    The rows of ``x`` are padded with zeros to a multiple of ``block_size`` and cut into blocks; ``lax.map``
    walks the blocks, and inside one the vmapped kernel gives a (block_size, M') tile that is masked (padding
    rows, and the diagonal if asked) and summed. Each block is under ``jax.checkpoint`` so that reverse mode
    recomputes its tile rather than storing one tile per block (which would be the M x M' matrix again).
    Memory: O(block_size x M') forward and backward. Time: O(M M' N).

    Args:
      kernel: a vector kernel such as :func:`gaussian`.
      x: (M, N).
      y: (M', N).
      block_size: rows of ``x`` per tile (capped at M, so small inputs are not padded to a large block).
      exclude_diagonal: leave out the i == j terms (the U-statistic); needs x and y of the same shape and
        means "x and y are the same sample".
      row_weights, col_weights: per-sample weights of x and y (:mod:`nst_jax.losses.weighted`), or None.
      **params: the kernel's keyword parameters (``c``, ``d``, ``gamma``).

    Returns:
      A scalar with x's dtype.
    """
    _check(x, y)
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    m, n = x.shape
    if exclude_diagonal and x.shape != y.shape:
        raise ValueError(f"exclude_diagonal needs x and y of the same shape, got {x.shape} and {y.shape}")
    bs = min(block_size, m)
    nb = -(-m // bs)
    blocks = jnp.pad(x, ((0, nb * bs - m), (0, 0))).reshape(nb, bs, n)
    starts = jnp.arange(nb) * bs
    cols = jnp.arange(y.shape[0])
    tile = jax.vmap(jax.vmap(lambda a, b: kernel(a, b, **params), (None, 0)), (0, None))
    if row_weights is not None:
        return _weighted_pairwise_sum(tile, blocks, starts, bs, cols, exclude_diagonal, y,
                                      jnp.pad(row_weights, (0, nb * bs - m)).reshape(nb, bs), col_weights)

    @jax.checkpoint
    def block_sum(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        xb, start = args
        rows = start + jnp.arange(bs)
        keep = rows[:, None] < m
        if exclude_diagonal:
            keep = keep & (rows[:, None] != cols[None, :])
        return jnp.sum(jnp.where(keep, tile(xb, y), 0.0))

    if nb == 1:  # one tile: no loop to compile
        return block_sum((blocks[0], starts[0]))
    return jnp.sum(lax.map(block_sum, (blocks, starts)))


def _weighted_pairwise_sum(tile: Any, blocks: jax.Array, starts: jax.Array, bs: int, cols: jax.Array,
                           exclude_diagonal: bool, y: jax.Array, row_blocks: jax.Array, col_weights: jax.Array
                           ) -> jax.Array:
    """:func:`pairwise_sum` with each tile multiplied by the outer product of its rows' and columns' weights
    (padding rows have weight 0)."""

    @jax.checkpoint
    def block_sum(args: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        xb, wb, start = args
        weighted = tile(xb, y) * wb[:, None] * col_weights[None, :]
        if exclude_diagonal:
            weighted = jnp.where((start + jnp.arange(bs))[:, None] != cols[None, :], weighted, 0.0)
        return jnp.sum(weighted)

    if blocks.shape[0] == 1:
        return block_sum((blocks[0], row_blocks[0], starts[0]))
    return jnp.sum(lax.map(block_sum, (blocks, row_blocks, starts)))
