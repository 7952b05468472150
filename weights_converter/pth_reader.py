"""Reads a PyTorch ``.pth`` state dict into NumPy arrays without importing torch and without running its code.

A ``.pth`` file written by ``torch.save`` is a pickle, and unpickling an untrusted pickle can run arbitrary
code (``os.system``, ``eval``, ...). This reader uses a restricted unpickler that admits only the handful of
globals a tensor state dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
friends, and the ``torch.*Storage`` names, which only mark a dtype); every other global is refused with
:class:`UnsafeCheckpointError` before anything is called. Tensors are rebuilt from the raw storage bytes with
their offset, size and stride (as ``torch.Tensor.as_strided`` would), after checking the storage is long
enough.

Two layouts are read:
  * the zip archive ``torch.save`` writes since PyTorch 1.6: ``<prefix>/data.pkl``, ``<prefix>/data/<key>``
    (one member per storage), ``<prefix>/byteorder`` (absent in files older than PyTorch 1.13: little-endian);
  * the older pickle stream (``_use_new_zipfile_serialization=False``, and every file from before PyTorch 1.6,
    such as the Caffe VGG-19 conversion ``vgg19-d01eb7cb.pth``): a magic number, a protocol version, a
    ``sys_info`` dict, the pickled object, the list of storage keys, then each storage as an int64 element
    count followed by its bytes.
The tar layout of PyTorch < 0.1.10 is refused with a message saying how to re-save the file.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import posixpath
import re
import struct
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any

import ml_dtypes
import numpy as np

from nst_jax.errors import WeightsError


class UnsafeCheckpointError(WeightsError):
    """A checkpoint whose pickle refers to something other than tensors (it could run code): refused."""


# Legacy typed-storage names torch writes into the pickle; they only say which dtype the bytes hold.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Refused:
    """Base of the objects the unpickler hands out: no pickle opcode may set their state."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(f"the pickle tries to set the state of {type(self).__name__}; refused")


class _StorageType(_Refused):
    """Stands for ``torch.<name>``: a dtype marker, never called."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class _StorageRef(_Refused):
    """A storage named by the pickle: ``numel`` elements of ``dtype``, bytes read later only if needed."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _TensorRef(_Refused):
    """A tensor view of a storage: element ``offset``, ``size`` and ``stride`` in elements."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:  # bool is refused too
        raise WeightsError(f"corrupt: {what} is {value!r}, not a non-negative integer")
    return value


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise WeightsError(f"corrupt: {what} is {type(value).__name__}, not a tuple")
    return tuple(_int(v, what) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Stands for ``torch._utils._rebuild_tensor``: checks the view fits in its storage."""
    if not isinstance(storage, _StorageRef):
        raise WeightsError("corrupt: a tensor is built from something that is not a storage")
    offset = _int(storage_offset, "a storage offset")
    size, stride = _ints(size, "a tensor size"), _ints(stride, "a tensor stride")
    if len(size) != len(stride):
        raise WeightsError(f"corrupt: tensor size {size} and stride {stride} differ in length")
    if 0 not in size:
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if extent > storage.numel:
            raise WeightsError(
                f"corrupt: a tensor of size {size} needs {extent} elements of storage "
                f"{storage.key}, which has {storage.numel}"
            )
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Stands for ``torch._utils._rebuild_tensor_v2``; gradients, hooks and metadata do not matter here."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> Any:
    """Stands for ``torch._utils._rebuild_parameter`` (a saved ``nn.Parameter``): its tensor."""
    if not isinstance(data, _TensorRef):
        raise WeightsError("corrupt: a parameter wraps something that is not a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`; storages become :class:`_StorageRef`."""

    def __init__(self, file: IO[bytes], legacy: bool):
        super().__init__(file, encoding="utf-8")
        self.legacy = legacy
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            # Name what a plain unpickler would import: protocol-2 pickles carry some Python 2 names.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            raise UnsafeCheckpointError(
                f"unsafe checkpoint: its pickle refers to {module}.{name}, which a tensor state dict never "
                "needs (loading it could run code); refused"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or not pid:
            raise WeightsError(f"corrupt: persistent id {pid!r:.80}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) != (6 if self.legacy else 5):
            raise UnsafeCheckpointError(f"unsafe checkpoint: persistent id of kind {kind!r:.40} refused")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"corrupt: storage type {storage_type!r:.80}")
        if not isinstance(key, str) or not _STORAGE_KEY.match(key) or key in (".", ".."):
            raise WeightsError(f"corrupt: storage key {key!r:.80}")
        numel = _int(numel, f"the size of storage {key}")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise WeightsError(f"corrupt: storage {key} is named with two types or sizes")
        if self.legacy and pid[5] is not None:
            # A view of part of a storage (PyTorch < 0.4): (view key, element offset, element count).
            view_key, offset, view_numel = pid[5]
            offset, view_numel = _int(offset, "a view offset"), _int(view_numel, "a view size")
            if offset + view_numel > numel:
                raise WeightsError(
                    f"corrupt: storage view {view_key!r:.40} overruns storage {key}"
                )
            return _StorageRef(key, storage_type.dtype, view_numel, offset)
        return known


def _unpickle(file: IO[bytes], legacy: bool) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _RestrictedUnpickler(file, legacy)
    try:
        obj = unpickler.load()
    except WeightsError:
        raise
    except Exception as e:  # a corrupt pickle raises any of a dozen types
        raise WeightsError(
            f"corrupt: its pickle does not load ({type(e).__name__}: {e})"[:300]
        ) from None
    return obj, unpickler.storages


def _load_plain(file: IO[bytes], what: str) -> Any:
    """Unpickles a plain value (a number, a list of strings, a dict of them): no global is admitted."""
    obj, storages = _unpickle(file, legacy=True)
    if storages:
        raise WeightsError(f"corrupt: {what} refers to a storage")
    return obj


def _materialize(ref: _TensorRef, data: np.ndarray) -> np.ndarray:
    """``data``: the storage's elements (native byte order). Returns a C-contiguous copy of the view."""
    if 0 in ref.size:
        return np.zeros(ref.size, data.dtype)
    start = ref.storage.offset + ref.offset
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[start:], shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
    )
    return np.array(view, copy=True, order="C")


