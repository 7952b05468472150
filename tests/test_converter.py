"""The torch-free .pth reader, the key map / shape checks and the converter's command line (the download is
tested against a local server in test_download.py)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import subprocess
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from conftest import run_converter

from nst_jax import vgg, weights
from nst_jax.errors import WeightsError
from weights_converter import pth_reader
from weights_converter.convert import convert, to_flax
from weights_converter.pth_reader import UnsafeCheckpointError, read_state_dict

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _bits(x: np.ndarray) -> np.ndarray:
    """The raw bits, so comparisons are exact for every dtype (NaN and -0.0 included)."""
    return np.ascontiguousarray(x).view(np.uint8)


def assert_same_as_torch(got: dict[str, np.ndarray], want: dict) -> None:
    assert list(got) == list(want)
    for key, tensor in want.items():
        ref = tensor.contiguous()
        if ref.dtype == torch.bfloat16:
            ref_np = ref.view(torch.int16).numpy()
            assert got[key].dtype.name == "bfloat16"
            np.testing.assert_array_equal(got[key].view(np.int16), ref_np)
            continue
        ref_np = ref.numpy()
        assert got[key].dtype == ref_np.dtype, key
        assert got[key].shape == ref_np.shape, key
        np.testing.assert_array_equal(_bits(got[key]), _bits(ref_np))


def _sample_state_dict() -> OrderedDict:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g)
    return OrderedDict(
        contiguous=torch.randn(4, 3, 3, 3, generator=g),
        transposed=base.t(),  # non-contiguous view: stride (1, 5)
        sliced=base[2:5, 1:4],  # storage offset 11, stride (5, 1)
        stepped=torch.arange(20, dtype=torch.float64)[3::4],
        fp16=torch.randn(7, generator=g).half(),
        bf16=torch.randn(3, 2, generator=g).bfloat16(),
        int64=torch.arange(5),
        boolean=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 4),
        shares_storage=base,  # same storage as transposed and sliced
        num_batches_tracked=torch.tensor(7),
    )


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_matches_torch_load(tmp_path, zip_format):
    path = str(tmp_path / "sample.pth")
    torch.save(_sample_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    got = read_state_dict(path)
    assert_same_as_torch(got, torch.load(path, weights_only=True))
    for array in got.values():
        assert array.flags.c_contiguous and array.flags.owndata


def test_reader_matches_torch_load_on_vgg19(random_pth, torch_vgg):
    got = read_state_dict(random_pth, keep=lambda key: key.startswith("features."))
    want = OrderedDict((k, v) for k, v in torch_vgg.state_dict().items() if k.startswith("features."))
    assert_same_as_torch(got, want)


def test_reader_reads_saved_parameters(tmp_path):
    path = str(tmp_path / "params.pth")
    linear = torch.nn.Linear(3, 2)
    torch.save(dict(linear.named_parameters()), path)  # nn.Parameter, not plain tensors
    assert_same_as_torch(read_state_dict(path), {k: v.detach() for k, v in linear.named_parameters()})


# --- hand-made .pth files -----------------------------------------------------------------------------------


class _Storage:
    def __init__(self, key: str, numel: int, storage_type=None):
        self.key, self.numel, self.storage_type = key, numel, storage_type or torch.FloatStorage


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Call:
    """Pickles as ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _Pickler(pickle.Pickler):
    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            pid = ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None


def write_zip_pth(
    path, obj, storages: dict[str, bytes], *, byteorder: str | None = "little", extra=()
) -> str:
    """A .pth laid out as torch.save's zip format, with the pickle of ``obj`` and the given storage bytes."""
    buf = io.BytesIO()
    _Pickler(buf, legacy=False).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        if byteorder is not None:
            z.writestr("archive/byteorder", byteorder)
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
        for name, data in extra:
            z.writestr(name, data)
    return str(path)


def write_legacy_pth(path, obj) -> str:
    """A .pth in torch.save's pre-1.6 stream layout (header, pickle, no storages)."""
    with open(path, "wb") as f:
        for header in (
            pth_reader.LEGACY_MAGIC_NUMBER,
            pth_reader.LEGACY_PROTOCOL_VERSION,
            {"little_endian": True},
        ):
            pickle.dump(header, f, protocol=2)
        _Pickler(f, legacy=True).dump(obj)
        pickle.dump([], f, protocol=2)
    return str(path)


