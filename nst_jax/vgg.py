"""VGG-19 feature extractor in Flax Linen, layer for layer the ``features`` part of torchvision's ``vgg19()``.

Layers are named as in the style-transfer literature: ``conv1_1`` ... ``conv5_4``, ``relu1_1`` ... ``relu5_4``,
``pool1`` ... ``pool5``. Images are NHWC float32, already preprocessed for the weights' source
(see :mod:`nst_jax.image`). Only the requested layers are returned, and nothing past the deepest one is computed.

Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2015.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Channel counts per block, as in torchvision's cfg "E".
_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

CONV_LAYERS: tuple[str, ...] = tuple(
    f"conv{b}_{i}" for b, (_, n) in enumerate(_BLOCKS, start=1) for i in range(1, n + 1)
)


def _layer_names() -> tuple[str, ...]:
    names = []
    for b, (_, n) in enumerate(_BLOCKS, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


LAYERS: tuple[str, ...] = _layer_names()
"""Every layer name, in forward order (16 conv, 16 relu, 5 pool)."""

# Index of each conv in torchvision's ``features`` Sequential (convs, ReLUs and pools interleaved).
TORCHVISION_INDEX: dict[str, int] = {}
_i = 0
for _name in LAYERS:
    if _name.startswith("conv"):
        TORCHVISION_INDEX[_name] = _i
    _i += 1
del _i, _name

POOLINGS = ("max", "avg")
DTYPES = ("float32", "bfloat16")  # compute dtypes; parameters and returned activations stay float32


def conv_shapes() -> dict[str, tuple[int, int]]:
    """(in_channels, out_channels) of every convolution."""
    shapes, cin = {}, 3
    for b, (cout, n) in enumerate(_BLOCKS, start=1):
        for i in range(1, n + 1):
            shapes[f"conv{b}_{i}"] = (cin, cout)
            cin = cout
    return shapes


def check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    """Validates layer names; raises ``ValueError`` naming the unknown ones."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG-19 layer(s) {', '.join(unknown)}; known: conv1_1 ... pool5")
    if not layers:
        raise ValueError("no VGG-19 layer requested")
    return layers


def downsampling(layer: str) -> int:
    """How many 2x poolings lie before ``layer`` (its stride relative to the input)."""
    return sum(1 for name in LAYERS[: LAYERS.index(layer)] if name.startswith("pool"))


def level(layer: str) -> int:
    """How many 2x poolings lie up to and including ``layer``: its output is at 1 / 2**level resolution."""
    return downsampling(layer) + layer.startswith("pool")


def pool2x2(x: jax.Array, pooling: str) -> jax.Array:
    """2x2 pooling with stride 2, 'VALID' (an odd last row or column is dropped): (B, H, W, C) -> (B, H//2, W//2, C).

    Written as a reshape and a reduction rather than ``reduce_window``: the same values, but the gradient of a
    reduction is an elementwise mask that XLA fuses, while ``reduce_window``'s (``select_and_scatter`` for max)
    runs as a separate slow loop on CPU. Max-pool ties split the gradient equally instead of picking one
    input; ties occur at ReLU zeros, where the ReLU's own derivative is 0 anyway.
    """
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2].reshape(b, h // 2, 2, w // 2, 2, c)
    return jnp.max(x, axis=(2, 4)) if pooling == "max" else jnp.mean(x, axis=(2, 4))


class VGG19(nn.Module):
    """VGG-19 convolutional trunk returning named activations.

    Attributes:
      layers: the activations to return; the forward pass stops at the deepest one.
      pooling: ``"max"`` (torchvision, what the weights were trained with) or ``"avg"`` (the paper's choice).
      remat: rematerialise each block in the backward pass: the activations kept for it shrink to the block
        inputs and the requested layers, for one more forward pass. The peak of a step is block 1's own
        backward pass (64 channels at full resolution), which this does not shrink: on XLA:CPU it saves
        about 3 % (``benchmarks/memory.py``); :mod:`nst_jax.strips` does (``image_rows`` below).
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters stay float32.
      start: the first layer computed; the input is the activation that feeds it (an image for ``conv1_1``,
        ``pool2``'s output for ``conv3_1``), and layers before it are neither computed nor returned.
      image_rows: 0, or strip mode (:mod:`nst_jax.strips`): the input is a horizontal slab of an input of
        ``image_rows`` rows, whose row 0 is row ``first_row`` of that input (a call argument, may be negative,
        a multiple of 2**poolings). After every layer the rows that fall outside the input at that layer's
        resolution are set to 0, which is what the zero padding of a convolution over the whole input sees.
    """

    layers: Sequence[str]
    pooling: str = "max"
    remat: bool = False
    dtype: Any = jnp.float32
    start: str = "conv1_1"
    image_rows: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, first_row: jax.Array | int = 0) -> dict[str, jax.Array]:
        wanted = set(self.layers)
        deepest = max(LAYERS.index(name) for name in self.layers)
        out: dict[str, jax.Array] = {}
        x = x.astype(self.dtype)
        # One block = conv ... relu ... pool. With remat, a block keeps only its input and the requested
        # activations for the backward pass and recomputes the rest, so the activations held at once are
        # those of one block instead of the whole trunk. The lifted nn.remat runs in this module's scope,
        # so the parameter tree (conv1_1 ... conv5_4 at the top) is the same either way.
        for names in _blocks_between(LAYERS.index(self.start), deepest):
            run = nn.remat(self._block(names, wanted)) if self.remat else self._block(names, wanted)
            x, feats = run(self, x, first_row)
            out.update(feats)
        return out

    def _block(self, names: tuple[str, ...], wanted: set[str]) -> Any:
        """``f(module, x, first_row) -> (x after names[-1], {requested name: float32 activation})``."""
        base = downsampling(self.start)

        def run(module: VGG19, x: jax.Array, first_row: jax.Array | int) -> tuple[jax.Array, dict[str, jax.Array]]:
            feats = {}
            for name in names:
                kind = name[:4]
                if kind == "conv":
                    cout = conv_shapes()[name][1]
                    x = nn.Conv(cout, (3, 3), padding=((1, 1), (1, 1)), dtype=module.dtype, name=name)(x)
                elif kind == "relu":
                    x = nn.relu(x)
                else:
                    x = pool2x2(x, module.pooling)
                if module.image_rows:
                    x = mask_rows(x, first_row, level(name) - base, module.image_rows)
                if name in wanted:
                    feats[name] = x.astype(jnp.float32)  # losses accumulate in float32 whatever the compute dtype
            return x, feats

        return run


