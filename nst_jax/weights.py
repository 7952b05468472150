"""VGG-19 parameter files: format, cache folder and resolution.

A parameter file is msgpack (no pickle, so loading it runs no code) holding::

    {"format": "nst_jax.vgg19", "version": 2, "source": "torchvision" | "caffe",
     "origin": <what it was converted from>, "params_sha256": <hex, see params_sha256()>,
     "params": {"params": {"conv1_1": {"kernel", "bias"}, ...}}}

``source`` decides the preprocessing (:func:`nst_jax.image.preprocess`), so the pixels always match the
weights. ``params_sha256`` lets :func:`load` prove the float data intact: a flipped bit inside a kernel still
parses as msgpack and passes every shape check, and would otherwise give silently wrong features. Files of
version 1 (no digest) are refused with the command that converts again: they cannot be verified, and accepting
them would leave the hole the digest closes. Files are written by ``python -m weights_converter``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np

from nst_jax.atomic import write_bytes
from nst_jax.errors import WeightsError

FORMAT = "nst_jax.vgg19"
VERSION = 2  # 2 added params_sha256; version 1 files are refused by load() with the command to convert again
SOURCES = ("torchvision", "caffe")

# sha256 prefixes carried in the published files' names (torchvision's convention).
KNOWN_FILES = {"dcbb9e9d": "ImageNet VGG-19 (torchvision IMAGENET1K_V1)", "d01eb7cb": "ImageNet VGG-19 (Caffe)"}
_DOWNLOADED = "dcbb9e9d"  # the file `python -m weights_converter` downloads when given no --checkpoint


@dataclasses.dataclass(frozen=True)
class Weights:
    """Loaded VGG-19 parameters and where they came from."""

    params: dict[str, Any]
    source: str
    origin: str
    path: str
    sha256: str  # of the whole file: what run records and checkpoint fingerprints name
    params_sha256: str = ""  # of the parameters alone (:func:`params_sha256`), verified by :func:`load`


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


def convert_command(source: str = "torchvision", *, checkpoint: str | None = None, output: str | None = None) -> str:
    """The exact command that creates :func:`default_path` for ``source`` (or ``output``, from ``checkpoint``).

    Without ``checkpoint``, torchvision's weights are downloaded and the Caffe ones are read from their published
    file name; ``--output`` is added only where ``output`` is not the default path.
    """
    parts = ["python -m weights_converter"]
    if source == "caffe":
        parts.append("--source=caffe")
        checkpoint = checkpoint or "vgg19-d01eb7cb.pth"
    if checkpoint:
        parts.append(f"--checkpoint={shlex.quote(checkpoint)}")
    if output and os.path.abspath(output) != os.path.abspath(default_path(source)):
        parts.append(f"--output={shlex.quote(output)}")
    return " ".join(parts)


def _reconvert_command(path: str, source: Any, origin: Any) -> str:
    """The command that writes ``path`` again from what it was made from (its ``origin``): the download for
    torchvision's published file, else the checkpoint the origin names, else :func:`convert_command`."""
    source = source if source in SOURCES else "torchvision"
    name, _, digest = str(origin or "").partition(" (sha256 ")
    downloaded = source == "torchvision" and digest.startswith(_DOWNLOADED)
    return convert_command(source, checkpoint=name if digest and name and not downloaded else None, output=path)


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
    """Hex SHA-256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_params(params: Mapping[str, Any]) -> None:
    """Raises :class:`WeightsError` naming every missing, unexpected or mis-shaped parameter."""
    from nst_jax import vgg  # here, not above: see _serialization

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


def _serialization() -> Any:
    """``flax.serialization``, imported on first use: it imports JAX, which the converter's download and its
    one-line errors do not need (cache_dir, resolve and convert_command stay cheap to import)."""
    from flax import serialization

    return serialization


def params_sha256(params: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a parameter tree. For each leaf, in sorted order of its path (``params/conv1_1/bias``,
    ``params/conv1_1/kernel``, ...): the path in UTF-8, a NUL byte, the shape as Python writes a tuple
    (``(64,)``), a NUL byte, then the values as little-endian float32 in C order.

    Paths and shapes are hashed with the values so that swapped or reshaped tensors change the digest too.
    Cost: one pass of SHA-256 over the bytes (``benchmarks/loop_and_load.py`` measures it).
    """
    digest = hashlib.sha256()
    flat = _flat(params)
    for name in sorted(flat):
        # hashlib reads the array's buffer as it is: no copy when it is already contiguous little-endian float32.
        array = np.ascontiguousarray(flat[name], dtype="<f4")
        digest.update(f"{name}\0{tuple(array.shape)}\0".encode())
        digest.update(array)
    return digest.hexdigest()