def test_hand_made_pth_is_read_like_torch(tmp_path):
    values = np.arange(12, dtype=np.float32)
    storage = _Storage("0", 12)
    obj = OrderedDict(w=_Tensor(storage, 2, (2, 3), (1, 4)))
    path = write_zip_pth(tmp_path / "ok.pth", obj, {"0": values.tobytes()})
    want = torch.load(path, weights_only=True)
    assert_same_as_torch(read_state_dict(path), want)
    np.testing.assert_array_equal(read_state_dict(path)["w"], [[2, 6, 10], [3, 7, 11]])


def test_big_endian_storage(tmp_path):
    values = np.arange(6, dtype=np.float32)
    obj = {"w": _Tensor(_Storage("0", 6), 0, (6,), (1,))}
    path = write_zip_pth(tmp_path / "be.pth", obj, {"0": values.astype(">f4").tobytes()}, byteorder="big")
    got = read_state_dict(path)["w"]
    np.testing.assert_array_equal(got, values)
    assert got.dtype == np.float32 and got.dtype.isnative


def test_unknown_byte_order_refused(tmp_path):
    obj = {"w": _Tensor(_Storage("0", 1), 0, (1,), (1,))}
    path = write_zip_pth(tmp_path / "bo.pth", obj, {"0": b"\0" * 4}, byteorder="middle")
    with pytest.raises(WeightsError, match="byte order"):
        read_state_dict(path)


def _payloads(marker: str):
    return {
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.eval": _Call(eval, f"open({marker!r}, 'w').close()"),
        "subprocess.call": _Call(subprocess.call, ["touch", marker]),
        "builtins.exec": _Call(exec, f"open({marker!r}, 'w').close()"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.call", "builtins.exec"])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_code_in_pickle_is_refused_and_does_not_run(tmp_path, name, layout):
    marker = str(tmp_path / "pwned")
    payload = _payloads(marker)[name]
    # After a genuine tensor, as a booby-trapped state dict would be.
    obj = OrderedDict(ok=_Tensor(_Storage("0", 1), 0, (1,), (1,)), evil=payload)
    if layout == "zip":
        path = write_zip_pth(tmp_path / "evil.pth", obj, {"0": b"\0" * 4})
    else:
        path = write_legacy_pth(tmp_path / "evil.pth", obj)
    module = os.system.__module__ if name == "os.system" else name.split(".")[0]  # posix.system on Linux
    with pytest.raises(UnsafeCheckpointError, match=rf"refers to {module}\.{name.split('.')[1]},"):
        read_state_dict(path)
    assert not os.path.exists(marker)
    with pytest.raises(WeightsError):  # the subclass is a WeightsError, so the CLI reports it as one line
        read_state_dict(path)


def test_unsafe_global_in_header_is_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as f:
        pickle.dump(_Call(os.system, f"touch {marker}"), f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_other_persistent_id_refused(tmp_path):
    class Module:
        pass

    class ModulePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "x", "y", "z") if obj is Module else None

    buf = io.BytesIO()
    ModulePickler(buf, protocol=2).dump({"m": Module})
    path = str(tmp_path / "module.pth")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="persistent id"):
        read_state_dict(path)


def test_state_cannot_be_set_on_reader_objects(tmp_path):
    class Build:
        def __reduce__(self):  # rebuild a tensor, then BUILD it with a state dict
            return (
                torch._utils._rebuild_tensor_v2,
                (_Storage("0", 1), 0, (1,), (1,), False, OrderedDict()),
                {"offset": 10**9},
            )

    path = write_zip_pth(tmp_path / "build.pth", {"w": Build()}, {"0": b"\0" * 4})
    with pytest.raises(UnsafeCheckpointError, match="state"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "member", ["../evil", "archive/../../evil", "/etc/evil", "archive/data/..\\..\\evil"]
)
def test_path_traversal_member_refused(tmp_path, member):
    obj = {"w": _Tensor(_Storage("0", 1), 0, (1,), (1,))}
    path = write_zip_pth(tmp_path / "trav.pth", obj, {"0": b"\0" * 4}, extra=[(member, b"x")])
    with pytest.raises(UnsafeCheckpointError, match="outside the archive"):
        read_state_dict(path)


def test_storage_key_with_path_refused(tmp_path):
    obj = {"w": _Tensor(_Storage("../0", 1), 0, (1,), (1,))}
    path = write_zip_pth(tmp_path / "key.pth", obj, {})
    with pytest.raises(WeightsError, match="storage key"):
        read_state_dict(path)


def test_short_storage_refused(tmp_path):
    obj = {"w": _Tensor(_Storage("0", 6), 0, (6,), (1,))}
    path = write_zip_pth(tmp_path / "short.pth", obj, {"0": np.zeros(5, np.float32).tobytes()})
    with pytest.raises(WeightsError, match="storage 0 has 20 bytes, its tensors need 24"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "offset,size,stride",
    [(0, (7,), (1,)), (3, (2, 2), (2, 1)), (0, (2, 3), (1, 3))],
    ids=["size", "offset", "stride"],
)
def test_tensor_larger_than_its_storage_refused(tmp_path, offset, size, stride):
    obj = {"w": _Tensor(_Storage("0", 6), offset, size, stride)}
    path = write_zip_pth(tmp_path / "over.pth", obj, {"0": np.zeros(6, np.float32).tobytes()})
    with pytest.raises(WeightsError, match="elements of storage 0, which has 6"):
        read_state_dict(path)


def test_missing_storage_member(tmp_path):
    obj = {"w": _Tensor(_Storage("0", 1), 0, (1,), (1,))}
    path = write_zip_pth(tmp_path / "nostorage.pth", obj, {})
    with pytest.raises(WeightsError, match="archive/data/0 is missing"):
        read_state_dict(path)


def test_not_a_dict_refused(tmp_path):
    path = write_zip_pth(tmp_path / "list.pth", [1, 2], {})
    with pytest.raises(WeightsError, match="not a state dict"):
        read_state_dict(path)


def test_non_tensor_entry_named(tmp_path):
    path = write_zip_pth(tmp_path / "mixed.pth", {"epoch": 3}, {})
    with pytest.raises(WeightsError, match="entry epoch is a int"):
        read_state_dict(path)


def _small_pth(tmp_path) -> str:
    path = str(tmp_path / "small.pth")
    torch.save({"w": torch.randn(64, 64)}, path)
    return path


@pytest.mark.parametrize("cut", [0.5, 0.98, 0.999])
def test_truncated_zip_refused(tmp_path, cut):
    data = open(_small_pth(tmp_path), "rb").read()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_state_dict(str(path))


def test_corrupt_storage_bytes_refused(tmp_path):
    data = bytearray(open(_small_pth(tmp_path), "rb").read())
    at = data.index(b"small/data/0") + 200  # inside the storage's bytes: the zip CRC check fails
    data[at : at + 8] = b"\xff" * 8
    path = tmp_path / "corrupt.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        read_state_dict(str(path))


def test_truncated_legacy_refused(tmp_path):
    path = str(tmp_path / "legacy.pth")
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    data = open(path, "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[:-100])
    with pytest.raises(WeightsError, match="storage .* has .* bytes"):
        read_state_dict(str(tmp_path / "cut.pth"))


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty file"),
        (b"hello, this is not a checkpoint\n" * 10, "corrupt|not a PyTorch checkpoint"),
        (pickle.dumps(12345, protocol=2), "not a PyTorch checkpoint"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "corrupt|not a PyTorch checkpoint"),
    ],
    ids=["empty", "text", "other-pickle", "png"],
)
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=rf"^checkpoint {re.escape(str(path))}: .*({message})"):
        read_state_dict(str(path))


