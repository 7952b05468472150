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
import re
import warnings
from typing import IO

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

from nst_jax.atomic import write_atomic
from nst_jax.errors import ImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

MAX_PIXELS = 12288 * 12288
"""Largest image (width x height) we decode: a guard against decompression bombs. Below Pillow's own hard limit
(2 x ``Image.MAX_IMAGE_PIXELS``, about 179 M pixels), so this is the limit that applies."""

MIN_INPUT_SIDE = 8
"""Smallest side (px) of a content, style or init image file: anything smaller holds no structure to transfer
(a 1x1 image is one colour), however far it is enlarged."""

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


def _format_of(prefix: bytes) -> str | None:
    """The Pillow format whose signature ``prefix`` (a file's first bytes) carries, if any."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if accept is not None and accept(prefix):
            return name
    return None


def _why_unidentified(f: IO[bytes]) -> str:
    """Why Pillow could not identify an open file: a known signature whose decoder refused the file is a corrupt
    file of that format (e.g. a PNG header with a bad checksum), anything else is not an image."""
    f.seek(0)
    fmt = _format_of(f.read(16))
    if fmt is None:
        return "not an image file Pillow can read"
    factory = Image.OPEN[fmt][0]
    f.seek(0)
    try:
        factory(f, "").close()  # raises the reason that Image.open keeps to itself
    except Exception as e:  # decoders raise many types; only the text is wanted
        return f"cannot be decoded (corrupt {fmt} file: {_reason(e)})"
    return f"cannot be decoded (corrupt {fmt} file)"


def _reason(e: BaseException) -> str:
    """An exception's first line, without Pillow's bytes quoting: ``broken PNG file (bad header checksum in
    b'IHDR')`` -> ``bad header checksum in IHDR``."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = re.sub(r"b'([^']*)'", r"\1", text)
    return re.sub(r"^broken PNG file \((.*)\)$", r"\1", text)


def load_image(path: str, size: int | None = None, *, max_pixels: int = MAX_PIXELS, min_side: int = 1
               ) -> np.ndarray:
    """Reads an image file as (H, W, 3) float32 RGB in [0, 1], upright (EXIF orientation applied).

    Any mode Pillow reads is accepted (8/16-bit grey, palette with transparency, RGBA, CMYK, ...); see
    :func:`to_rgb01`. PNG chunk checksums are verified (Pillow's decoder alone skips them).

    Args:
      path: the file.
      size: if given, resize so the long edge is ``size`` pixels, keeping the aspect ratio (antialiased).
      max_pixels: refuse images with more pixels than this (decompression bombs).
      min_side: refuse images whose short side (after EXIF rotation) has fewer pixels than this.

    Raises:
      ImageError: the file is missing, a folder, empty, unreadable, not an image, truncated, corrupt, too large
        or too small.
    """
    if not os.path.exists(path):
        raise ImageError(f"image {path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"image {path}: is a folder, not an image file")
    if not os.path.isfile(path):
        raise ImageError(f"image {path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"image {path}: empty file")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageError(f"image {path}: cannot be read ({e.strerror or e})") from None
    with f:
        try:
            with warnings.catch_warnings():
                # Pillow warns above MAX_IMAGE_PIXELS; _check_pixels applies our own limit instead.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    _check_pixels(path, img, max_pixels)
                    if img.format == "PNG":
                        try:
                            img.verify()  # chunk checksums; verify() leaves the image unusable: open it again
                        except Exception as e:  # SyntaxError on a bad checksum, OSError on a cut file
                            raise ImageError(
                                f"image {path}: cannot be decoded (corrupt PNG file: {_reason(e)})") from None
                f.seek(0)
                with Image.open(f) as img:
                    img.load()
                    img = ImageOps.exif_transpose(img)
        except ImageError:
            raise
        except Image.DecompressionBombError as e:  # over Pillow's hard limit, refused before our check
            claimed = re.search(r"\((\d+) pixels\)", str(e))
            count = f"{claimed.group(1)} pixels" if claimed else "over Pillow's limit"
            raise ImageError(f"image {path}: too many pixels ({count}; the limit is {max_pixels}; decompression "
                             "bomb guard)") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"image {path}: {_why_unidentified(f)}") from None
        except Exception as e:  # Pillow's decoders raise many types on corrupt input
            raise ImageError(f"image {path}: cannot be decoded ({_reason(e)})") from None
    if min(img.size) < min_side:
        raise ImageError(f"image {path}: {img.size[0]}x{img.size[1]} px is too small; "
                         f"images need at least {min_side} px a side")
    try:
        rgb = to_rgb01(img)
    except (OSError, ValueError) as e:  # modes Pillow cannot convert to RGB
        raise ImageError(f"image {path}: cannot be converted to RGB ({_reason(e)})") from None
    if size is not None:
        rgb = resize_long_edge(rgb, size)
    return rgb


def _check_pixels(path: str, img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"image {path}: {w}x{h} pixels is over the limit of {max_pixels} pixels "
                         "(decompression bomb guard)")


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


def to_rgb(x: np.ndarray, source: str) -> np.ndarray:
    """A preprocessed image back to (H, W, 3) float32 RGB in [0, 1]."""
    return np.clip(np.asarray(deprocess(jnp.asarray(x), source)), 0.0, 1.0).astype(np.float32)


def denoise(rgb: np.ndarray, weight: float) -> np.ndarray:
    """The official code's final TV denoising of a saved image: scikit-image's ``denoise_tv_chambolle`` with
    ``weight`` (the official 0.02) over the colour channels, clipped to [0, 1]; ``weight`` 0: ``rgb`` as is.

    rgb: (H, W, 3) float32 RGB in [0, 1] -> the same shape and type. scikit-image is the optional extra
    ``paper`` (``pip install -e '.[paper]'``); :func:`nst_jax.config.check` says so before a run needs it.
    """
    if not weight:
        return rgb
    from skimage.restoration import denoise_tv_chambolle  # optional: only runs that denoise need it

    out = denoise_tv_chambolle(np.asarray(rgb, np.float64), weight=float(weight), channel_axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
