"""Converts a PyTorch VGG-19 checkpoint into the parameter file nst_jax loads.

    python -m weights_converter                      # download torchvision's IMAGENET1K_V1 VGG-19, convert it
    python -m weights_converter --checkpoint=vgg19-dcbb9e9d.pth
    python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth
    python -m weights_converter --url=https://mirror.example/vgg19-dcbb9e9d.pth   # or $NST_JAX_WEIGHTS_URL

The output goes to ``$NST_JAX_CACHE`` (else ``$XDG_CACHE_HOME/nst_jax``, else ``~/.cache/nst_jax``) as
``vgg19-<source>.msgpack`` unless ``--output`` says otherwise; the main program finds it there. A download goes
to a folder of its own in the cache (so two converters at once cannot delete each other's file) and is deleted
once converted; the output is written atomically, so two converters writing one file leave one whole file.
Errors a user can cause are printed as one line ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

from absl import app, flags, logging

from nst_jax.atomic import check_writable
from nst_jax.errors import UserError, WeightsError, exit_user_error, parse_flags

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "A torch.save-d VGG-19 state dict (.pth). Default: download torchvision's IMAGENET1K_V1.",
)
# A plain string, not an enum flag, so a bad value is a one-line error with exit status 2 like every other.
_SOURCE = flags.DEFINE_string(
    "source",
    "torchvision",
    "Which preprocessing the weights expect: torchvision (ImageNet mean/std, RGB in [0, 1]) or caffe (BGR, "
    "0-255, mean pixel subtracted; jcjohnson's vgg19-d01eb7cb.pth).",
)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the parameters. Default: the cache folder.")
_SHA256 = flags.DEFINE_string(
    "sha256", None, "Full SHA-256 (64 hex digits) the checkpoint must have. Default for a download: the prefix "
    "in its file name (torchvision's rule)."
)
_URL = flags.DEFINE_string(
    "url", None, "Where to download the checkpoint from. Default: $NST_JAX_WEIGHTS_URL, else torchvision's "
    "vgg19-dcbb9e9d.pth. Its file name's hash prefix is checked unless --sha256 is given."
)
# A string, parsed here, for the same reason as --source: absl's own float flag fails with usage text and status 1.
_TIMEOUT = flags.DEFINE_string(
    "timeout", "60", "Download: seconds to wait for the server (to connect, to answer, for the next bytes) "
    "before giving up on it.")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UserError(f"--timeout={text}: must be a number of seconds > 0")
    return value


def run(checkpoint: str | None, source: str, output: str | None, sha256: str | None, url: str | None = None,
        timeout: str | float = 60.0) -> str:
    """Downloads if needed, converts, writes; returns the output path. Every flag is checked before the
    download starts and before any file is written."""
    if checkpoint and not os.path.isfile(checkpoint):
        what = "is a folder, not a file" if os.path.isdir(checkpoint) else "no such file"
        raise WeightsError(f"checkpoint {checkpoint}: {what}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UserError(f"--sha256={sha256}: not a SHA-256 (64 hexadecimal digits)")
    if checkpoint and url:
        raise UserError("--url and --checkpoint exclude each other: --url downloads the checkpoint")
    timeout = _seconds(str(timeout))
    # Imported here, and convert (which imports JAX) only when there is something to convert, so that every
    # error before that comes at once.
    from nst_jax import weights
    from weights_converter.download import default_url, download, expected_sha256

    if source not in weights.SOURCES:
        raise UserError(f"--source must be one of {', '.join(weights.SOURCES)}, not {source!r}")
    output = output or weights.default_path(source)
    check_writable(output, "vgg19.msgpack")  # before a 548 MB download; nothing is created here
    if checkpoint:
        if sha256 and weights.file_sha256(checkpoint) != sha256.lower():
            raise WeightsError(f"checkpoint {checkpoint}: its SHA-256 does not match --sha256={sha256}")
        from weights_converter.convert import convert

        return convert(checkpoint, output, source)
    if source != "torchvision":
        raise UserError(
            "--source=caffe needs --checkpoint=FILE (the Caffe VGG-19 conversion, e.g. "
            "vgg19-d01eb7cb.pth); only torchvision's weights are downloaded"
        )
    url = url or default_url()
    expected_sha256(url, sha256)  # no digest to check against: refused before a byte is fetched
    cache = weights.cache_dir()
    try:
        os.makedirs(cache, exist_ok=True)
        # A folder of this process's own: another converter running at once neither reads nor deletes the file.
        private = tempfile.mkdtemp(prefix=".download-", dir=cache)
    except OSError as e:
        raise WeightsError(f"cannot write in {cache} ({e.strerror or e})") from None
    try:
        progress = sys.stderr if sys.stderr.isatty() else None  # a redrawn bar is noise in a log file
        downloaded = download(url, private, sha256=sha256, progress=progress, timeout=timeout)
        from weights_converter.convert import convert

        convert(downloaded, output, source)
    finally:
        shutil.rmtree(private, ignore_errors=True)  # the converted file is what is kept; the .pth is 548 MB
    return output


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # JAX's notes (e.g. no TPU found) would add lines to a one-line error
    try:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments {' '.join(argv[1:])}; use --checkpoint=FILE")
        output = run(_CHECKPOINT.value, _SOURCE.value, _OUTPUT.value, _SHA256.value, _URL.value, _TIMEOUT.value)
    except UserError as e:
        exit_user_error(str(e))
    print(f"wrote {output} (source: {_SOURCE.value})")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