def mask_rows(x: jax.Array, first_row: jax.Array | int, poolings: int, image_rows: int) -> jax.Array:
    """Zeroes the rows of a slab x (B, h, W, C), ``poolings`` 2x poolings below the input, that lie outside it.

    ``first_row``: the input row of the slab's row 0 at the input's resolution, a multiple of 2**poolings; the
    input has ``image_rows`` rows, and ``image_rows // 2**poolings`` at x's resolution ('VALID' pooling floors).
    """
    rows = first_row // 2**poolings + jnp.arange(x.shape[1])
    inside = (rows >= 0) & (rows < image_rows // 2**poolings)
    return jnp.where(inside[None, :, None, None], x, jnp.zeros((), x.dtype))


def _blocks_between(first: int, deepest: int) -> list[tuple[str, ...]]:
    """``LAYERS[first : deepest + 1]`` cut into VGG blocks (each ending at its pool, the ends possibly within)."""
    blocks, current = [], []
    for name in LAYERS[first : deepest + 1]:
        current.append(name)
        if name.startswith("pool"):
            blocks.append(tuple(current))
            current = []
    if current:
        blocks.append(tuple(current))
    return blocks


@functools.cache
def param_shapes() -> Mapping[str, Any]:
    """The parameter tree of a full VGG-19 as ``jax.ShapeDtypeStruct`` leaves, without allocating it."""
    model = VGG19(layers=("relu5_4",))
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))


def init_params(key: jax.Array) -> dict[str, Any]:
    """Randomly initialised parameters (for tests and benchmarks only: not a pretrained network)."""
    model = VGG19(layers=("relu5_4",))
    return model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32))


def extract(
    params: Mapping[str, Any],
    images: jax.Array,
    layers: Iterable[str],
    pooling: str = "max",
    *,
    remat: bool = False,
    dtype: Any = jnp.float32,
    start: str = "conv1_1",
    image_rows: int = 0,
    first_row: jax.Array | int = 0,
) -> dict[str, jax.Array]:
    """Activations of ``images`` at ``layers``.

    Args:
      params: ``{"params": {"conv1_1": {"kernel": (3, 3, 3, 64), "bias": (64,)}, ...}}``; layers deeper
        than the deepest requested one may be absent.
      images: (B, H, W, 3) float32, preprocessed for the weights' source; with ``start`` past conv1_1, the
        (B, H', W', C) activation feeding ``start``.
      layers: names from :data:`LAYERS`, none before ``start``.
      pooling: ``"max"`` or ``"avg"``.
      remat: rematerialise each VGG block in the backward pass (see :class:`VGG19`).
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters stay float32, outputs are float32.
      start, image_rows, first_row: see :class:`VGG19` (the second half of a network; one slab of rows).

    Returns:
      ``{name: (B, H / 2**k, W / 2**k, C)}`` float32, where k is the number of poolings between ``start``
      and the layer.
    """
    layers = check_layers(layers)
    check_layers([start])
    early = [name for name in layers if LAYERS.index(name) < LAYERS.index(start)]
    if early:
        raise ValueError(f"layer(s) {', '.join(early)} come before the first computed layer {start}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
    channels = 3 if start == "conv1_1" else layer_channels(LAYERS[LAYERS.index(start) - 1])
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(f"images must be (B, H, W, {channels}), got shape {tuple(images.shape)}")
    return _apply(params, images, first_row, tuple(sorted(set(layers), key=LAYERS.index)), pooling, remat,
                  jnp.dtype(dtype), start, image_rows)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _apply(params: Mapping[str, Any], images: jax.Array, first_row: jax.Array | int, layers: tuple[str, ...],
           pooling: str, remat: bool, dtype: Any, start: str, image_rows: int) -> dict[str, jax.Array]:
    # Jitted so that the network is traced once per shape and options, however many times a program calls it
    # (a chunk's steps, the report, the balance): Flax's module tracing was a tenth of a second a call. Inside
    # a program the call is inlined, so the compiled computation is the same.
    model = VGG19(layers=layers, pooling=pooling, remat=remat, dtype=dtype, start=start, image_rows=image_rows)
    return model.apply(params, images, first_row)


def layer_channels(layer: str) -> int:
    """Channels of a layer's activation (conv, relu and pool of block b: 64, 128, 256, 512, 512)."""
    check_layers([layer])
    return _BLOCKS[int(layer[4]) - 1][0]  # the block's digit: conv3_2 -> 3
