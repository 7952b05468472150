"""Output files of a run: where they go, checking the place before any work, writing them in the right order.

    out.png      the image           out.json     its run record (written last: it marks a finished run)
    out.ckpt     the checkpoint      out_00010.png  a snapshot at step 10 (``--save_every``)
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from nst_jax import checkpoint, image
from nst_jax.atomic import write_json
from nst_jax.errors import UserError


def record_path(output: str) -> str:
    """``out.png`` -> ``out.json``."""
    return os.path.splitext(output)[0] + ".json"


def snapshot_path(output: str, step: int) -> str:
    """``out.png``, step 10 -> ``out_00010.png``."""
    stem, ext = os.path.splitext(output)
    return f"{stem}_{step:05d}{ext}"


def check_output(output: str, inputs: list[str]) -> None:
    """Refuses, before any work, an output that cannot be written or would overwrite an input.

    A missing output folder is created (documented in the README)."""
    if not output:
        raise UserError("--output is empty")
    ext = os.path.splitext(output)[1].lower()
    if ext not in image.SAVE_FORMATS:
        raise UserError(f"--output={output}: unsupported extension {ext or '(none)'}; use .png, .jpg or .jpeg")
    if os.path.isdir(output):
        raise UserError(f"--output={output}: is a folder; give a file name such as {os.path.join(output, 'out.png')}")
    written = {os.path.realpath(p) for p in (output, record_path(output), checkpoint.path_for(output))}
    for path in inputs:
        if path and os.path.exists(path) and os.path.realpath(path) in written:
            raise UserError(f"--output={output}: would overwrite the input {path}")
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--output={output}: {folder} is a file, not a folder")
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


def write_outputs(output: str, result: Any, record: dict[str, Any]) -> None:
    """The image, then its record: a record on disk means the image beside it is complete."""
    image.save_image(output, result)
    record = dict(record, output=os.path.abspath(output))
    write_json(record_path(output), record, what="run record")
