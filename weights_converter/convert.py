"""torchvision VGG-19 state dict -> the Flax parameter tree of :class:`nst_jax.vgg.VGG19`, and the file.

Key map (explicit, from :data:`nst_jax.vgg.TORCHVISION_INDEX`)::

    features.{i}.weight (O, I, 3, 3)  ->  params/conv{b}_{k}/kernel (3, 3, I, O)   (transpose(2, 3, 1, 0))
    features.{i}.bias   (O,)          ->  params/conv{b}_{k}/bias   (O,)
    classifier.*                      ->  dropped (the fully connected layers: about 480 MB, unused here)

Both weight sources (torchvision's IMAGENET1K_V1 file and the Caffe conversion ``vgg19-d01eb7cb.pth``) use
this layout; they differ only in the preprocessing they expect, recorded as the file's ``source``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from nst_jax import vgg, weights
from nst_jax.errors import WeightsError
from weights_converter.pth_reader import read_state_dict

DROPPED_PREFIX = "classifier."


@functools.cache
def _expected_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """``{layer: {"kernel": HWIO, "bias": (O,)}}`` from the Flax init (traced once, not allocated)."""
    tree = vgg.param_shapes()["params"]
    return {
        layer: {kind: tuple(leaf.shape) for kind, leaf in leaves.items()} for layer, leaves in tree.items()
    }


def key_map() -> dict[str, tuple[str, str]]:
    """``{torch key: (Flax layer, "kernel" | "bias")}`` for the 16 convolutions."""
    out = {}
    for name in vgg.CONV_LAYERS:
        index = vgg.TORCHVISION_INDEX[name]
        out[f"features.{index}.weight"] = (name, "kernel")
        out[f"features.{index}.bias"] = (name, "bias")
    return out


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """HWIO -> OIHW; a bias keeps its shape."""
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return flax_shape


def to_flax(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A torchvision ``vgg19().state_dict()`` (NumPy arrays) -> ``{"params": {conv: {kernel, bias}}}``.

    Args:
      state_dict: ``{key: array}``, e.g. from :func:`weights_converter.pth_reader.read_state_dict`;
        ``classifier.*`` keys are ignored.

    Returns:
      Float32 NumPy arrays: kernels (3, 3, C_in, C_out) HWIO, biases (C_out,), every shape checked against
      :func:`nst_jax.vgg.param_shapes`.

    Raises:
      WeightsError: naming every missing, unexpected or mis-shaped key, or a non-float / non-finite tensor.
    """
    expected = _expected_shapes()
    mapping = key_map()
    kept = [k for k in state_dict if not k.startswith(DROPPED_PREFIX)]
    missing = [k for k in mapping if k not in state_dict]
    unexpected = [k for k in kept if k not in mapping]
    wrong, bad = [], []
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, (layer, kind) in mapping.items():
        if key not in state_dict:
            continue
        array = np.asarray(state_dict[key])
        want = _torch_shape(expected[layer][kind])
        if array.shape != want:
            wrong.append(f"{key} {array.shape} (expected {want})")
            continue
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            bad.append(f"{key} has dtype {array.dtype}")
            continue
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            bad.append(f"{key} holds NaN or infinite values")
            continue
        params.setdefault(layer, {})[kind] = array.transpose(2, 3, 1, 0).copy() if kind == "kernel" else array
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        shown = unexpected[:20] + ([f"... ({len(unexpected) - 20} more)"] if len(unexpected) > 20 else [])
        problems.append("unexpected " + ", ".join(shown))
    if wrong:
        problems.append("wrong shape " + ", ".join(wrong))
    if bad:
        problems.append("; ".join(bad))
    if problems:
        raise WeightsError("not a torchvision VGG-19 state dict: " + "; ".join(problems))
    return {"params": params}


def convert(checkpoint: str, output: str, source: str) -> str:
    """Reads ``checkpoint`` (a ``.pth``), converts it and writes the parameter file ``output`` atomically.

    Args:
      checkpoint: a ``torch.save``-d VGG-19 state dict; read without torch and without running its pickle.
      output: the ``.msgpack`` file to write (see :mod:`nst_jax.weights`); its folder is created if missing.
      source: ``"torchvision"`` or ``"caffe"``: which preprocessing these weights expect.

    Returns:
      ``output``.
    """
    if source not in weights.SOURCES:
        raise WeightsError(f"source must be one of {', '.join(weights.SOURCES)}, not {source!r}")
    state_dict = read_state_dict(checkpoint, keep=lambda key: not key.startswith(DROPPED_PREFIX))
    try:
        params = to_flax(state_dict)
    except WeightsError as e:
        raise WeightsError(f"checkpoint {checkpoint}: {e}") from None
    origin = f"{os.path.basename(checkpoint)} (sha256 {weights.file_sha256(checkpoint)})"
    weights.save(output, params, source, origin)
    return output
