"""Downloads torchvision's ImageNet VGG-19 checkpoint with a progress bar and a SHA-256 check.

The file is ``IMAGENET1K_V1`` of ``torchvision.models.vgg19`` (548 MB). torchvision does not publish the full
SHA-256 of its checkpoints; its rule (``torch.hub``'s ``check_hash``) is that the file name carries the first
hex digits of the SHA-256 (``vgg19-dcbb9e9d.pth``), so that prefix is what is checked by default. Pass
``sha256`` (``--sha256`` on the command line) to check the full digest instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from nst_jax import weights
from nst_jax.errors import WeightsError

URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


def hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix torchvision puts in a file name (``vgg19-dcbb9e9d.pth`` -> ``dcbb9e9d``), if any."""
    match = _HASH_IN_NAME.search(os.path.basename(url))
    return match.group(1) if match else None


def _manual_hint(url: str) -> str:
    name = os.path.basename(url)
    return (
        f"download {url} by hand on a machine with internet, copy it here and run: "
        f"python -m weights_converter --checkpoint={name}"
    )


def _check_digest(digest: str, url: str, sha256: str | None) -> None:
    expected = (sha256 or hash_prefix(url) or "").lower()
    if not expected:
        raise WeightsError(f"no SHA-256 to check {url} against; pass --sha256=HEX")
    if not digest.startswith(expected):
        raise WeightsError(
            f"{os.path.basename(url)}: SHA-256 {digest} does not match the expected {expected}; "
            f"the download is corrupt or not the expected file; run again, or {_manual_hint(url)}"
        )


def _progress_bar(out: IO[str], name: str, done: int, total: int | None) -> None:
    if total:
        filled = int(30 * done / total)
        out.write(f"\r{name} [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        out.write(f"\r{name} {done / 1e6:.1f} MB")
    out.flush()


def download(
    url: str = URL,
    folder: str | None = None,
    *,
    sha256: str | None = None,
    opener: Callable[..., Any] = urllib.request.urlopen,
    progress: IO[str] | None = sys.stderr,
    timeout: float = 60.0,
) -> str:
    """Downloads ``url`` into ``folder`` (default :func:`nst_jax.weights.cache_dir`) and checks its SHA-256.

    The bytes go to a temporary file in ``folder``, renamed to the final name only once the hash matches, so
    an interrupted or corrupt download never leaves a file that looks complete. A file already there is
    reused if its hash matches.

    Args:
      url: the checkpoint's address; its file name's hash prefix is checked unless ``sha256`` is given.
      folder: where to put it.
      sha256: the full expected SHA-256 (hex), if known.
      opener: ``urllib.request.urlopen`` or a stand-in taking ``(url, timeout=...)`` and returning a file-like
        response (with ``.headers``, optionally), for tests.
      progress: where the progress bar goes (``None``: nowhere).

    Returns:
      The path of the downloaded file.

    Raises:
      WeightsError: a network error (offline, HTTP error, truncated transfer) or a hash mismatch; the message
        says how to fetch the file by hand.
    """
    folder = folder or weights.cache_dir()
    name = os.path.basename(url.split("?", 1)[0]) or "checkpoint.pth"
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        _check_digest(weights.file_sha256(path), url, sha256)
        return path
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise WeightsError(f"cannot write in {folder} ({e.strerror or e})") from None
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with opener(url, timeout=timeout) as response:
                    headers = getattr(response, "headers", None)
                    length = headers.get("Content-Length") if headers is not None else None
                    total = int(length) if length and length.isdigit() else None
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            _progress_bar(progress, name, done, total)
            except OSError as e:  # URLError, HTTPError, timeouts and resets are all OSErrors
                reason = getattr(e, "reason", None) or e.strerror or e
                if isinstance(e, urllib.error.HTTPError):
                    reason = f"HTTP {e.code} {e.reason}"
                raise WeightsError(f"cannot download {url} ({reason}); {_manual_hint(url)}") from None
            except (
                Exception
            ) as e:  # http.client.HTTPException (IncompleteRead, BadStatusLine, ...) and the like
                raise WeightsError(
                    f"cannot download {url} ({type(e).__name__}); {_manual_hint(url)}"
                ) from None
            finally:
                if progress is not None and done:
                    progress.write("\n")
                    progress.flush()
            if total is not None and done != total:
                raise WeightsError(
                    f"download of {url} stopped at {done} of {total} bytes; {_manual_hint(url)}"
                )
            f.flush()
            os.fsync(f.fileno())
        _check_digest(digest.hexdigest(), url, sha256)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
