"""The nst_jax parameter file: round trip, corrupt files, checks naming each problem, resolution."""

from __future__ import annotations

import os

import msgpack
import numpy as np
import pytest
from flax import serialization

from nst_jax import vgg, weights
from nst_jax.errors import WeightsError


@pytest.fixture(scope="module")
def params():
    """Small deterministic VGG-19 parameters (float32 NumPy), not a pretrained network."""
    rng = np.random.default_rng(0)
    shapes = vgg.param_shapes()["params"]
    return {
        "params": {
            layer: {kind: rng.standard_normal(leaf.shape).astype(np.float32) for kind, leaf in leaves.items()}
            for layer, leaves in shapes.items()
        }
    }


@pytest.fixture(scope="module")
def saved(params, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("w") / "vgg19.msgpack")
    weights.save(path, params, "caffe", "unit test")
    return path


def test_round_trip(params, saved):
    loaded = weights.load(saved)
    assert (loaded.source, loaded.origin, loaded.path) == ("caffe", "unit test", saved)
    assert loaded.sha256 == weights.file_sha256(saved)
    for layer in vgg.CONV_LAYERS:
        for kind in ("kernel", "bias"):
            got = loaded.params["params"][layer][kind]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, params["params"][layer][kind])
    assert os.listdir(os.path.dirname(saved)) == ["vgg19.msgpack"]  # written atomically: no temporary left


def test_save_refuses_bad_source_and_bad_params(params, tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        weights.save(str(tmp_path / "x.msgpack"), params, "imagenet", "")
    broken = {"params": dict(params["params"])}
    del broken["params"]["conv5_4"]
    with pytest.raises(WeightsError, match="missing params/conv5_4/bias, params/conv5_4/kernel"):
        weights.save(str(tmp_path / "x.msgpack"), broken, "torchvision", "")
    assert not os.path.exists(tmp_path / "x.msgpack")


def test_check_params_names_every_problem(params):
    bad = {"params": {k: dict(v) for k, v in params["params"].items()}}
    del bad["params"]["conv1_1"]["bias"]
    bad["params"]["conv6_1"] = {"kernel": np.zeros((3, 3, 512, 512), np.float32)}
    bad["params"]["conv2_2"]["kernel"] = np.zeros((3, 3, 64, 128), np.float32)
    with pytest.raises(WeightsError) as e:
        weights.check_params(bad)
    assert str(e.value) == (
        "not VGG-19 parameters: missing params/conv1_1/bias; unexpected params/conv6_1/kernel; "
        "wrong shape params/conv2_2/kernel (3, 3, 64, 128) (expected (3, 3, 128, 128))"
    )
    weights.check_params(params)  # the intact tree passes


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda data: b"", "empty file"),
        (lambda data: data[: len(data) // 2], "not an nst_jax weights file"),
        (lambda data: b"\x00\x01garbage" * 100, "not an nst_jax"),
        (lambda data: msgpack.packb({"format": "something.else"}), "not an nst_jax VGG-19 weights file"),
        (lambda data: msgpack.packb([1, 2, 3]), "not an nst_jax VGG-19 weights file"),
        (
            lambda data: serialization.msgpack_serialize({"format": weights.FORMAT, "version": 99}),
            "format version 99",
        ),
        (
            lambda data: serialization.msgpack_serialize(
                {"format": weights.FORMAT, "version": weights.VERSION, "source": "imagenet"}
            ),
            "unknown source 'imagenet'",
        ),
        (
            lambda data: serialization.msgpack_serialize(
                {"format": weights.FORMAT, "version": weights.VERSION, "source": "caffe"}
            ),
            "no parameters",
        ),
    ],
    ids=["empty", "truncated", "garbage", "other-format", "list", "version", "source", "no-params"],
)
def test_load_refuses_bad_files(saved, tmp_path, make, message):
    path = tmp_path / "bad.msgpack"
    path.write_bytes(make(open(saved, "rb").read()))
    with pytest.raises(WeightsError, match=message):
        weights.load(str(path))


def test_load_refuses_wrong_shapes(params, tmp_path):
    tree = {"params": {k: dict(v) for k, v in params["params"].items()}}
    tree["params"]["conv3_3"]["bias"] = np.zeros(7, np.float32)
    data = serialization.msgpack_serialize(
        {
            "format": weights.FORMAT,
            "version": weights.VERSION,
            "source": "caffe",
            "origin": "",
            "params": tree,
        }
    )
    (tmp_path / "shape.msgpack").write_bytes(data)
    with pytest.raises(WeightsError, match=r"wrong shape params/conv3_3/bias \(7,\) \(expected \(256,\)\)"):
        weights.load(str(tmp_path / "shape.msgpack"))


def test_load_missing_and_folder(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        weights.load(str(tmp_path / "absent.msgpack"))
    with pytest.raises(WeightsError, match="is a folder"):
        weights.load(str(tmp_path))


def test_cache_dir_and_default_path(tmp_path, monkeypatch):
    monkeypatch.delenv("NST_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == str(tmp_path / "xdg" / "nst_jax")
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "mine"))
    assert weights.default_path("caffe") == str(tmp_path / "mine" / "vgg19-caffe.msgpack")
    with pytest.raises(ValueError, match="source must be one of"):
        weights.default_path("imagenet")


def test_resolve(saved, tmp_path, monkeypatch):
    assert weights.resolve(saved) == saved
    monkeypatch.setenv("NST_JAX_CACHE", os.path.dirname(saved))
    with pytest.raises(WeightsError, match="create them with: python -m weights_converter"):
        weights.resolve(None)  # the cache holds vgg19.msgpack, not vgg19-torchvision.msgpack
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
    os.symlink(saved, tmp_path / "vgg19-caffe.msgpack")
    assert weights.resolve(None, "caffe") == str(tmp_path / "vgg19-caffe.msgpack")
