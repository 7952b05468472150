"""Model files of the feed-forward networks: ``WORKDIR/model.msgpack``, written by ``python -m nst_jax.train``.

msgpack (no pickle, so loading runs no code), like the VGG-19 weight files (:mod:`nst_jax.weights`)::

    {"format": "nst_jax.feedforward", "version": 1, "net": "johnson" | "adain", "source": <VGG preprocessing>,
     "config": <the training config, JSON>, "step": <training steps>, "params_sha256": <hex>,
     "params": {"net": <the network's parameters>, "encoder": <adain: VGG-19 conv1_1 ... conv4_1>}}

``params_sha256`` is :func:`nst_jax.weights.params_sha256` of ``params``: :func:`load` recomputes it, so a flipped
bit in a kernel is refused instead of giving silently wrong images. The adain file carries its encoder, so
applying it needs no VGG weights file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import vgg, weights
from nst_jax.atomic import write_bytes
from nst_jax.errors import ModelError
from nst_jax.nets import NETS, adain, johnson

FORMAT = "nst_jax.feedforward"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model file: the network kind, its parameters, the VGG source its training used, the training
    config (a dict) and step count."""

    net: str
    params: dict[str, Any]  # {"net": ..., "encoder": ... (adain)}
    source: str
    config: dict[str, Any]
    step: int
    path: str = ""
    params_sha256: str = ""


def _numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), tree)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        out.update(_flat(v, name) if isinstance(v, Mapping) else {name: tuple(np.shape(v))})
    return out


def expected_shapes(net: str, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """{path: shape} of every parameter a model file of ``net`` built from ``config`` holds."""
    if net == "johnson":
        shapes = {"net": jax.eval_shape(lambda k: johnson.init_params(k, johnson_net(config)), jax.random.key(0))}
    else:
        shapes = {"net": jax.eval_shape(adain.init_params, jax.random.key(0)),
                  "encoder": adain.encoder_params(vgg.param_shapes())}
    return _flat(shapes)


def johnson_net(config: Mapping[str, Any]) -> johnson.TransformerNet:
    """The :class:`~nst_jax.nets.johnson.TransformerNet` a training config describes."""
    return johnson.TransformerNet(channels=tuple(config.get("johnson_channels", (32, 64, 128))),
                                  residual_blocks=int(config.get("johnson_residual_blocks", 5)))


def dumps(net: str, params: Mapping[str, Any], source: str, config: Mapping[str, Any], step: int) -> bytes:
    """The model file's bytes; ``params`` is {"net": ..., "encoder": ... (adain)}."""
    from flax import serialization

    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, not {net!r}")
    tree = _numpy(dict(params))
    return serialization.msgpack_serialize({
        "format": FORMAT, "version": VERSION, "net": net, "source": source,
        "config": json.dumps(dict(config), sort_keys=True, default=str), "step": int(step),
        "params_sha256": weights.params_sha256(tree), "params": tree,
    })


def save(path: str, net: str, params: Mapping[str, Any], source: str, config: Mapping[str, Any], step: int) -> None:
    """Writes a model file atomically (a reader sees the old file or the new one)."""
    write_bytes(path, dumps(net, params, source, config, step), what="model file")


def load(path: str) -> Model:
    """Reads and checks a model file. Raises :class:`~nst_jax.errors.ModelError` (one line) unless it is an intact
    model file: readable, msgpack, format, version, net kind, parameter names and shapes, then the digest."""
    from flax import serialization

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelError(f"model file {path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"model file {path}: is a folder, not a file") from None
    except OSError as e:
        raise ModelError(f"model file {path}: {e.strerror or e}") from None
    try:
        tree = serialization.msgpack_restore(data)
    except Exception:  # msgpack raises several unrelated types on corrupt input
        tree = None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ModelError(f"model file {path}: not an nst_jax feed-forward model (python -m nst_jax.train writes "
                         f"WORKDIR/model.msgpack)")
    if tree.get("version") != VERSION:
        raise ModelError(f"model file {path}: format version {tree.get('version')} is not {VERSION}")
    net, source = tree.get("net"), tree.get("source")
    if net not in NETS:
        raise ModelError(f"model file {path}: unknown network {net!r} (known: {', '.join(NETS)})")
    if source not in weights.SOURCES:
        raise ModelError(f"model file {path}: unknown VGG source {source!r}")
    try:
        config = json.loads(tree.get("config", ""))
    except (TypeError, ValueError):
        raise ModelError(f"model file {path}: its training config is not JSON") from None
    params = tree.get("params")
    if not isinstance(params, dict):
        raise ModelError(f"model file {path}: no parameters")
    expected, got = expected_shapes(net, config), _flat(params)
    if expected != got:
        missing = sorted(set(expected) - set(got))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        unexpected = sorted(set(got) - set(expected))
        what = "; ".join(f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                         for label, names in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if names)
        raise ModelError(f"model file {path}: not the parameters of a {net} network ({what})")
    params = _numpy(params)
    actual = weights.params_sha256(params)
    if tree.get("params_sha256") != actual:
        raise ModelError(f"model file {path}: parameters do not match their recorded digest (damaged file); "
                         f"train again or copy the file again")
    return Model(net=net, params=params, source=source, config=config, step=int(tree.get("step", 0)), path=path,
                 params_sha256=actual)


def device_params(model: Model) -> dict[str, Any]:
    """The model's parameters as JAX arrays."""
    return jax.tree_util.tree_map(jnp.asarray, model.params)
