"""VGG-19's first blocks evaluated strip by strip: large images within memory.

Blocks 1 and 2 of VGG-19 (conv1_1 ... pool2) run at full and half resolution with 64 and 128 channels, so their
activations and the backward pass through them are most of a step's memory (``benchmarks/memory.py``). What a
step needs of them is additive over positions: the content loss is a sum of squares, and the statistics of
every :func:`nst_jax.losses.streamable` style method (Gram matrix, means, sums of squares) are sums over the
layer's samples (:class:`nst_jax.losses.SampleSums`). So those blocks can be computed in horizontal strips, one
after another: the forward and the backward pass hold one strip's activations at a time, and only ``pool2``'s
output (8 channels' worth at full resolution) is kept whole, to feed the rest of the network.

Each strip is computed on a slab of the image with ``halo`` more rows above and below. A 3x3 convolution over
the slab alone gets its edge row wrong (it sees zero padding instead of the next row); each convolution moves
that error one row inward and each pooling halves it, so a halo of :func:`halo_rows` rows keeps every row a
strip uses exact. Rows of a slab outside the image are set to 0 after every layer
(:func:`nst_jax.vgg.mask_rows`), which is what the convolutions' zero padding sees in the whole image. The
result equals the whole-image step up to float rounding (``tests/test_strips.py``); the cost is the halo's
recomputation, 2 * halo / strip rows more work in these two blocks, and one more forward pass of them (each
strip is rematerialised in the backward pass).

The strips run in a ``lax.map`` (one compiled strip, a loop over strips), so memory does not grow with their
number and XLA cannot schedule two strips' activations at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax import losses, vgg

HEAD_BLOCKS = 2
"""Blocks computed in strips: 1 and 2, the full- and half-resolution ones."""

HEAD_END = f"pool{HEAD_BLOCKS}"
TAIL_START = vgg.LAYERS[vgg.LAYERS.index(HEAD_END) + 1]
"""The first layer after the strips (conv3_1): the rest of the network runs on the whole of pool2's output."""


def head(layers: Sequence[str]) -> tuple[str, ...]:
    """The layers among ``layers`` that lie in the strip-wise blocks (conv1_1 ... pool2), in order."""
    end = vgg.LAYERS.index(HEAD_END)
    return tuple(name for name in vgg.LAYERS[: end + 1] if name in layers)


