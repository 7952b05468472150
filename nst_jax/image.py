"""Image files in and out, and the pixel preprocessing each weight source expects.

Arrays here are float32 RGB in [0, 1], (H, W, 3) for one image or (B, H, W, 3) for a batch.

Preprocessing:
  * ``torchvision`` (ImageNet-trained torchvision weights): RGB in [0, 1], minus the ImageNet mean, divided by
    the ImageNet standard deviation (``torchvision.transforms.Normalize``).
  * ``caffe`` (the original VGG Caffe weights, e.g. jcjohnson's ``vgg19-d01eb7cb.pth``): BGR, 0-255, minus the
    Caffe mean pixel (103.939, 116.779, 123.68 in BGR order); the paper's official code used these.
"""

from __future__ import annotations

import os
import warnings

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

from nst_jax.atomic import write_atomic
from nst_jax.errors import ImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

MAX_PIXELS = 16384 * 16384
"""Largest image (width x height) we decode: a guard against decompression bombs."""

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def preprocess(images01: jnp.ndarray, source: str) -> jnp.ndarray:
    """RGB in [0, 1] (..., 3) -> the network input for ``source`` (``"torchvision"`` or ``"caffe"``)."""
    if source == "torchvision":
        return (images01 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    if source == "caffe":
        return (images01 * 255.0 - jnp.asarray(CAFFE_MEAN_RGB))[..., ::-1]
    raise ValueError(f"unknown weights source {source!r}: expected 'torchvision' or 'caffe'")


def deprocess(x: jnp.ndarray, source: str) -> jnp.ndarray:
    """Inverse of :func:`preprocess`: network input -> RGB in [0, 1] (not clipped)."""
    if source == "torchvision":
        return x * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
    if source == "caffe":
        return (x[..., ::-1] + jnp.asarray(CAFFE_MEAN_RGB)) / 255.0
    raise ValueError(f"unknown weights source {source!r}: expected 'torchvision' or 'caffe'")


def pixel_range(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of preprocessed values that correspond to RGB in [0, 1]."""
    low = np.asarray(preprocess(jnp.zeros(3), source))
    high = np.asarray(preprocess(jnp.ones(3), source))
    return np.minimum(low, high), np.maximum(low, high)


def to_rgb01(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) float32 RGB in [0, 1]; transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...
    return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: str, size: int | None = None, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Reads an image file as (H, W, 3) float32 RGB in [0, 1], upright (EXIF orientation applied).

    Args:
      path: the file.
      size: if given, resize so the long edge is ``size`` pixels, keeping the aspect ratio (antialiased).
      max_pixels: refuse images with more pixels than this (decompression bombs).

    Raises:
      ImageError: the file is missing, a folder, empty, not an image, truncated, corrupt or too large.
    """
    if not os.path.exists(path):
        raise ImageError(f"image {path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"image {path}: is a folder, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"image {path}: empty file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"image {path}: {w}x{h} pixels is over the limit of {max_pixels} pixels")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
            img = ImageOps.exif_transpose(img)
            rgb = to_rgb01(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image {path}: too many pixels (decompression bomb guard)") from None
    except Image.DecompressionBombWarning:
        raise ImageError(f"image {path}: too many pixels (decompression bomb guard)") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"image {path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"image {path}: cannot be decoded ({reason})") from None
    if size is not None:
        rgb = resize_long_edge(rgb, size)
    return rgb


def resized_shape(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) with the long edge ``size``, the aspect ratio kept, each side at least 1."""
    h, w = hw
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (h, w, 3), antialiased (Lanczos on downscale, bicubic on upscale)."""
    h, w = hw
    if rgb.shape[:2] == (h, w):
        return rgb.astype(np.float32)
    resample = Image.LANCZOS if h * w < rgb.shape[0] * rgb.shape[1] else Image.BICUBIC
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c], np.float32), mode="F").resize((w, h), resample))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_long_edge(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, 3) so its long edge is ``size``, keeping the aspect ratio."""
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    return resize(rgb, resized_shape(rgb.shape[:2], size))


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(rgb, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str, rgb: np.ndarray, *, quality: int = 95) -> None:
    """Writes (H, W, 3) RGB in [0, 1] as PNG or JPEG (by extension), atomically: a temporary file in the same
    folder, then a rename, so a reader never sees half an image. The folder is created if missing."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SAVE_FORMATS:
        raise ImageError(f"output {path}: unsupported extension {ext or '(none)'}; use .png, .jpg or .jpeg")
    img = Image.fromarray(to_uint8(rgb), mode="RGB")
    kwargs = {"quality": quality} if SAVE_FORMATS[ext] == "JPEG" else {}
    write_atomic(path, lambda f: img.save(f, format=SAVE_FORMATS[ext], **kwargs), what="output")