def test_tar_format_refused(tmp_path):
    path = str(tmp_path / "old.pth")
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(WeightsError, match="tar format"):
        read_state_dict(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WeightsError, match="No such file"):
        read_state_dict(str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsError, match="folder"):
        read_state_dict(str(tmp_path))


# --- key map and shapes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_features(random_pth):
    return read_state_dict(random_pth, keep=lambda key: key.startswith("features."))


def test_to_flax_layout(vgg_features, torch_vgg):
    params = to_flax(vgg_features)["params"]
    assert sorted(params) == sorted(vgg.CONV_LAYERS)
    conv5_4 = torch_vgg.features[34]
    np.testing.assert_array_equal(
        params["conv5_4"]["kernel"], conv5_4.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params["conv5_4"]["bias"], conv5_4.bias.detach().numpy())
    np.testing.assert_array_equal(
        params["conv1_1"]["kernel"][1, 2, 0, 5], torch_vgg.features[0].weight[5, 0, 1, 2].item()
    )
    weights.check_params({"params": params})


def test_to_flax_names_missing_and_unexpected(vgg_features):
    sd = dict(vgg_features)
    del sd["features.34.weight"], sd["features.0.bias"]
    sd["features.99.weight"] = np.zeros(3, np.float32)
    sd["classifier.0.weight"] = np.zeros((3, 3), np.float32)  # dropped silently
    with pytest.raises(WeightsError) as e:
        to_flax(sd)
    msg = str(e.value)
    assert "missing features.0.bias, features.34.weight" in msg
    assert "unexpected features.99.weight" in msg
    assert "classifier" not in msg


