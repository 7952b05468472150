"""Downloads torchvision's ImageNet VGG-19 checkpoint: SHA-256 checked, retried, resumed, never left half-done.

The file is ``IMAGENET1K_V1`` of ``torchvision.models.vgg19`` (548 MB). torchvision does not publish the full
SHA-256 of its checkpoints; its rule (``torch.hub``'s ``check_hash``) is that the file name carries the first
hex digits of the SHA-256 (``vgg19-dcbb9e9d.pth``), so that prefix is what is checked by default. Pass
``sha256`` (``--sha256`` on the command line) to check the full digest instead. The address can be replaced
(``$NST_JAX_WEIGHTS_URL``, or ``--url``): a mirror, or a local server in the tests.

What a bad network does (every wait is bounded: a read waits at most ``timeout`` seconds, there are at most
``attempts`` requests, and the whole download stops after ``max_seconds``):

* a body cut short (the connection drops, or it closes before ``Content-Length`` bytes), a stall after some
  bytes, and HTTP 429/500/502/503/504: retried, after 0.5, 1, 2, 4 s. A retry asks for the rest only
  (``Range: bytes=N-``, with ``If-Range`` so a changed file is not spliced); a server that answers 200 instead of
  206 is read again from the start.
* no response at all (offline, connection refused, a server that never answers), any other HTTP error, and a
  SHA-256 mismatch: one error at once.

The bytes go to a temporary file beside the final name, renamed only once the SHA-256 matches, so no partial
or unverified file ever has the final name; the temporary file is removed on every failure.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any, BinaryIO

from nst_jax import weights
from nst_jax.errors import WeightsError

URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
URL_ENV = "NST_JAX_WEIGHTS_URL"
ATTEMPTS = 5
BACKOFF_S = 0.5  # the wait before the second attempt; it doubles for each one after
MAX_BACKOFF_S = 30.0
MAX_SECONDS = 6 * 3600.0  # 548 MB at 25 kB/s
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # answers that say "not now" rather than "no"
_CHUNK = 1 << 20
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
_HEX = re.compile(r"[0-9a-f]{8,64}")


def default_url() -> str:
    """``$NST_JAX_WEIGHTS_URL`` if set, else torchvision's address (:data:`URL`)."""
    return os.environ.get(URL_ENV) or URL


def hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix torchvision puts in a file name (``vgg19-dcbb9e9d.pth`` -> ``dcbb9e9d``), if any."""
    match = _HASH_IN_NAME.search(os.path.basename(url.split("?", 1)[0]))
    return match.group(1) if match else None


def file_name(url: str) -> str:
    """The file name an address ends with (``.../vgg19-dcbb9e9d.pth?x=1`` -> ``vgg19-dcbb9e9d.pth``)."""
    return os.path.basename(url.split("?", 1)[0].split("#", 1)[0]) or "checkpoint.pth"


def expected_sha256(url: str, sha256: str | None) -> str:
    """What the download's SHA-256 must be (or start with): ``sha256`` if given, else the prefix in the name.

    Raises:
      WeightsError: neither is there, or ``sha256`` is not hexadecimal; checked before any byte is fetched.
    """
    expected = (sha256 or hash_prefix(url) or "").lower()
    if not expected:
        raise WeightsError(f"no SHA-256 to check {url} against (its name carries none); pass --sha256=HEX")
    if not _HEX.fullmatch(expected):
        raise WeightsError(f"--sha256={sha256}: not a SHA-256 (8 to 64 hexadecimal digits)")
    return expected


def _manual_hint(url: str) -> str:
    return (
        f"download {url} by hand on a machine with internet, copy it here and run: "
        f"python -m weights_converter --checkpoint={file_name(url)}"
    )


def _check_digest(digest: str, url: str, expected: str) -> None:
    if not digest.startswith(expected):
        raise WeightsError(
            f"{file_name(url)}: SHA-256 {digest} does not match the expected {expected}; "
            f"the download is corrupt or not the expected file; run again, or {_manual_hint(url)}"
        )


class _Progress:
    """A one-line bar on ``out`` (``None``: silent), redrawn at most ten times a second, and retry notes."""

    def __init__(self, out: IO[str] | None, name: str):
        self.out, self.name, self.drawn, self.last = out, name, False, 0.0

    def bar(self, done: int, total: int | None, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.out is None or (not force and now - self.last < 0.1):
            return
        self.last, self.drawn = now, True
        if total:
            filled = min(30, int(30 * done / total))
            line = f"{self.name} [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        else:
            line = f"{self.name} {done / 1e6:.1f} MB"
        self.out.write("\r" + line)
        self.out.flush()

    def note(self, text: str) -> None:
        if self.out is not None:
            self.out.write(("\n" if self.drawn else "") + text + "\n")
            self.out.flush()
            self.drawn = False

    def end(self) -> None:
        if self.out is not None and self.drawn:
            self.out.write("\n")
            self.out.flush()


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``"bytes 100-999/1000"`` -> (100, 1000); ``".../*"`` -> (100, None); anything else -> None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not match:
        return None
    return int(match.group(1)), None if match.group(3) == "*" else int(match.group(3))


def _validator(headers: Any) -> str | None:
    """What ``If-Range`` may carry: a strong ETag, else Last-Modified (a weak ETag is not allowed there)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _fetch(
    url: str,
    f: BinaryIO,
    *,
    opener: Callable[..., Any],
    progress: _Progress,
    timeout: float,
    attempts: int,
    backoff_s: float,
    max_seconds: float,
) -> str:
    """Writes the body of ``url`` to ``f`` (empty, opened for writing), resuming where the server allows;
    returns its SHA-256 (hex). Raises :class:`WeightsError` with one line when it cannot."""
    digest, done, total, validator, where = hashlib.sha256(), 0, None, None, url
    hint = _manual_hint(url)
    deadline = time.monotonic() + max_seconds
    failure = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            wait = min(backoff_s * 2 ** (attempt - 2), MAX_BACKOFF_S)
            progress.note(f"{file_name(url)}: {failure}; retrying in {wait:g} s (attempt {attempt} of {attempts})")
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        headers = {"User-Agent": "nst_jax-weights-converter"}
        if done:
            headers["Range"] = f"bytes={done}-"
            if validator:
                headers["If-Range"] = validator
        received = 0
        try:
            request = urllib.request.Request(where, headers=headers)
            with opener(request, timeout=timeout) as response:
                status = getattr(response, "status", None) or 200
                head = getattr(response, "headers", None) or {}
                if hasattr(response, "geturl"):
                    where = response.geturl() or where  # after a redirect, retries go straight to the file
                resumed = _content_range(head.get("Content-Range")) if status == 206 else None
                if done and resumed is not None and resumed[0] == done:
                    total = resumed[1] if resumed[1] is not None else total
                elif status == 206:
                    raise WeightsError(f"cannot download {url} (the server sent bytes from "
                                       f"{head.get('Content-Range')!r}, not from byte {done}); {hint}")
                else:  # a whole file: the first answer, or a server that cannot (or will not) resume
                    if done:
                        f.seek(0)
                        f.truncate()
                        digest, done = hashlib.sha256(), 0
                    length = head.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    validator = _validator(head)
                # read1 returns what one read of the socket gives, so the deadline is checked between reads.
                read = getattr(response, "read1", response.read)
                while chunk := read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    received += len(chunk)
                    progress.bar(done, total)
                    if time.monotonic() > deadline:
                        raise WeightsError(f"cannot download {url} (only {done} bytes after {max_seconds:g} s, "
                                           f"the time limit: too slow); {hint}")
            progress.bar(done, total, force=True)
            if total is None or done >= total:
                return digest.hexdigest()
            failure = f"the body stopped at {done} of {total} bytes"
        except urllib.error.HTTPError as e:  # before URLError: HTTPError is one
            if e.code not in RETRY_STATUSES:
                raise WeightsError(f"cannot download {url} (HTTP {e.code} {e.reason}); {hint}") from None
            failure = f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:  # no connection: offline, refused, or no answer to connect
            if attempt == 1:
                raise WeightsError(f"cannot download {url} ({e.reason}); {hint}") from None
            failure = f"no connection ({e.reason})"
        except TimeoutError:
            if not received:  # a server that sends nothing is not retried: that would multiply the wait
                raise WeightsError(f"cannot download {url} (the server sent nothing for {timeout:g} s after "
                                   f"{done} bytes: stalled); {hint}") from None
            failure = f"the server stalled for {timeout:g} s at {done} bytes"
        except (OSError, http.client.HTTPException) as e:  # reset, IncompleteRead, a malformed answer
            failure = f"the connection broke at {done} bytes ({type(e).__name__})"
        except ValueError as e:  # urllib's answer to an address it cannot use ("unknown url type")
            raise WeightsError(f"cannot download {url} ({e}); {hint}") from None
        if time.monotonic() > deadline:
            break
    raise WeightsError(f"cannot download {url} ({failure}; gave up after {attempt} attempts); {hint}")


def download(
    url: str = URL,
    folder: str | None = None,
    *,
    sha256: str | None = None,
    opener: Callable[..., Any] | None = None,
    progress: IO[str] | None = sys.stderr,
    timeout: float = 60.0,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    max_seconds: float = MAX_SECONDS,
) -> str:
    """Downloads ``url`` into ``folder`` (default :func:`nst_jax.weights.cache_dir`) and checks its SHA-256.

    A file already there under the final name is reused if its hash matches.

    Args:
      url: the checkpoint's address; its file name's hash prefix is checked unless ``sha256`` is given.
      folder: where to put it.
      sha256: the full expected SHA-256 (hex), if known.
      opener: ``urllib.request.urlopen`` (the default) or a stand-in taking ``(request, timeout=...)`` and
        returning a file-like response (with ``.headers`` and ``.status``, optionally), for tests.
      progress: where the progress bar and retry notes go (``None``: nowhere).
      timeout: seconds any one wait for the server (connect, answer, next bytes) may last.
      attempts: requests at most (the first and its retries).
      backoff_s: the wait before the first retry; it doubles for each further one (at most 30 s).
      max_seconds: the whole download's time limit.

    Returns:
      The path of the downloaded, verified file.

    Raises:
      WeightsError: a network error that retries did not cure, a hash mismatch, or no hash to check against;
        one line that says how to fetch the file by hand.
    """
    expected = expected_sha256(url, sha256)
    folder = folder or weights.cache_dir()
    name = file_name(url)
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        _check_digest(weights.file_sha256(path), url, expected)
        return path
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise WeightsError(f"cannot write in {folder} ({e.strerror or e})") from None
    bar = _Progress(progress, name)
    try:
        with os.fdopen(fd, "w+b") as f:
            try:
                digest = _fetch(url, f, opener=opener or urllib.request.urlopen, progress=bar, timeout=timeout,
                                attempts=max(1, attempts), backoff_s=backoff_s, max_seconds=max_seconds)
            finally:
                bar.end()
            f.flush()
            os.fsync(f.fileno())
        _check_digest(digest, url, expected)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
