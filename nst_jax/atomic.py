"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from nst_jax.errors import UserError


def write_atomic(path: str, write: Callable[[IO[bytes]], Any], *, what: str = "file") -> None:
    """Calls ``write(fileobj)`` on a temporary file beside ``path``, syncs it, then renames it over ``path``.

    The folder is created if missing. Errors the user can fix (read-only folder, no space) become
    :class:`UserError` naming ``what`` and ``path``; the temporary file is always removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write in {folder} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes, *, what: str = "file") -> None:
    write_atomic(path, lambda f: f.write(data), what=what)


def write_json(path: str, obj: Any, *, what: str = "file") -> None:
    data = (json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n").encode()
    write_bytes(path, data, what=what)


def write_text(path: str, text: str, *, what: str = "file") -> None:
    write_bytes(path, text.encode(), what=what)
