"""Huang & Belongie 2017 arbitrary style transfer: the VGG-19 encoder (:mod:`nst_jax.vgg`, frozen) up to
relu4_1, adaptive instance normalisation (AdaIN), and a decoder that mirrors the encoder.

    t = AdaIN(f(c), f(s)) = sigma(f(s)) (f(c) - mu(f(c))) / sigma(f(c)) + mu(f(s))
    T(c, s, alpha) = g(alpha t + (1 - alpha) f(c))

with f the encoder, g the decoder, mu and sigma the per-image per-channel mean and standard deviation over the
positions (the paper's eq. 5-6, the biased variance plus ``eps``). Several styles s_k with weights w_k are
interpolated as t = sum_k w_k AdaIN(f(c), f(s_k)) (the paper's section 7).

Decoder (Cin -> Cout, every convolution 3x3 with reflection padding and a ReLU but the last; nearest 2x
upsampling where the encoder pools)::

    dec4_1 512 -> 256, up, dec3_4 ... dec3_2 256 -> 256, dec3_1 256 -> 128, up, dec2_2 128 -> 128,
    dec2_1 128 -> 64, up, dec1_2 64 -> 64, dec1_1 64 -> 3

Images are RGB in [0, 1], NHWC; the encoder sees them preprocessed for its weights' source
(:func:`nst_jax.image.preprocess`). The decoder's output is RGB in nominal [0, 1], not clipped.

Reference: Huang, Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", ICCV
2017.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax import image, vgg
from nst_jax.nets.johnson import pad_to_multiple, reflect_pad, upsample_nearest

ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
"""The encoder's layers the paper's style loss reads; relu4_1 is the AdaIN layer."""
ADAIN_LAYER = "relu4_1"
MULTIPLE = 8
"""Three 2x poolings to relu4_1 and three 2x upsamplings back: sides that are multiples of 8 come back exactly."""
EPS = 1e-5

# (name, output channels, upsample before it), in the decoder's order.
_DECODER = (("dec4_1", 256, False), ("dec3_4", 256, True), ("dec3_3", 256, False), ("dec3_2", 256, False),
            ("dec3_1", 128, False), ("dec2_2", 128, True), ("dec2_1", 64, False), ("dec1_2", 64, True),
            ("dec1_1", 3, False))


def mean_std(x: jax.Array, eps: float = EPS) -> tuple[jax.Array, jax.Array]:
    """Per-image, per-channel mean and standard deviation over the positions of (B, H, W, C): two (B, 1, 1, C)
    arrays, sigma = sqrt(biased variance + eps)."""
    mu = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=(1, 2), keepdims=True)
    return mu, jnp.sqrt(var + eps)


def adain(content: jax.Array, style: jax.Array, eps: float = EPS) -> jax.Array:
    """Adaptive instance normalisation: content features (B, H, W, C) given the per-channel mean and standard
    deviation of style features (B, H', W', C). Returns (B, H, W, C)."""
    mu_c, sigma_c = mean_std(content, eps)
    mu_s, sigma_s = mean_std(style, eps)
    return sigma_s * (content - mu_c) / sigma_c + mu_s


class Decoder(nn.Module):
    """relu4_1 features (B, H/8, W/8, 512) -> RGB (B, H, W, 3): the encoder mirrored, pools replaced by nearest
    upsampling."""

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        x = t
        for i, (name, cout, up) in enumerate(_DECODER):
            if up:
                x = upsample_nearest(x)
            x = nn.Conv(cout, (3, 3), padding="VALID", name=name)(reflect_pad(x, 1))
            if i < len(_DECODER) - 1:
                x = nn.relu(x)
        return x


def encoder_params(vgg_params: Mapping[str, Any]) -> dict[str, Any]:
    """The VGG-19 parameters the encoder uses (conv1_1 ... conv4_1), from a full tree."""
    last = vgg.LAYERS.index("conv4_1")
    keep = [name for name in vgg.CONV_LAYERS if vgg.LAYERS.index(name) <= last]
    return {"params": {name: dict(vgg_params["params"][name]) for name in keep}}


def encode(encoder: Mapping[str, Any], rgb: jax.Array, source: str, pooling: str = "max",
           layers: Sequence[str] = (ADAIN_LAYER,)) -> dict[str, jax.Array]:
    """Encoder activations {layer: (B, H / 2**k, W / 2**k, C)} of (B, H, W, 3) RGB in [0, 1]."""
    return vgg.extract(encoder, image.preprocess(rgb, source), layers, pooling)


def decode(decoder: Any, t: jax.Array, net: Decoder | None = None) -> jax.Array:
    """The decoder's image (B, 8h, 8w, 3) of relu4_1 features (B, h, w, 512)."""
    return (net or Decoder()).apply(decoder, t)


def transfer_features(f_content: jax.Array, f_styles: Sequence[jax.Array], weights: Sequence[float] | jax.Array,
                      alpha: float | jax.Array) -> jax.Array:
    """alpha sum_k w_k AdaIN(f_content, f_styles[k]) + (1 - alpha) f_content: the decoder's input."""
    t = sum(w * adain(f_content, f) for w, f in zip(weights, f_styles, strict=True))
    return alpha * t + (1.0 - alpha) * f_content


def stylize(decoder: Any, encoder: Mapping[str, Any], content: jax.Array, styles: Sequence[jax.Array],
            weights: Sequence[float] | jax.Array = (1.0,), alpha: float | jax.Array = 1.0, *,
            source: str = "torchvision", pooling: str = "max") -> jax.Array:
    """T(content, styles, alpha) for (B, H, W, 3) content of any H, W and styles (B, H_k, W_k, 3) (each at least 8
    px a side): the content padded to multiples of 8, the result cropped back to (B, H, W, 3). Not clipped."""
    h, w = content.shape[1:3]
    f_c = encode(encoder, pad_to_multiple(content, MULTIPLE), source, pooling)[ADAIN_LAYER]
    f_s = [encode(encoder, s, source, pooling)[ADAIN_LAYER] for s in styles]
    return decode(decoder, transfer_features(f_c, f_s, weights, alpha))[:, :h, :w]


def init_params(key: jax.Array, size: int = 32) -> Any:
    """Freshly initialised decoder parameters (Flax's default initialisers)."""
    return Decoder().init(key, jnp.zeros((1, size // 8, size // 8, 512), jnp.float32))
