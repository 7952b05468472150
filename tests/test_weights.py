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


# --- the parameters' digest ----------------------------------------------------------------------------------


def _independent_digest(params) -> str:
    """params_sha256's documented rule, written out again: sorted paths; path, NUL, shape, NUL, float32 LE bytes."""
    import hashlib

    leaves = {f"params/{layer}/{kind}": array for layer, kinds in params["params"].items()
              for kind, array in kinds.items()}
    digest = hashlib.sha256()
    for path in sorted(leaves):
        array = np.asarray(leaves[path], dtype=np.float32)
        digest.update(path.encode() + b"\0" + repr(tuple(array.shape)).encode() + b"\0")
        digest.update(array.astype("<f4").tobytes(order="C"))
    return digest.hexdigest()


def test_file_records_the_digest_of_its_parameters(params, saved):
    tree = serialization.msgpack_restore(open(saved, "rb").read())
    assert tree["version"] == 2
    assert tree["params_sha256"] == _independent_digest(params)
    loaded = weights.load(saved)
    assert loaded.params_sha256 == _independent_digest(params)
    assert weights.params_sha256(params) == _independent_digest(params)


def test_digest_depends_on_names_and_shapes_not_only_bytes(params):
    swapped = {"params": {k: dict(v) for k, v in params["params"].items()}}
    a, b = swapped["params"]["conv3_2"], swapped["params"]["conv3_3"]
    a["kernel"], b["kernel"] = b["kernel"], a["kernel"]  # same shapes, same bytes overall, other places
    assert weights.params_sha256(swapped) != weights.params_sha256(params)
    flat = {"params": {"conv1_1": {"bias": np.zeros((2, 3), np.float32)}}}
    reshaped = {"params": {"conv1_1": {"bias": np.zeros((3, 2), np.float32)}}}
    assert weights.params_sha256(flat) != weights.params_sha256(reshaped)


def _flip_bit(data: bytes, array: np.ndarray, element: int, bit: int) -> bytes:
    """``data`` with one bit of ``array``'s ``element``-th float flipped, found where the file stores it."""
    raw = np.ascontiguousarray(array, "<f4").tobytes()
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) == -1  # stored once, byte for byte
    pos = at + 4 * element + bit // 8
    return data[:pos] + bytes([data[pos] ^ (1 << (bit % 8))]) + data[pos + 1:]


@pytest.mark.parametrize("layer,kind,element,bit", [("conv1_1", "bias", 0, 0), ("conv3_1", "kernel", 12345, 17),
                                                    ("conv5_4", "kernel", 2_359_295, 31)],
                         ids=["first-bias-lowest-bit", "middle-kernel-mantissa", "last-float-sign"])
def test_one_flipped_bit_in_the_float_data_is_refused(params, saved, tmp_path, layer, kind, element, bit):
    data = _flip_bit(open(saved, "rb").read(), params["params"][layer][kind], element, bit)
    damaged = tmp_path / "damaged.msgpack"
    damaged.write_bytes(data)
    # Still a well-formed file of the right shapes: only the digest can tell.
    weights.check_params(serialization.msgpack_restore(data)["params"])
    with pytest.raises(WeightsError) as e:
        weights.load(str(damaged))
    assert str(e.value) == (
        f"weights file {damaged}: parameters do not match their recorded digest (damaged file); convert again "
        f"with: python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth --output={damaged}"
    )


def test_damaged_digest_itself_is_refused(saved, tmp_path):
    data = open(saved, "rb").read()
    digest = serialization.msgpack_restore(data)["params_sha256"].encode()
    other = (b"0" if digest[:1] != b"0" else b"1") + digest[1:]
    (tmp_path / "d.msgpack").write_bytes(data.replace(digest, other))
    with pytest.raises(WeightsError, match="parameters do not match their recorded digest"):
        weights.load(str(tmp_path / "d.msgpack"))


def _tree(params, **fields) -> bytes:
    tree = {"format": weights.FORMAT, "version": weights.VERSION, "source": "torchvision", "origin": "",
            "params": params, **fields}
    return serialization.msgpack_serialize({k: v for k, v in tree.items() if v is not None})


@pytest.mark.parametrize(
    "origin,source,cached,command",
    [
        ("vgg19-dcbb9e9d.pth (sha256 dcbb9e9d" + "0" * 56 + ")", "torchvision", True, "python -m weights_converter"),
        ("mine.pth (sha256 " + "1" * 64 + ")", "torchvision", False,
         "python -m weights_converter --checkpoint=mine.pth --output={path}"),
        ("vgg19-d01eb7cb.pth (sha256 d01eb7cb" + "0" * 56 + ")", "caffe", True,
         "python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth"),
    ],
    ids=["downloaded", "own-checkpoint", "caffe"],
)
def test_version_1_file_is_refused_with_the_command_to_convert_again(params, tmp_path, monkeypatch, origin, source,
                                                                     cached, command):
    """A file written before the digest existed (version 1: no params_sha256) cannot prove itself."""
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
    path = weights.default_path(source) if cached else str(tmp_path / "elsewhere.msgpack")
    with open(path, "wb") as f:
        f.write(_tree(params, version=1, source=source, origin=origin))
    with pytest.raises(WeightsError) as e:
        weights.load(path)
    assert str(e.value) == (f"weights file {path}: format version 1 records no digest of its parameters, so damage "
                            f"to them cannot be detected; convert again with: {command.format(path=path)}")


def test_version_2_without_a_digest_is_refused(params, tmp_path):
    (tmp_path / "n.msgpack").write_bytes(_tree(params, params_sha256=None))
    with pytest.raises(WeightsError, match=r"n.msgpack: records no digest of its parameters; convert again with: "
                                           r"python -m weights_converter --output="):
        weights.load(str(tmp_path / "n.msgpack"))


def test_file_sha256_is_of_the_whole_file(saved):
    import hashlib

    assert weights.load(saved).sha256 == hashlib.sha256(open(saved, "rb").read()).hexdigest()


@pytest.mark.slow
def test_two_writers_of_one_path_leave_one_whole_file(params, tmp_path):
    """Threads saving different parameters to one path while a reader loads it: every read is one whole file."""
    import threading

    path = str(tmp_path / "w.msgpack")
    other = {"params": {k: {n: a + 1 for n, a in v.items()} for k, v in params["params"].items()}}
    digests = {weights.params_sha256(params), weights.params_sha256(other)}
    stop, seen, errors = threading.Event(), [], []

    def writer(p):
        for _ in range(3):
            weights.save(path, p, "torchvision", "race")

    def reader():
        while not stop.is_set():
            if os.path.exists(path):
                try:
                    seen.append(weights.load(path).params_sha256)
                except WeightsError as e:  # a torn file would be refused here
                    errors.append(str(e))

    threads = [threading.Thread(target=writer, args=(p,)) for p in (params, other)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join(timeout=60)
    assert errors == [] and seen and set(seen) <= digests
    assert os.listdir(tmp_path) == ["w.msgpack"]
