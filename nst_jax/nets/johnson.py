"""Johnson, Alahi, Fei-Fei 2016 image transformation network, as pytorch/examples fast_neural_style's
``TransformerNet``: strided convolutions down, five residual blocks, resize-convolutions up, instance
normalisation, reflection padding.

Layers (``Cin -> Cout``, kernel, stride), every convolution but the last followed by instance normalisation
and a ReLU::

    conv1  3 -> 32   9x9 s1      res1 ... res5: 128 -> 128 (conv3x3, IN, ReLU, conv3x3, IN, + input)
    conv2  32 -> 64  3x3 s2      up1   nearest 2x, 128 -> 64  3x3 s1
    conv3  64 -> 128 3x3 s2      up2   nearest 2x, 64 -> 32   3x3 s1
                                 conv4 32 -> 3  9x9 s1 (no normalisation, no ReLU)

Upsampling is nearest-neighbour then a convolution (Odena et al. 2016, "Deconvolution and checkerboard
artifacts"), not a transposed convolution. Every convolution pads its input by reflection (kernel // 2 a side).

Images are RGB in [0, 1], NHWC; the output is RGB in nominal [0, 1] (not clipped: the loss sees the raw values,
callers clip what they save). The network is fully convolutional; :func:`stylize` takes any H x W by padding it
(reflection) to a multiple of :data:`MULTIPLE` and cropping the result back.

References: Johnson, Alahi, Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016; Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing Ingredient for Fast Stylization",
2016.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

MULTIPLE = 4
"""Two stride-2 convolutions down and two 2x upsamplings: sides that are multiples of 4 come back exactly."""

IN_EPS = 1e-5  # torch.nn.InstanceNorm2d's epsilon


def instance_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = IN_EPS) -> jax.Array:
    """Instance normalisation (Ulyanov et al. 2016): each image's each channel to zero mean and unit variance
    over its H x W positions, then ``scale * x + bias`` per channel.

    Args:
      x: (B, H, W, C); scale, bias: (C,).
      eps: added to the (biased) variance, as torch's ``InstanceNorm2d``.

    Returns:
      (B, H, W, C), the input's dtype.
    """
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """(B, H, W, C) padded by ``pad`` rows and columns a side, by reflection (torch's ReflectionPad2d)."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """(B, H, W, C) -> (B, factor H, factor W, C), each pixel repeated (nearest neighbour)."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class InstanceNorm(nn.Module):
    """:func:`instance_norm` with learned per-channel ``scale`` (ones) and ``bias`` (zeros), as
    ``InstanceNorm2d(affine=True)``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return instance_norm(x, scale, bias)


class ConvLayer(nn.Module):
    """Reflection padding (kernel // 2), then a convolution with the given stride (torch's ``ConvLayer``)."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = reflect_pad(x, self.kernel // 2)
        return nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                       padding="VALID", name="conv")(x)


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))), 3x3 convolutions keeping the channels (He et al. 2016, as Johnson's)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(InstanceNorm(name="in1")(ConvLayer(self.features, 3, name="conv1")(x)))
        y = InstanceNorm(name="in2")(ConvLayer(self.features, 3, name="conv2")(y))
        return x + y


class UpsampleConvLayer(nn.Module):
    """Nearest 2x upsampling, then :class:`ConvLayer` (stride 1): a resize-convolution."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return ConvLayer(self.features, self.kernel, name="conv")(upsample_nearest(x))


class TransformerNet(nn.Module):
    """The Johnson et al. image transformation network: (B, H, W, 3) RGB in [0, 1] -> (B, H, W, 3), for H and W
    multiples of :data:`MULTIPLE` (:func:`stylize` takes any size).

    Attributes:
      channels: the widths of the three down-sampling convolutions (32, 64, 128 in the paper).
      residual_blocks: how many residual blocks of ``channels[-1]`` (5 in the paper).
    """

    channels: tuple[int, int, int] = (32, 64, 128)
    residual_blocks: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c1, c2, c3 = self.channels
        y = nn.relu(InstanceNorm(name="in1")(ConvLayer(c1, 9, name="conv1")(x)))
        y = nn.relu(InstanceNorm(name="in2")(ConvLayer(c2, 3, 2, name="conv2")(y)))
        y = nn.relu(InstanceNorm(name="in3")(ConvLayer(c3, 3, 2, name="conv3")(y)))
        for i in range(1, self.residual_blocks + 1):
            y = ResidualBlock(c3, name=f"res{i}")(y)
        y = nn.relu(InstanceNorm(name="in4")(UpsampleConvLayer(c2, name="up1")(y)))
        y = nn.relu(InstanceNorm(name="in5")(UpsampleConvLayer(c1, name="up2")(y)))
        return ConvLayer(3, 9, name="conv4")(y)


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """(B, H, W, C) padded at the bottom and right by reflection up to multiples of ``multiple`` (at least
    ``multiple``): the input a network with that total stride returns at its own size. Sides too short to
    reflect that far are padded by repeating the edge."""
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    mode = "reflect" if ph < h and pw < w else "edge"
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)


def stylize(params: Any, images: jax.Array, net: TransformerNet | None = None) -> jax.Array:
    """The trained network applied to (B, H, W, 3) RGB in [0, 1] of any H, W: the input padded to multiples of
    4 (:func:`pad_to_multiple`), the output cropped back to (B, H, W, 3). Not clipped."""
    net = net or TransformerNet()
    h, w = images.shape[1:3]
    return net.apply(params, pad_to_multiple(images, MULTIPLE))[:, :h, :w]


def init_params(key: jax.Array, net: TransformerNet | None = None, size: int = 32) -> Any:
    """Freshly initialised parameters (Flax's default initialisers) of ``net`` (default :class:`TransformerNet`)."""
    net = net or TransformerNet()
    return net.init(key, jnp.zeros((1, size, size, 3), jnp.float32))
