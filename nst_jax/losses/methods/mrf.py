"""Markov random field (patch) matching: Li and Wand, "Combining Markov random fields and convolutional neural
networks for image synthesis", CVPR 2016.

Each k x k patch of the generated image's activations at a layer is matched to the style patch most like it by
normalised cross-correlation, and pulled toward that patch. The match is a convolution: the style patches, each
divided by its length, are the filters, so one convolution scores every generated patch against every style
patch (the generated patch's own length does not change which style patch scores highest). The match is not
differentiated through (``stop_gradient``, as in the paper's implementation): only the squared distance to the
matched patch is. Unlike the other methods this one sees the layer's spatial layout (``spatial``), and it runs at
relu3_1 and relu4_1 (the paper's layers) of a run's style layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from nst_jax.losses.methods.base import StyleMethod, Target, is_int, register, require
from nst_jax.losses.stats import mixture_samples


def patches(features: jax.Array, size: int) -> jax.Array:
    """Every size x size patch (stride 1, inside the map): (h, w, N) -> (h - size + 1, w - size + 1, size, size, N);
    patch (i, j) is features[i : i + size, j : j + size]."""
    h, w = features.shape[0] - size + 1, features.shape[1] - size + 1
    return jnp.stack([jnp.stack([features[i: i + h, j: j + w] for j in range(size)], axis=2) for i in range(size)],
                     axis=2)


def nearest_patches(x: jax.Array, style_patches: jax.Array, inv_norm: jax.Array, block_size: int) -> jax.Array:
    """For each patch of x (h, w, N), the index of the style patch (P', k, k, N) of highest normalised
    cross-correlation, <x patch, style patch> * inv_norm (P',): (h - k + 1, w - k + 1) int32, the first index on
    ties. One convolution per block of ``block_size`` style patches (the filters), a running best between
    blocks, so the scores held at once are (h - k + 1, w - k + 1, block_size)."""
    p, k = style_patches.shape[0], style_patches.shape[1]
    b = min(block_size, p)
    count = -(-p // b)
    pad = count * b - p
    filters = jnp.pad(style_patches, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(count, b, *style_patches.shape[1:])
    scales = jnp.pad(inv_norm, (0, pad)).reshape(count, b)
    valid = (jnp.arange(count * b) < p).reshape(count, b)
    out_shape = (x.shape[0] - k + 1, x.shape[1] - k + 1)

    def block(carry, inputs):
        best, arg = carry
        f, s, v, start = inputs
        scores = lax.conv_general_dilated(x[None], jnp.transpose(f, (1, 2, 3, 0)), (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))[0] * s
        scores = jnp.where(v, scores, -jnp.inf)  # padding filters never win
        top = jnp.max(scores, axis=-1)
        better = top > best  # strict: an earlier block keeps a tie, as argmax keeps the first index
        return (jnp.where(better, top, best), jnp.where(better, jnp.argmax(scores, axis=-1) + start, arg)), None

    init = (jnp.full(out_shape, -jnp.inf, jnp.result_type(x, style_patches, inv_norm)),
            jnp.zeros(out_shape, jnp.int32))
    starts = jnp.arange(count, dtype=jnp.int32) * b
    (_, arg), _ = lax.scan(block, init, (filters, scales, valid, starts))
    return arg


@register
@dataclasses.dataclass(frozen=True)
class MRF(StyleMethod):
    """Patch matching: (1 / (P k^2 N)) sum_i ||psi_i(x) - psi_NN(i)(y)||^2, the mean over the P = (h - k + 1)
    (w - k + 1) generated patches psi_i(x) (k x k x N) and their k^2 N entries of the squared distance to the
    style patch psi_NN(i)(y) of highest normalised cross-correlation <psi_i(x), psi_j(y)> / ||psi_j(y)||. The
    paper's energy is the sum over patches and entries, P k^2 N times this; the mean keeps the value independent
    of the image size, as the other methods' are. 0 when x == y; never below 0. NN(i) is a constant of the
    gradient (``stop_gradient``).

    Parameters: ``patch_size`` k (3, the paper's); ``stride``, the step between the style patches taken (1: all
    of them; 2 takes a quarter, as the paper's code can, and costs a quarter); ``layers``, the style layers it
    runs at (``runs_at``; relu3_1 and relu4_1, the paper's: a run's other style layers get no mrf loss);
    ``block_size``, the style patches scored by one convolution (memory only, not the value).

    Target: ``patches`` (P', k, k, N), the style's patches, and ``inv_norm`` (P',), 1 / their lengths (0 for an
    all-zero patch), computed once per run. A blend's target is the union of the styles' patches, each style
    contributing in proportion to its weight (:func:`~nst_jax.losses.stats.mixture_samples` on the patches). Not
    streamable, takes no weights (regions are refused), no paper constant (``paper_scale`` is 1). Cost per step:
    P P' k^2 N multiply-adds for the match at each of its layers.
    """

    name: ClassVar[str] = "mrf"
    spatial: ClassVar[bool] = True

    patch_size: int = 3
    stride: int = 1
    layers: tuple[str, ...] = ("relu3_1", "relu4_1")
    block_size: int = 256

    def check(self) -> None:
        from nst_jax import vgg  # the layer names; the network module imports no losses

        self._require("patch_size", is_int(self.patch_size), "must be an integer >= 1")
        self._require("stride", is_int(self.stride), "must be an integer >= 1")
        self._require("block_size", is_int(self.block_size), "must be an integer >= 1")
        self._require("layers", isinstance(self.layers, tuple) and bool(self.layers)
                      and all(isinstance(n, str) and n in vgg.LAYERS for n in self.layers),
                      "must be a non-empty tuple of VGG-19 layer names (relu3_1, ...)")

    def describe(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}, layers={','.join(self.layers)}"

    def runs_at(self, layer: str) -> bool:
        return layer in self.layers

    def _check_map(self, f: jax.Array, side: str) -> None:
        if f.ndim != 3:
            raise ValueError(f"the mrf method needs the layer's activations (h, w, N), got {side} of shape "
                             f"{tuple(f.shape)}")
        if min(f.shape[:2]) < self.patch_size:
            raise ValueError(f"the mrf method's {self.patch_size}x{self.patch_size} patches do not fit in the "
                             f"{side}'s {f.shape[0]}x{f.shape[1]} map: use a larger image or a smaller patch_size")

    def _target_of(self, flat: jax.Array, n: int) -> Target:
        """The target of style patches flattened to (P', k^2 N)."""
        length = jnp.sqrt(jnp.sum(jnp.square(flat.astype(jnp.float32)), axis=1))
        inv_norm = jnp.where(length > 0, 1.0 / jnp.where(length > 0, length, 1.0), 0.0).astype(flat.dtype)
        k = self.patch_size
        return {"patches": flat.reshape(-1, k, k, n), "inv_norm": inv_norm}

    def _style_patches(self, y: jax.Array) -> jax.Array:
        self._check_map(y, "style")
        k, n = self.patch_size, y.shape[-1]
        return patches(y, k)[:: self.stride, :: self.stride].reshape(-1, k * k * n)

    def target(self, y: jax.Array, weights: jax.Array | None = None) -> Target:
        if weights is not None:
            raise ValueError("the mrf method matches patches of the layer's layout, not weighted samples: no regions")
        return self._target_of(self._style_patches(y), y.shape[-1])

    def mixture_target(self, ys: Sequence[jax.Array], weights: Sequence[float]) -> Target:
        return self._target_of(mixture_samples([self._style_patches(y) for y in ys], weights), ys[0].shape[-1])

    def loss(self, x: jax.Array, target: Mapping[str, jax.Array], *, key: jax.Array | None = None,
             weights: jax.Array | None = None) -> jax.Array:
        if weights is not None:
            raise ValueError("the mrf method matches patches of the layer's layout, not weighted samples: no regions")
        require(target, ("patches", "inv_norm"), self.name)
        self._check_map(x, "generated image")
        style = target["patches"]
        if style.shape[1:3] != (self.patch_size,) * 2 or style.shape[3] != x.shape[2]:
            raise ValueError(f"the mrf target holds patches of shape {tuple(style.shape[1:])}, the generated layer "
                             f"needs ({self.patch_size}, {self.patch_size}, {x.shape[2]}): build it with the same "
                             f"patch_size at the same layer")
        # The match is a constant of the gradient, as in the paper's code; only the distance is differentiated.
        nearest = nearest_patches(lax.stop_gradient(x), style, target["inv_norm"], self.block_size)
        return jnp.mean(jnp.square(patches(x, self.patch_size) - style[nearest]))

    def paper_scale(self, m: int, n: int) -> float:
        return 1.0
