"""VGG-19 parameter files: format, cache folder and resolution.

A parameter file is msgpack (no pickle, so loading it runs no code) holding::

    {"format": "nst_jax.vgg19", "version": 1, "source": "torchvision" | "caffe",
     "origin": <what it was converted from>, "params": {"params": {"conv1_1": {"kernel", "bias"}, ...}}}

``source`` decides the preprocessing (:func:`nst_jax.image.preprocess`), so the pixels always match the
weights. Files are written by ``python -m weights_converter``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import serialization

from nst_jax import vgg
from nst_jax.atomic import write_bytes
from nst_jax.errors import WeightsError

FORMAT = "nst_jax.vgg19"
VERSION = 1
SOURCES = ("torchvision", "caffe")


@dataclasses.dataclass(frozen=True)
class Weights:
    """Loaded VGG-19 parameters and where they came from."""

    params: dict[str, Any]
    source: str
    origin: str
    path: str
    sha256: str


def cache_dir() -> str:
    """``$NST_JAX_CACHE``, else ``$XDG_CACHE_HOME/nst_jax``, else ``~/.cache/nst_jax``."""
    if os.environ.get("NST_JAX_CACHE"):
        return os.environ["NST_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nst_jax")


def default_path(source: str = "torchvision") -> str:
    """Where the converter puts, and the main program looks for, the weights of ``source``."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    return os.path.join(cache_dir(), f"vgg19-{source}.msgpack")


def convert_command(source: str = "torchvision") -> str:
    """The exact command that creates :func:`default_path` for ``source``."""
    if source == "caffe":
        return "python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth"
    return "python -m weights_converter"


def resolve(path: str | None, source: str = "torchvision") -> str:
    """An explicit ``path`` if given, else the cached file for ``source``; a clear error if neither exists."""
    if path:
        if not os.path.exists(path):
            raise WeightsError(f"weights file {path}: no such file")
        if os.path.isdir(path):
            raise WeightsError(f"weights file {path}: is a folder, not a file")
        return path
    cached = default_path(source)
    if not os.path.isfile(cached):
        raise WeightsError(
            f"no VGG-19 weights at {cached}; create them with: {convert_command(source)} "
            "(or pass --weights=FILE)"
        )
    return cached


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_params(params: Mapping[str, Any]) -> None:
    """Raises :class:`WeightsError` naming every missing, unexpected or mis-shaped parameter."""
    expected = _flat(vgg.param_shapes())
    got = _flat(params)
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [
        f"{k} {tuple(np.shape(got[k]))} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(got))
        if tuple(np.shape(got[k])) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected))
    if wrong:
        problems.append("wrong shape " + ", ".join(wrong))
    if problems:
        raise WeightsError("not VGG-19 parameters: " + "; ".join(problems))


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flat(value, name))
        else:
            flat[name] = value
    return flat


def dumps(params: Mapping[str, Any], source: str, origin: str) -> bytes:
    """Serialises parameters (float32 arrays) with their source; checks them first."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    check_params(params)
    as_np = {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in params["params"].items()}
    return serialization.msgpack_serialize(
        {"format": FORMAT, "version": VERSION, "source": source, "origin": origin, "params": {"params": as_np}}
    )


def save(path: str, params: Mapping[str, Any], source: str, origin: str) -> None:
    """Writes a parameter file atomically (temporary file in the same folder, then rename)."""
    write_bytes(path, dumps(params, source, origin), what="weights file")


def load(path: str) -> Weights:
    """Reads and checks a parameter file. Raises :class:`WeightsError` on anything but a VGG-19 file."""
    path = resolve(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WeightsError(f"weights file {path}: {e.strerror or e}") from None
    if not data:
        raise WeightsError(f"weights file {path}: empty file")
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise WeightsError(
            f"weights file {path}: not an nst_jax weights file, or truncated or corrupt ({reason}); "
            f"convert a .pth with: {convert_command()} --checkpoint=FILE.pth"
        ) from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise WeightsError(f"weights file {path}: not an nst_jax VGG-19 weights file")
    if tree.get("version") != VERSION:
        raise WeightsError(f"weights file {path}: format version {tree.get('version')} is not {VERSION}")
    source = tree.get("source")
    if source not in SOURCES:
        raise WeightsError(f"weights file {path}: unknown source {source!r}")
    params = tree.get("params")
    if not isinstance(params, dict):
        raise WeightsError(f"weights file {path}: no parameters")
    try:
        check_params(params)
    except WeightsError as e:
        raise WeightsError(f"weights file {path}: {e}") from None
    params = {"params": {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in params["params"].items()}}
    return Weights(params=params, source=source, origin=str(tree.get("origin", "")), path=path,
                   sha256=file_sha256(path))


# sha256 prefixes carried in the published files' names (torchvision's convention).
KNOWN_FILES = {"dcbb9e9d": "ImageNet VGG-19 (torchvision IMAGENET1K_V1)", "d01eb7cb": "ImageNet VGG-19 (Caffe)"}


def describe(weights: Weights) -> str:
    """One line naming the weights, saying plainly when they are not a published pretrained file (recognised
    by the SHA-256 of the .pth they were converted from, not by its name)."""
    origin, _, digest = weights.origin.partition(" (sha256 ")
    known = next((name for prefix, name in KNOWN_FILES.items() if digest.startswith(prefix)), None)
    what = known or "not a published pretrained file"
    return (f"{what}: {weights.source} weights {os.path.basename(weights.path)} (sha256 {weights.sha256[:12]}) "
            f"from {origin}")