def halo_rows(blocks: int = HEAD_BLOCKS) -> int:
    """Input rows a slab needs above and below its strip for blocks 1 ... ``blocks`` to be exact.

    Rows corrupted at a slab's edge: +1 per convolution at its level, halved (rounded up) per pooling; the
    halo covers the most, in input rows, at any layer, rounded up to a multiple of 2**blocks so that slabs
    stay aligned with the poolings. 8 for two blocks.
    """
    end = vgg.LAYERS.index(f"pool{blocks}")
    bad, scale, need = 0, 1, 0
    for name in vgg.LAYERS[: end + 1]:
        if name.startswith("conv"):
            bad += 1
        elif name.startswith("pool"):
            bad, scale = -(-bad // 2), scale * 2
        need = max(need, bad * scale)
    return _round_up(need, 2**blocks)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How an image of ``rows`` rows is cut: ``count`` strips of ``strip`` rows (the last may overhang the
    image), each computed on a slab of ``strip + 2 * halo`` rows."""

    rows: int
    strip: int
    count: int
    halo: int

    @property
    def slab(self) -> int:
        return self.strip + 2 * self.halo


def plan(rows: int, strips: int) -> Plan:
    """At most ``strips`` strips of equal height, a multiple of 2**HEAD_BLOCKS, covering ``rows`` rows."""
    if rows < 1 or strips < 1:
        raise ValueError(f"need rows >= 1 and strips >= 1, got rows={rows}, strips={strips}")
    strip = _round_up(_round_up(rows, strips) // strips, 2**HEAD_BLOCKS)  # ceil(rows / strips), aligned
    return Plan(rows=rows, strip=strip, count=_round_up(rows, strip) // strip, halo=halo_rows())


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def forward(
    extract: Any,
    x: jax.Array,
    p: Plan,
    content_targets: Mapping[str, jax.Array],
    style_terms: Mapping[str, tuple[Sequence[losses.StyleTerm], Sequence[Mapping[str, jax.Array]]]],
    keep_end: bool,
    region_weights: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array | None, dict[str, jax.Array], dict[str, losses.SampleSums]]:
    """Blocks 1-2 of one image, strip by strip.

    Args:
      extract: ``vgg.extract`` with the network's parameters, pooling and compute dtype bound, e.g.
        ``functools.partial(problem.extract, params, remat=False)`` (each strip is rematerialised whole).
      x: (H, W, 3) the preprocessed image, H == ``p.rows``.
      content_targets: {layer in blocks 1-2: (h, w, C) the content's activation}.
      style_terms: {layer in blocks 1-2: (its streamable terms, their targets)}.
      keep_end: whether to return pool2's output (the input of the rest of the network).
      region_weights: a masked run's {layer in blocks 1-2: (R, h, w)} region weights; each layer's terms then
        have targets stacked per region, and its sums are per region (weighted), added over strips like the
        unmasked ones, with the regions' weight sums as counts (:mod:`nst_jax.losses.regions`).

    Returns:
      (pool2 output (H // 4, W // 4, 128) or None, {layer: sum (F - P)^2} per content layer,
      {layer: SampleSums} per style layer).
    """
    wanted = tuple(sorted(set(content_targets) | set(style_terms) | ({HEAD_END} if keep_end else set()),
                          key=vgg.LAYERS.index))
    x_pad = jnp.pad(x, ((p.halo, p.count * p.strip - p.rows + p.halo), (0, 0), (0, 0)))
    # Content targets padded with zero rows to whole strips (the generated side is 0 there too).
    padded_content = {
        name: jnp.pad(t, ((0, (p.count * p.strip >> vgg.level(name)) - t.shape[0]), (0, 0), (0, 0)))
        for name, t in content_targets.items()
    }

    padded_regions = {
        name: jnp.pad(w, ((0, 0), (0, (p.count * p.strip >> vgg.level(name)) - w.shape[1]), (0, 0)))
        for name, w in (region_weights or {}).items()
    }

    @jax.checkpoint  # the backward pass recomputes one strip at a time instead of keeping all strips' activations
    def one(i: jax.Array) -> tuple[jax.Array | None, dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
        top = i * p.strip  # the slab's first row in x_pad; its image row is top - halo
        slab = lax.dynamic_slice_in_dim(x_pad, top, p.slab, axis=0)
        feats = extract(slab[None], wanted, image_rows=p.rows, first_row=top - p.halo)

        def interior(name: str) -> jax.Array:
            level = vgg.level(name)
            return feats[name][0, p.halo >> level : (p.halo + p.strip) >> level]

        content = {}
        for name, t in padded_content.items():
            rows = p.strip >> vgg.level(name)
            content[name] = losses.content_loss(interior(name), lax.dynamic_slice_in_dim(t, i * rows, rows, axis=0))
        sums = {}
        for name, (terms, targets) in style_terms.items():
            f = interior(name)
            level = vgg.level(name)
            image_row = i * (p.strip >> level) + jnp.arange(f.shape[0])
            weights = jnp.repeat((image_row < p.rows >> level).astype(f.dtype), f.shape[1])
            if name in padded_regions:
                rows = p.strip >> level
                w = lax.dynamic_slice_in_dim(padded_regions[name], i * rows, rows, axis=1).reshape(
                    padded_regions[name].shape[0], -1) * weights[None, :]
                sums[name] = jax.vmap(lambda t, wr, f=f, terms=terms: losses.sample_sums(
                    terms, losses.to_samples(f), t, wr))(list(targets), w)
            else:
                sums[name] = losses.sample_sums(terms, losses.to_samples(f), targets, weights)
        return (interior(HEAD_END) if keep_end else None), content, sums

    end, content, sums = lax.map(one, jnp.arange(p.count))
    if keep_end:
        end = end.reshape((-1,) + end.shape[2:])[: p.rows >> HEAD_BLOCKS]
    counts = {name: (p.rows >> vgg.level(name)) * (x.shape[1] >> vgg.level(name)) for name in style_terms}
    counts.update({name: jnp.sum(w.reshape(w.shape[0], -1), axis=1) for name, w in (region_weights or {}).items()})
    return (
        end,
        {name: jnp.sum(v) for name, v in content.items()},
        {name: losses.SampleSums(jax.tree.map(lambda a: jnp.sum(a, axis=0), s), counts[name])
         for name, s in sums.items()},
    )