def _from_bytes(raw: bytes, dtype: np.dtype, numel: int, byteorder: str, key: str) -> np.ndarray:
    need = numel * dtype.itemsize
    if len(raw) < need:
        raise WeightsError(f"corrupt: storage {key} has {len(raw)} bytes, its tensors need {need}")
    stored = dtype.newbyteorder("<" if byteorder == "little" else ">") if dtype.itemsize > 1 else dtype
    return np.frombuffer(raw, stored, count=numel).astype(dtype, copy=False)


def _collect(
    obj: Any, keep: Callable[[str], bool] | None, load: Callable[[_StorageRef], np.ndarray]
) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise WeightsError(
            f"not a state dict: the checkpoint holds a {type(obj).__name__}, not a dict of tensors"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsError(f"not a state dict: key {key!r:.40} is not a string")
        if keep is not None and not keep(key):
            continue
        if not isinstance(value, _TensorRef):
            raise WeightsError(f"not a state dict: entry {key} is a {type(value).__name__}, not a tensor")
        out[key] = _materialize(value, load(value.storage))
    return out


def _check_member(path: str, name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
        raise UnsafeCheckpointError(
            f"checkpoint {path}: unsafe checkpoint: zip member {name!r:.100} points outside the archive; refused"
        )


def _read_zip(path: str, keep: Callable[[str], bool] | None) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"checkpoint {path}: truncated or corrupt zip archive ({e})") from None
    with archive:
        names = archive.namelist()
        for name in names:
            _check_member(path, name)
        pickles = [n for n in names if posixpath.basename(n) == "data.pkl" and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsError(
                f"checkpoint {path}: a zip archive but not one written by torch.save "
                f"({len(pickles)} <name>/data.pkl members)"
            )
        prefix = posixpath.dirname(pickles[0])

        def member(name: str) -> bytes:
            try:
                return archive.read(f"{prefix}/{name}")
            except KeyError:
                raise WeightsError(f"checkpoint {path}: member {prefix}/{name} is missing") from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                raise WeightsError(f"checkpoint {path}: member {prefix}/{name} is corrupt ({e})") from None

        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            byteorder = member("byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise WeightsError(f"checkpoint {path}: unknown byte order {byteorder!r:.20}")
        try:
            obj, _ = _unpickle(io.BytesIO(member("data.pkl")), legacy=False)
        except WeightsError as e:
            raise type(e)(f"checkpoint {path}: {e}") from None
        cache: dict[str, np.ndarray] = {}

        def load(storage: _StorageRef) -> np.ndarray:
            if storage.key not in cache:
                cache[storage.key] = _from_bytes(
                    member(f"data/{storage.key}"), storage.dtype, storage.numel, byteorder, storage.key
                )
            return cache[storage.key]

        try:
            return _collect(obj, keep, load)
        except WeightsError as e:
            raise WeightsError(f"checkpoint {path}: {e}") from None


def _read_legacy(file: IO[bytes], path: str, keep: Callable[[str], bool] | None) -> dict[str, np.ndarray]:
    magic = _load_plain(file, "the header")
    if magic != LEGACY_MAGIC_NUMBER:
        raise WeightsError(
            f"checkpoint {path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy "
            "torch.save stream)"
        )
    version = _load_plain(file, "the header")
    if version != LEGACY_PROTOCOL_VERSION:
        raise WeightsError(f"checkpoint {path}: legacy torch.save protocol {version!r:.20} is not supported")
    sys_info = _load_plain(file, "the header")
    if not isinstance(sys_info, dict):
        raise WeightsError(f"checkpoint {path}: corrupt legacy header")
    byteorder = "little" if sys_info.get("little_endian", True) else "big"
    obj, storages = _unpickle(file, legacy=True)
    keys = _load_plain(file, "the storage list")
    if not isinstance(keys, list) or any(not isinstance(k, str) for k in keys):
        raise WeightsError(f"checkpoint {path}: corrupt storage list")
    # The storages follow in the order of ``keys``, each as an int64 element count then the bytes; note where
    # each starts so only the kept tensors are read.
    where: dict[str, int] = {}
    for key in keys:
        if key not in storages:
            raise WeightsError(f"checkpoint {path}: storage {key} is listed but no tensor uses it")
        head = file.read(8)
        if len(head) < 8:
            raise WeightsError(f"checkpoint {path}: truncated (storage {key} is missing)")
        numel = struct.unpack("<q" if byteorder == "little" else ">q", head)[0]
        if numel != storages[key].numel:
            raise WeightsError(
                f"checkpoint {path}: storage {key} holds {numel} elements, "
                f"the pickle says {storages[key].numel}"
            )
        where[key] = file.tell()
        file.seek(numel * storages[key].dtype.itemsize, io.SEEK_CUR)
    cache: dict[str, np.ndarray] = {}

    def load(storage: _StorageRef) -> np.ndarray:
        if storage.key not in where:
            raise WeightsError(f"storage {storage.key} is missing")
        if storage.key not in cache:
            root = storages[storage.key]
            file.seek(where[storage.key])
            raw = file.read(root.numel * root.dtype.itemsize)
            cache[storage.key] = _from_bytes(raw, root.dtype, root.numel, byteorder, storage.key)
        return cache[storage.key]

    try:
        return _collect(obj, keep, load)
    except WeightsError as e:
        raise WeightsError(f"checkpoint {path}: {e}") from None


def read_state_dict(path: str, keep: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``-d state dict, as NumPy arrays, without torch and without running code.

    Args:
      path: a ``.pth`` file (zip archive or legacy stream, see the module docstring).
      keep: if given, only keys for which ``keep(key)`` is true are read (the others' bytes are never read).

    Returns:
      ``{key: array}`` in the file's order; each array is C-contiguous, owns its memory and has the tensor's
      dtype (bfloat16 as ``ml_dtypes.bfloat16``): what ``torch.load(path, weights_only=True)`` gives.

    Raises:
      UnsafeCheckpointError: the pickle refers to anything but tensors, or a zip member's name escapes.
      WeightsError: the file is missing, empty, truncated, corrupt, in the tar format, not a dict of tensors.
    """
    try:
        return _read(path, keep)
    except WeightsError as e:  # every message names the file, as every other error of the program does
        if str(e).startswith(f"checkpoint {path}:"):
            raise
        raise type(e)(f"checkpoint {path}: {e}") from None


def _read(path: str, keep: Callable[[str], bool] | None) -> dict[str, np.ndarray]:
    try:
        file = open(path, "rb")
    except IsADirectoryError:
        raise WeightsError(f"checkpoint {path}: is a folder, not a file") from None
    except OSError as e:
        raise WeightsError(f"checkpoint {path}: {e.strerror or e}") from None
    with file:
        head = file.read(4)
        if not head:
            raise WeightsError(f"checkpoint {path}: empty file")
        if head == b"PK\x03\x04" or zipfile.is_zipfile(file):
            return _read_zip(path, keep)
        file.seek(0)
        try:
            is_tar = tarfile.is_tarfile(file)
        except (OSError, ValueError):
            is_tar = False
        if is_tar:
            raise WeightsError(
                f"checkpoint {path}: the tar format of PyTorch < 0.1.10 is not supported; re-save it with "
                "torch.save(torch.load(FILE), NEW_FILE) in a current PyTorch"
            )
        file.seek(0)
        return _read_legacy(file, path, keep)