def dumps(params: Mapping[str, Any], source: str, origin: str) -> bytes:
    """Serialises parameters (float32 arrays) with their source and :func:`params_sha256`; checks them first."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    check_params(params)
    as_np = {"params": {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in params["params"].items()}}
    return _serialization().msgpack_serialize(
        {"format": FORMAT, "version": VERSION, "source": source, "origin": origin,
         "params_sha256": params_sha256(as_np), "params": as_np}
    )


def save(path: str, params: Mapping[str, Any], source: str, origin: str) -> None:
    """Writes a parameter file atomically (temporary file in the same folder, then rename): two writers of one
    path leave one whole file, a reader never sees half of one."""
    write_bytes(path, dumps(params, source, origin), what="weights file")


def load(path: str) -> Weights:
    """Reads and checks a parameter file. Raises :class:`WeightsError` on anything but an intact VGG-19 file.

    Checks, in order: readable, msgpack, format, version (1, which has no digest, is refused), source, names and
    shapes (:func:`check_params`), then :func:`params_sha256` against the digest the file records.
    """
    path = resolve(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WeightsError(f"weights file {path}: {e.strerror or e}") from None
    if not data:
        raise WeightsError(f"weights file {path}: empty file")
    try:
        tree = _serialization().msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise WeightsError(
            f"weights file {path}: not an nst_jax weights file, or truncated or corrupt ({reason}); "
            f"convert a .pth with: {convert_command()} --checkpoint=FILE.pth"
        ) from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise WeightsError(f"weights file {path}: not an nst_jax VGG-19 weights file")
    version = tree.get("version")
    if version == 1:
        command = _reconvert_command(path, tree.get("source"), tree.get("origin"))
        raise WeightsError(f"weights file {path}: format version 1 records no digest of its parameters, so damage "
                           f"to them cannot be detected; convert again with: {command}")
    if version != VERSION:
        raise WeightsError(f"weights file {path}: format version {version} is not {VERSION}")
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
    recorded = tree.get("params_sha256")
    actual = params_sha256(params)
    if recorded != actual:
        what = ("records no digest of its parameters" if not isinstance(recorded, str) else
                "parameters do not match their recorded digest (damaged file)")
        raise WeightsError(f"weights file {path}: {what}; convert again with: "
                           f"{_reconvert_command(path, source, tree.get('origin'))}")
    # The file's own digest from the bytes already in memory: no second read of 80 MB.
    return Weights(params=params, source=source, origin=str(tree.get("origin", "")), path=path,
                   sha256=hashlib.sha256(data).hexdigest(), params_sha256=actual)


def describe(weights: Weights) -> str:
    """One line naming the weights, saying plainly when they are not a published pretrained file (recognised
    by the SHA-256 of the .pth they were converted from, not by its name)."""
    origin, _, digest = weights.origin.partition(" (sha256 ")
    known = next((name for prefix, name in KNOWN_FILES.items() if digest.startswith(prefix)), None)
    what = known or "not a published pretrained file"
    return (f"{what}: {weights.source} weights {os.path.basename(weights.path)} (sha256 {weights.sha256[:12]}) "
            f"from {origin}")
