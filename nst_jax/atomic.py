"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from nst_jax.errors import UserError


def check_writable(path: str, example: str) -> None:
    """Refuses, without creating anything, a file path that cannot be written: one that is a folder (``example``
    is a file name to suggest inside it), or whose folder, or nearest existing folder above it when it is
    missing, is a file, not writable by permissions, or on a read-only file system. Messages name ``--output``.

    Permissions say yes to root everywhere: a caller that must know for sure tries a real write later.
    """
    if os.path.isdir(path):
        raise UserError(f"--output={path}: is a folder; give a file name such as {os.path.join(path, example)}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--output={path}: {existing} is a file, not a folder")
    where = f"folder {folder}" if existing == folder else f"folder {folder} cannot be created: {existing}"
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--output={path}: {where} is not writable (Permission denied)")
    if hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UserError(f"--output={path}: {where} is not writable (Read-only file system)")


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