def test_to_flax_names_wrong_shapes(vgg_features):
    sd = dict(vgg_features)
    sd["features.2.weight"] = sd["features.2.weight"].transpose(2, 3, 1, 0)  # HWIO given where OIHW is due
    sd["features.5.bias"] = sd["features.5.bias"][:10]
    with pytest.raises(WeightsError) as e:
        to_flax(sd)
    assert "wrong shape features.2.weight (3, 3, 64, 64) (expected (64, 64, 3, 3))" in str(e.value)
    assert "features.5.bias (10,) (expected (128,))" in str(e.value)


def test_to_flax_refuses_integer_and_nan(vgg_features):
    sd = dict(vgg_features)
    sd["features.0.bias"] = np.zeros(64, np.int64)
    sd["features.2.bias"] = np.full(64, np.nan, np.float32)
    with pytest.raises(WeightsError, match="features.0.bias has dtype int64; features.2.bias holds NaN"):
        to_flax(sd)


def test_to_flax_accepts_half_precision(vgg_features):
    sd = {k: v.astype(np.float16) for k, v in vgg_features.items()}
    params = to_flax(sd)["params"]
    assert params["conv3_1"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(
        params["conv3_1"]["bias"], vgg_features["features.10.bias"].astype(np.float16)
    )


def test_vgg16_features_named(tmp_path):
    layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    sd = {f"features.{k}": v.numpy() for k, v in layers.state_dict().items()}
    with pytest.raises(WeightsError) as e:
        to_flax(sd)
    msg = str(e.value)
    # VGG-16 has 13 convolutions: conv indices past 14 differ from VGG-19's.
    assert "missing features.16.weight, features.16.bias, features.23.weight" in msg
    assert "unexpected features.17.weight, features.17.bias" in msg
    assert "wrong shape features.19.weight (512, 512, 3, 3) (expected (512, 256, 3, 3))" in msg


def test_resnet18_checkpoint_named(tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        convert(path, str(tmp_path / "out.msgpack"), "torchvision")
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {path}: not a torchvision VGG-19 state dict")
    assert "missing features.0.weight" in msg and "unexpected conv1.weight, bn1.weight" in msg
    assert "more)" in msg  # the long list is cut, with a count
    assert not os.path.exists(tmp_path / "out.msgpack")


@pytest.mark.slow
def test_convert_records_source_and_origin(random_pth, torch_params, tmp_path):
    out = convert(random_pth, str(tmp_path / "caffe.msgpack"), "caffe")
    loaded = weights.load(out)
    assert loaded.source == "caffe"
    assert loaded.origin == f"vgg19-random.pth (sha256 {weights.file_sha256(random_pth)})"
    for layer in vgg.CONV_LAYERS:
        np.testing.assert_array_equal(
            loaded.params["params"][layer]["kernel"], torch_params["params"][layer]["kernel"]
        )
    with pytest.raises(WeightsError, match="source must be one of torchvision, caffe"):
        convert(random_pth, str(tmp_path / "x.msgpack"), "imagenet")


# --- command line -------------------------------------------------------------------------------------------


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_output_loads(torch_weights, random_pth, torch_vgg):
    loaded = weights.load(torch_weights)
    assert loaded.source == "torchvision"
    assert loaded.origin.startswith("vgg19-random.pth (sha256 ")
    # The recorded digest is that of torchvision's own tensors, transposed to HWIO (computed here from torch).
    convs = [m for m in torch_vgg.features if isinstance(m, torch.nn.Conv2d)]
    flat = {}
    for name, conv in zip(vgg.CONV_LAYERS, convs, strict=True):
        flat[f"params/{name}/kernel"] = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        flat[f"params/{name}/bias"] = conv.bias.detach().numpy()
    digest = hashlib.sha256()
    for key in sorted(flat):
        digest.update(key.encode() + b"\0" + str(flat[key].shape).encode() + b"\0")
        digest.update(np.ascontiguousarray(flat[key], "<f4").tobytes())
    assert loaded.params_sha256 == digest.hexdigest()
    assert [f for f in os.listdir(os.path.dirname(torch_weights)) if f != "vgg19-random.msgpack"] == []


@pytest.mark.slow
def test_cli_default_output_and_caffe(random_pth, tmp_path):
    proc = run_converter("--source=caffe", f"--checkpoint={random_pth}", env={"NST_JAX_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = str(tmp_path / "vgg19-caffe.msgpack")
    assert proc.stdout.strip() == f"wrote {out} (source: caffe)"
    assert weights.load(out).source == "caffe"
    assert os.listdir(tmp_path) == ["vgg19-caffe.msgpack"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--checkpoint=/nonexistent/vgg19.pth"], "error: checkpoint /nonexistent/vgg19.pth: no such file"),
        (["--checkpoint=CKPT", "--url=http://127.0.0.1:9/x.pth"], "error: --url and --checkpoint exclude each other"),
        (["--timeout=0"], "error: --timeout=0: must be a number of seconds > 0"),
        (["--timeout=soon"], "error: --timeout=soon: must be a number of seconds > 0"),
        (["--sha256=xyz"], "error: --sha256=xyz: not a SHA-256 (64 hexadecimal digits)"),
        # Refused before a 548 MB download (and with no network contacted: the default URL is never asked).
        (["--output=CKPT/w.msgpack"], "error: --output=CKPT/w.msgpack: CKPT is a file, not a folder"),
        (
            ["--checkpoint=CKPT", "--source=imagenet"],
            "error: --source must be one of torchvision, caffe, not 'imagenet'",
        ),
        (["--source=caffe"], "error: --source=caffe needs --checkpoint=FILE"),
        (["--checkpoint=CKPT", "--sha256=" + "0" * 64], "error: checkpoint CKPT: its SHA-256 does not match"),
    ],
    ids=["missing", "url-and-checkpoint", "timeout-zero", "timeout-text", "sha256-format", "output-under-a-file",
         "source", "caffe-download", "sha256"],
)
@pytest.mark.slow
def test_cli_errors(tmp_path, args, message):
    ckpt = _small_pth(tmp_path)
    args = [a.replace("CKPT", ckpt) for a in args]
    out = tmp_path / "out.msgpack"
    proc = run_converter(f"--output={out}", *args, env={"NST_JAX_CACHE": str(tmp_path / "cache")})
    assert _one_error_line(proc).startswith(message.replace("CKPT", ckpt))
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_cli_text_file_is_named(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint\n" * 20)
    proc = run_converter(f"--checkpoint={path}", f"--output={tmp_path / 'out.msgpack'}")
    assert _one_error_line(proc).startswith(f"error: checkpoint {path}: corrupt: its pickle does not load")
    assert not (tmp_path / "out.msgpack").exists()


@pytest.mark.slow
def test_cli_help_and_bad_flag():
    help_ = run_converter("--help")
    assert help_.returncode == 0 and "--checkpoint" in help_.stdout + help_.stderr
    assert _one_error_line(run_converter("--no_such_flag=1")) == "error: Unknown command line flag 'no_such_flag'"


@pytest.mark.slow
def test_cli_unsafe_checkpoint(tmp_path):
    marker = str(tmp_path / "pwned")
    path = write_zip_pth(tmp_path / "evil.pth", {"w": _Call(os.system, f"touch {marker}")}, {})
    proc = run_converter(f"--checkpoint={path}", f"--output={tmp_path / 'out.msgpack'}")
    line = _one_error_line(proc)
    assert line.startswith(f"error: checkpoint {path}: unsafe checkpoint: its pickle refers to posix.system")
    assert not os.path.exists(marker) and not (tmp_path / "out.msgpack").exists()


@pytest.mark.slow
def test_cli_offline_download(tmp_path):
    # A closed local port as the proxy: the download fails at once whether or not this machine is online.
    env = {
        "NST_JAX_CACHE": str(tmp_path),
        "NST_JAX_WEIGHTS_URL": "",  # torchvision's address, whatever the environment says
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    line = _one_error_line(run_converter(env=env))
    assert line.startswith("error: cannot download https://download.pytorch.org/models/vgg19-dcbb9e9d.pth")
    assert line.endswith("python -m weights_converter --checkpoint=vgg19-dcbb9e9d.pth")
    assert os.listdir(tmp_path) == []


def test_resolve_with_empty_cache_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as e:
        weights.resolve(None)
    assert str(e.value) == (
        f"no VGG-19 weights at {tmp_path / 'empty' / 'vgg19-torchvision.msgpack'}; create them with: "
        "python -m weights_converter (or pass --weights=FILE)"
    )
    with pytest.raises(
        WeightsError, match="python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb"
    ):
        weights.resolve(None, "caffe")
