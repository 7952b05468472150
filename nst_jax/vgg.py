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


class VGG19(nn.Module):
    """VGG-19 convolutional trunk returning named activations.

    Attributes:
      layers: the activations to return; the forward pass stops at the deepest one.
      pooling: ``"max"`` (torchvision, what the weights were trained with) or ``"avg"`` (the paper's choice).
      remat: rematerialise each block in the backward pass (less activation memory, more compute).
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters stay float32.
    """

    layers: Sequence[str]
    pooling: str = "max"
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        wanted = set(self.layers)
        deepest = max(LAYERS.index(name) for name in self.layers)
        conv_cls = nn.remat(nn.Conv) if self.remat else nn.Conv
        out: dict[str, jax.Array] = {}
        x = x.astype(self.dtype)
        for name in LAYERS[: deepest + 1]:
            kind = name[:4]
            if kind == "conv":
                cout = conv_shapes()[name][1]
                x = conv_cls(cout, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=name)(x)
            elif kind == "relu":
                x = nn.relu(x)
            elif self.pooling == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            else:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            if name in wanted:
                out[name] = x.astype(jnp.float32)
        return out


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
) -> dict[str, jax.Array]:
    """Activations of ``images`` at ``layers``.

    Args:
      params: ``{"params": {"conv1_1": {"kernel": (3, 3, 3, 64), "bias": (64,)}, ...}}``; layers deeper
        than the deepest requested one may be absent.
      images: (B, H, W, 3) float32, preprocessed for the weights' source.
      layers: names from :data:`LAYERS`.
      pooling: ``"max"`` or ``"avg"``.

    Returns:
      ``{name: (B, H / 2**k, W / 2**k, C)}`` float32, where k is the number of poolings before the layer.
    """
    layers = check_layers(layers)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3), got shape {tuple(images.shape)}")
    model = VGG19(layers=tuple(sorted(set(layers), key=LAYERS.index)), pooling=pooling, remat=remat, dtype=dtype)
    return model.apply(params, images)


def load_params(path: str) -> dict[str, Any]:
    """Parameters from a file written by ``python -m weights_converter`` (see :mod:`nst_jax.weights`)."""
    from nst_jax import weights  # local import: weights imports this module

    return weights.load(path).params
