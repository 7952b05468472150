"""Output files of a run: where they go, checking the place before any work, writing them in the right order.

    out.png      the image           out.json     its run record (written last: it marks a finished run)
    out.ckpt     the checkpoint      out_00010.png  a snapshot at step 10 (``--save_every``)

Nothing is created before the inputs are known to be good: :func:`check_output` only looks (a failed run must
not leave an empty folder behind), :func:`prepare_output` creates the folder once every input, flag and the
weights have been checked, and the first write creates it where no one called that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from nst_jax import checkpoint, image
from nst_jax.atomic import check_writable, write_json
from nst_jax.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; each file is still written atomically
    fcntl = None


def record_path(output: str) -> str:
    """``out.png`` -> ``out.json``."""
    return os.path.splitext(output)[0] + ".json"


def snapshot_path(output: str, step: int) -> str:
    """``out.png``, step 10 -> ``out_00010.png``."""
    stem, ext = os.path.splitext(output)
    return f"{stem}_{step:05d}{ext}"


def check_output(output: str, inputs: list[str]) -> None:
    """Refuses, before any work and without creating anything, an output that cannot be written or would
    overwrite an input.

    Writability is judged from permissions and the file system's read-only flag of the output folder, or of the
    nearest existing folder above it when it is missing. Root passes permission checks everywhere, so
    :func:`prepare_output` tries a real write later, still before any work.
    """
    if not output:
        raise UserError("--output is empty")
    ext = os.path.splitext(output)[1].lower()
    if ext not in image.SAVE_FORMATS:
        raise UserError(f"--output={output}: unsupported extension {ext or '(none)'}; use .png, .jpg or .jpeg")
    written = {os.path.realpath(p) for p in (output, record_path(output), checkpoint.path_for(output))}
    for path in inputs:
        if path and os.path.exists(path) and os.path.realpath(path) in written:
            raise UserError(f"--output={output}: would overwrite the input {path}")
    check_writable(output, "out.png")


def prepare_output(output: str) -> None:
    """Creates the output's folder and proves it writable with a trial file (removed at once). Call it after
    every input has been checked and before the work starts."""
    folder = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output={output}: cannot create folder {folder} ({e.strerror or e})") from None
    # A trial file rather than os.access, which says yes to root in a read-only folder and to anyone on /proc.
    try:
        fd, trial = tempfile.mkstemp(prefix=".nst_jax-write-test.", dir=folder)
        os.close(fd)
        os.remove(trial)
    except OSError as e:
        raise UserError(f"--output={output}: folder {folder} is not writable ({e.strerror or e})") from None


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (flock on the folder itself: no lock file is left behind)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_outputs(output: str, result: Any, record: dict[str, Any]) -> None:
    """The image, then its record (with the image's SHA-256): a record on disk means the image beside it is
    complete, and says which image it belongs to.

    Each file is written atomically; the pair is written under a lock on the folder, so two runs writing the
    same ``--output`` at once leave one run's image with that run's record, never a mix.
    """
    folder = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output={output}: cannot create folder {folder} ({e.strerror or e})") from None
    with _folder_lock(folder):
        image.save_image(output, result)
        with open(output, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        record = dict(record, output=os.path.abspath(output), output_sha256=digest)
        write_json(record_path(output), record, what="run record")
