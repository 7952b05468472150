"""The download against a real HTTP server on 127.0.0.1: a right file, a wrong one, a dropped connection, a body
cut short, 404 and 500, a redirect, a stall, a resumed transfer; and two converters writing one cache file.

Only 127.0.0.1 is contacted. The server runs in a thread of the test process; every handler that waits (a
stall, a barrier) waits on an event the fixture sets at teardown, and at most SERVE_WAIT_S anyway, so the server
always stops. The in-process tests pass ``backoff_s=0`` and timeouts under a second.

The command-line cases run ``python -m weights_converter`` (a few at a time, in one fixture) against a tiny
VGG-19 ``.pth``: every tensor is one float broadcast to its shape (stride 0), so the file is a few kB while the
converted weights are the real 80 MB. It is served under torchvision's real name, ``vgg19-dcbb9e9d.pth``, whose
prefix rule it cannot meet, so ``--sha256`` gives its digest (and one case shows the prefix rule refusing it).

``pytest tests/test_download.py -s`` prints the table of cases: exit status, the line printed, what is left.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.server
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from conftest import REPO_ROOT

from nst_jax import weights
from nst_jax.errors import WeightsError
from weights_converter import download

SERVE_WAIT_S = 30.0  # the longest any handler waits before giving up on its own
CLI_TIMEOUT_S = 180  # per converter process
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


# --- the server ----------------------------------------------------------------------------------------------


class Server:
    """A threaded HTTP server on 127.0.0.1: ``routes[path]`` answers a GET of ``path``; every request's path and
    headers are kept in ``requests``."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stop = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the name http.server calls)
                owner.requests.append((self.path, dict(self.headers)))
                route = owner.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a stalled handler must not hold up the teardown
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def seen(self, path: str) -> list[dict[str, str]]:
        """The headers of each request for ``path``, in order."""
        return [headers for p, headers in self.requests if p == path]

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def serve(data: bytes, *, ranges: bool = True, etag: str = '"v1"') -> Route:
    """The file, whole (200) or from the byte a ``Range: bytes=N-`` asks for (206) when ``ranges`` and the
    ``If-Range`` validator (if any) is this ``etag``."""

    def route(h):
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranges and match and h.headers.get("If-Range") in (None, etag):
            start = int(match.group(1))
        if start:
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(data) - start))
        if ranges:
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", etag)
        h.end_headers()
        h.wfile.write(data[start:])

    return route


def drop(data: bytes, at: int, *, times: int | None = None, then: Route | None = None, ranges: bool = True,
         etag: str = '"v1"') -> Route:
    """For the first ``times`` requests (``None``: all): headers promising the whole file, ``at`` bytes of it,
    then the connection is shut. After that, ``then``."""
    calls = itertools.count()

    def route(h):
        if times is not None and next(calls) >= times:
            return then(h)
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        if ranges:
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", etag)
        h.end_headers()
        h.wfile.write(data[:at])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return route


def status(code: int, *, times: int | None = None, then: Route | None = None) -> Route:
    calls = itertools.count()

    def route(h):
        if times is not None and next(calls) >= times:
            return then(h)
        h.send_error(code)

    return route


def redirect(location: str) -> Route:
    def route(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def stall(stop: threading.Event, data: bytes = b"", *, headers: bool = True) -> Route:
    """Says nothing at all (``headers=False``), or sends headers and ``data`` (a first part), then nothing, until
    the test ends (at most SERVE_WAIT_S)."""

    def route(h):
        if headers:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data) + 1000))  # promises more than it sends
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        stop.wait(SERVE_WAIT_S)
        h.close_connection = True

    return route


def trickle(stop: threading.Event, data: bytes, interval_s: float) -> Route:
    """One byte every ``interval_s`` seconds: never a stall, never done."""

    def route(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(len(data)):
            if stop.wait(interval_s):
                break
            try:
                h.wfile.write(data[i:i + 1])
            except OSError:  # the client gave up
                break
        h.close_connection = True

    return route


def barrier(parties: int, then: Route) -> Route:
    """Holds each request until ``parties`` have arrived, then answers them all together."""
    gate = threading.Barrier(parties, timeout=SERVE_WAIT_S)

    def route(h):
        gate.wait()
        then(h)

    return route


# --- in-process: download.download ---------------------------------------------------------------------------


def payload(size: int = 300_000, seed: int = 0) -> tuple[bytes, str]:
    data = np.random.default_rng(seed).bytes(size)
    return data, hashlib.sha256(data).hexdigest()


def get(url: str, folder, **kwargs) -> str:
    """``download.download`` quiet and quick: no waiting between attempts, a one-second timeout."""
    kwargs = {"progress": None, "backoff_s": 0.0, "timeout": 1.0, **kwargs}
    return download.download(url, str(folder), **kwargs)


def test_right_file_by_the_prefix_in_its_name(server, tmp_path):
    data, digest = payload()
    name = f"vgg19-{digest[:8]}.pth"
    server.routes[f"/{name}"] = serve(data)
    path = get(server.url(f"/{name}"), tmp_path / "cache")
    assert path == str(tmp_path / "cache" / name)
    assert open(path, "rb").read() == data
    assert os.listdir(tmp_path / "cache") == [name]  # no temporary file left
    server.routes.clear()  # a second call reuses the verified file without asking the server
    assert get(server.url(f"/{name}"), tmp_path / "cache") == path
    assert len(server.requests) == 1


def test_right_file_by_full_sha256(server, tmp_path):
    data, digest = payload(1000)
    server.routes["/plain.pth"] = serve(data)
    path = get(server.url("/plain.pth"), tmp_path / "c", sha256=digest.upper())
    assert open(path, "rb").read() == data


def test_no_digest_to_check_is_refused_before_any_request(server, tmp_path):
    server.routes["/plain.pth"] = serve(b"x")
    with pytest.raises(WeightsError, match=r"no SHA-256 to check .*plain.pth against .*pass --sha256=HEX"):
        get(server.url("/plain.pth"), tmp_path / "c")
    assert server.requests == [] and not os.path.exists(tmp_path / "c")


@pytest.mark.parametrize("full", [False, True], ids=["prefix", "full"])
def test_wrong_file_is_refused_and_removed(server, tmp_path, full):
    data, digest = payload(5000)
    name = "vgg19-00000000.pth" if not full else f"vgg19-{digest[:8]}.pth"
    server.routes[f"/{name}"] = serve(data)
    with pytest.raises(WeightsError, match=f"{name}: SHA-256 {digest} does not match .*--checkpoint={name}$"):
        get(server.url(f"/{name}"), tmp_path / "cache", sha256="ab" * 32 if full else None)
    assert os.listdir(tmp_path / "cache") == []


def test_body_cut_short_with_a_matching_content_length_is_caught_by_the_digest(server, tmp_path):
    data, digest = payload()
    server.routes["/vgg19.pth"] = serve(data[: len(data) // 3])  # a complete transfer of the wrong bytes
    with pytest.raises(WeightsError, match=f"SHA-256 {hashlib.sha256(data[: len(data) // 3]).hexdigest()} does "
                                           f"not match the expected {digest}"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert os.listdir(tmp_path / "cache") == [] and len(server.requests) == 1


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    data, digest = payload()
    at = 123_457
    server.routes["/vgg19.pth"] = drop(data, at, times=1, then=serve(data))
    path = get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert open(path, "rb").read() == data
    first, second = server.seen("/vgg19.pth")
    assert "Range" not in first
    assert second["Range"] == f"bytes={at}-" and second["If-Range"] == '"v1"'


def test_dropped_connection_without_range_support_starts_again(server, tmp_path):
    """The server ignores Range and sends the whole file again: it must replace, not extend, what came first."""
    data, digest = payload()
    server.routes["/vgg19.pth"] = drop(data, 100_000, times=1, then=serve(data, ranges=False), ranges=False)
    path = get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert open(path, "rb").read() == data
    assert len(server.seen("/vgg19.pth")) == 2


def test_file_changed_between_attempts_is_not_spliced(server, tmp_path):
    """If-Range carries the first answer's ETag; the server has a new file, so it answers 200 with all of it."""
    old, _ = payload(seed=1)
    new, digest = payload(seed=2)
    server.routes["/vgg19.pth"] = drop(old, 100_000, times=1, then=serve(new, etag='"v2"'))
    path = get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert open(path, "rb").read() == new


def test_connection_dropped_every_time_gives_up_after_the_attempts(server, tmp_path):
    data, digest = payload()
    server.routes["/vgg19.pth"] = drop(data, 1000, ranges=False)
    with pytest.raises(WeightsError, match=rf"cannot download .* \(the body stopped at 1000 of {len(data)} bytes; "
                                           r"gave up after 3 attempts\); download .* by hand"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest, attempts=3)
    assert len(server.requests) == 3 and os.listdir(tmp_path / "cache") == []


def test_resume_from_the_wrong_byte_is_refused(server, tmp_path):
    data, digest = payload()

    def wrong_offset(h):
        h.send_response(206)
        h.send_header("Content-Range", f"bytes 5-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - 5))
        h.end_headers()
        h.wfile.write(data[5:])

    server.routes["/vgg19.pth"] = drop(data, 1000, times=1, then=wrong_offset)
    with pytest.raises(WeightsError, match="the server sent bytes from 'bytes 5-.*', not from byte 1000"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert os.listdir(tmp_path / "cache") == []


def test_404_fails_at_once(server, tmp_path):
    with pytest.raises(WeightsError, match=r"cannot download .*vgg19-dcbb9e9d.pth \(HTTP 404 Not Found\); download "
                                           r".* by hand.*--checkpoint=vgg19-dcbb9e9d.pth$"):
        get(server.url("/vgg19-dcbb9e9d.pth"), tmp_path / "cache")
    assert len(server.requests) == 1 and os.listdir(tmp_path / "cache") == []


def test_500_is_retried_then_given_up(server, tmp_path):
    server.routes["/vgg19-dcbb9e9d.pth"] = status(500)
    with pytest.raises(WeightsError, match=r"\(HTTP 500 Internal Server Error; gave up after 4 attempts\)"):
        get(server.url("/vgg19-dcbb9e9d.pth"), tmp_path / "cache", attempts=4)
    assert len(server.requests) == 4 and os.listdir(tmp_path / "cache") == []


def test_500_once_then_the_file(server, tmp_path):
    data, digest = payload()
    server.routes["/vgg19.pth"] = status(503, times=1, then=serve(data))
    assert open(get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest), "rb").read() == data
    assert len(server.requests) == 2


def test_retries_wait_longer_each_time(server, tmp_path):
    server.routes["/vgg19.pth"] = status(502)
    started = time.monotonic()
    with pytest.raises(WeightsError, match="HTTP 502"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256="0" * 64, attempts=3, backoff_s=0.1)
    assert 0.3 <= time.monotonic() - started < 5  # 0.1 s, then 0.2 s


def test_redirect_to_the_file_and_retries_go_to_the_file(server, tmp_path):
    data, digest = payload()
    server.routes["/moved/vgg19.pth"] = redirect(server.url("/real/vgg19.pth"))
    server.routes["/real/vgg19.pth"] = drop(data, 50_000, times=1, then=serve(data))
    path = get(server.url("/moved/vgg19.pth"), tmp_path / "cache", sha256=digest)
    assert open(path, "rb").read() == data and os.path.basename(path) == "vgg19.pth"
    assert [p for p, _ in server.requests] == ["/moved/vgg19.pth", "/real/vgg19.pth", "/real/vgg19.pth"]
    assert server.seen("/real/vgg19.pth")[1]["Range"] == "bytes=50000-"


@pytest.mark.parametrize("headers", [False, True], ids=["no-answer", "headers-then-nothing"])
def test_stalled_server_times_out(server, tmp_path, headers):
    server.routes["/vgg19.pth"] = stall(server.stop, headers=headers)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"\(the server sent nothing for 0.5 s after 0 bytes: stalled\)"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256="0" * 64, timeout=0.5)
    assert time.monotonic() - started < 5
    assert len(server.requests) == 1 and os.listdir(tmp_path / "cache") == []


def test_stall_after_some_bytes_is_retried_a_bounded_number_of_times(server, tmp_path):
    server.routes["/vgg19.pth"] = stall(server.stop, b"x" * 1000)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"the server stalled for 0.5 s at 1000 bytes; gave up after 3 attempts"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256="0" * 64, timeout=0.5, attempts=3)
    assert time.monotonic() - started < 8
    assert len(server.requests) == 3 and os.listdir(tmp_path / "cache") == []


def test_too_slow_stops_at_the_time_limit(server, tmp_path):
    server.routes["/vgg19.pth"] = trickle(server.stop, b"y" * 10_000, 0.02)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"only \d+ bytes after 0.5 s, the time limit: too slow"):
        get(server.url("/vgg19.pth"), tmp_path / "cache", sha256="0" * 64, max_seconds=0.5)
    assert time.monotonic() - started < 5 and os.listdir(tmp_path / "cache") == []


def test_connection_refused_fails_at_once(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError, match=r"cannot download .* \(\[Errno 111\] Connection refused\); download"):
        get(f"http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth", tmp_path / "cache", attempts=5, backoff_s=10)
    assert os.listdir(tmp_path / "cache") == []


def test_file_url(tmp_path):
    data, digest = payload(5000)
    src = tmp_path / f"vgg19-{digest[:8]}.pth"
    src.write_bytes(data)
    assert open(get(src.as_uri(), tmp_path / "cache"), "rb").read() == data


def test_stand_in_opener_with_a_short_body(tmp_path):
    """The ``opener`` seam: a response object with fewer bytes than its Content-Length."""
    import io

    class Short(io.BytesIO):
        headers = {"Content-Length": "100"}

    with pytest.raises(WeightsError, match="the body stopped at 60 of 100 bytes; gave up after 2 attempts"):
        get(download.URL, tmp_path / "cache", opener=lambda request, timeout: Short(b"x" * 60), attempts=2)
    assert os.listdir(tmp_path / "cache") == []


def test_progress_bar_and_retry_notes(server, tmp_path):
    import io

    data, digest = payload(2_000_000)
    server.routes["/vgg19.pth"] = drop(data, 1_000_000, times=1, then=serve(data))
    out = io.StringIO()
    get(server.url("/vgg19.pth"), tmp_path / "cache", sha256=digest, progress=out)
    text = out.getvalue()
    assert "vgg19.pth: the body stopped at 1000000 of 2000000 bytes; retrying in 0 s (attempt 2 of 5)" in text
    assert "2.0/2.0 MB" in text and "#" * 30 in text


def test_hash_prefix_and_default_url(monkeypatch):
    assert download.hash_prefix(download.URL) == "dcbb9e9d"
    assert download.hash_prefix("https://example.org/model.pth") is None
    monkeypatch.delenv(download.URL_ENV, raising=False)
    assert download.default_url() == download.URL
    monkeypatch.setenv(download.URL_ENV, "http://127.0.0.1:1/x-0123abcd.pth")
    assert download.default_url() == "http://127.0.0.1:1/x-0123abcd.pth"


# --- the command line: every fault case, one converter process each -----------------------------------------


def tiny_vgg19_pth(path, scale: float = 1.0) -> str:
    """A torchvision-layout VGG-19 state dict whose every tensor is one float broadcast to its shape (stride 0):
    kernel of the k-th convolution = scale * (k + 1) / 100, its bias = -scale * (k + 1) / 1000. A few kB."""
    torch = pytest.importorskip("torch")
    from nst_jax import vgg

    shapes = vgg.param_shapes()["params"]
    state = {}
    for k, name in enumerate(vgg.CONV_LAYERS):
        h, w, cin, cout = shapes[name]["kernel"].shape
        index = vgg.TORCHVISION_INDEX[name]
        state[f"features.{index}.weight"] = torch.full((1,), scale * (k + 1) / 100).expand(cout, cin, h, w)
        state[f"features.{index}.bias"] = torch.full((1,), -scale * (k + 1) / 1000).expand(cout)
    torch.save(state, path)
    return str(path)


def assert_tiny_weights(path: str, digest: str) -> None:
    """``path`` is the tiny checkpoint converted: it verifies, and every value is the one put in."""
    from nst_jax import vgg

    loaded = weights.load(path)
    assert loaded.source == "torchvision" and loaded.origin == f"vgg19-dcbb9e9d.pth (sha256 {digest})"
    for k, name in enumerate(vgg.CONV_LAYERS):
        kernel, bias = loaded.params["params"][name]["kernel"], loaded.params["params"][name]["bias"]
        assert kernel.shape[:2] == (3, 3)
        np.testing.assert_array_equal(kernel, np.float32((k + 1) / 100))
        np.testing.assert_array_equal(bias, np.float32(-(k + 1) / 1000))


def left_on_disk(folder) -> str:
    """What a case left in its cache folder, for the table."""
    if not os.path.exists(folder):
        return "nothing (no cache folder)"
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, d), folder) + "/" for d in dirs]
        found += [f"{os.path.relpath(os.path.join(root, f), folder)} ({os.path.getsize(os.path.join(root, f))} B)"
                  for f in files]
    return ", ".join(sorted(found)) or "nothing (empty cache folder)"


TABLE: dict[str, tuple[int, str, str]] = {}
REAL = "/models/vgg19-dcbb9e9d.pth"  # torchvision's file name, as the default URL has it


def _cases(srv: Server, good: bytes, other: bytes, digest: str, closed_port: int) -> dict[str, tuple[list, dict]]:
    """case: (converter arguments, extra environment). The route for each case is set here too."""
    sha = f"--sha256={digest}"
    routes = {
        "ok": serve(good), "env": drop(good, len(good) // 2, times=1, then=serve(good)),
        "rule": serve(good), "wrong": serve(other), "dropped": drop(good, len(good) // 2, ranges=False),
        "short": serve(good[: len(good) // 2]), "404": status(404), "500": status(500),
        "redirect": redirect(srv.url("/ok" + REAL)), "stall": stall(srv.stop, headers=False),
    }
    for key, route in routes.items():
        srv.routes[f"/{key}{REAL}"] = route
    refused = f"http://127.0.0.1:{closed_port}{REAL}"
    return {
        "right file, right digest (--url, --sha256)": ([f"--url={srv.url('/ok' + REAL)}", sha], {}),
        "connection dropped mid-body, resumed with Range ($NST_JAX_WEIGHTS_URL)": (
            [sha], {download.URL_ENV: srv.url("/env" + REAL)}),
        "redirect (302) to the real file": ([f"--url={srv.url('/redirect' + REAL)}", sha], {}),
        "name's digest rule (dcbb9e9d) without --sha256": ([f"--url={srv.url('/rule' + REAL)}"], {}),
        "wrong file (another state dict)": ([f"--url={srv.url('/wrong' + REAL)}", sha], {}),
        "connection dropped mid-body, every time, no Range": ([f"--url={srv.url('/dropped' + REAL)}", sha], {}),
        "truncated body, Content-Length matching it": ([f"--url={srv.url('/short' + REAL)}", sha], {}),
        "HTTP 404": ([f"--url={srv.url('/404' + REAL)}", sha], {}),
        "HTTP 500, every time": ([f"--url={srv.url('/500' + REAL)}", sha], {}),
        "server stalls (--timeout=1)": ([f"--url={srv.url('/stall' + REAL)}", sha, "--timeout=1"], {}),
        "connection refused": ([f"--url={refused}", sha], {}),
        "no digest: name without one, no --sha256": ([f"--url={srv.url('/ok/models/vgg19.pth')}"], {}),
        "--sha256 not 64 hex digits": ([f"--url={srv.url('/ok' + REAL)}", "--sha256=dcbb9e9d"], {}),
    }


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """{case: (completed process, its cache folder)} for every command-line case; the server's request log."""
    folder = tmp_path_factory.mktemp("pth")
    good = open(tiny_vgg19_pth(folder / "good.pth"), "rb").read()
    other = open(tiny_vgg19_pth(folder / "other.pth", scale=2.0), "rb").read()
    digest = hashlib.sha256(good).hexdigest()
    srv = Server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cases = _cases(srv, good, other, digest, closed_port)
    caches = {case: tmp_path_factory.mktemp("cache") / "nst_jax" for case in cases}

    def one(case):
        args, env = cases[case]
        env = {"NST_JAX_CACHE": str(caches[case]), download.URL_ENV: "", **env}
        return subprocess.run([sys.executable, "-m", "weights_converter", *args], capture_output=True, text=True,
                              cwd=REPO_ROOT, env={**os.environ, **env}, timeout=CLI_TIMEOUT_S)

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            procs = dict(zip(cases, pool.map(one, cases), strict=True))
    finally:
        srv.close()
    yield {case: (procs[case], caches[case]) for case in cases}, srv, digest
    if TABLE:
        print("\n\n| case | exit | line printed | left on disk |\n|---|---|---|---|")
        for case, (code, line, left) in TABLE.items():
            print(f"| {case} | {code} | `{line}` | {left} |")


def _row(case, proc, cache) -> str:
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    TABLE[case] = (proc.returncode, lines[0] if lines else "", left_on_disk(cache))
    return lines[0] if lines else ""


WORKED = ["right file, right digest (--url, --sha256)",
          "connection dropped mid-body, resumed with Range ($NST_JAX_WEIGHTS_URL)", "redirect (302) to the real file"]
FAILED = {  # case: what the one error line must hold
    "name's digest rule (dcbb9e9d) without --sha256": "vgg19-dcbb9e9d.pth: SHA-256 {digest} does not match the "
                                                       "expected dcbb9e9d",
    "wrong file (another state dict)": "does not match the expected {digest}",
    "connection dropped mid-body, every time, no Range": "the body stopped at ",
    "truncated body, Content-Length matching it": "does not match the expected {digest}",
    "HTTP 404": "(HTTP 404 Not Found)",
    "HTTP 500, every time": "(HTTP 500 Internal Server Error; gave up after 5 attempts)",
    "server stalls (--timeout=1)": "(the server sent nothing for 1 s after 0 bytes: stalled)",
    "connection refused": "Connection refused",
    "no digest: name without one, no --sha256": "no SHA-256 to check",
    "--sha256 not 64 hex digits": "--sha256=dcbb9e9d: not a SHA-256 (64 hexadecimal digits)",
}


@pytest.mark.parametrize("case", WORKED)
@pytest.mark.slow
def test_cli_download_converts_and_caches(case, cli_runs):
    runs, srv, digest = cli_runs
    proc, cache = runs[case]
    _row(case, proc, cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == f"wrote {cache / 'vgg19-torchvision.msgpack'} (source: torchvision)\n"
    assert os.listdir(cache) == ["vgg19-torchvision.msgpack"]  # the .pth and its folder are gone
    assert_tiny_weights(str(cache / "vgg19-torchvision.msgpack"), digest)
    if "Range" in case:
        first, second = srv.seen("/env" + REAL)
        assert "Range" not in first and re.fullmatch(r"bytes=\d+-", second["Range"])


@pytest.mark.parametrize("case", list(FAILED))
@pytest.mark.slow
def test_cli_download_fault_is_one_line_and_leaves_nothing(case, cli_runs):
    runs, srv, digest = cli_runs
    proc, cache = runs[case]
    line = _row(case, proc, cache)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr == line + "\n" and line.startswith("error: "), proc.stderr
    assert FAILED[case].format(digest=digest) in line, line
    assert not os.path.exists(cache) or os.listdir(cache) == []  # no .pth, no .part, no converted file


@pytest.mark.slow
def test_cli_no_request_before_the_flags_are_checked(cli_runs):
    runs, srv, _ = cli_runs
    assert srv.seen("/ok/models/vgg19.pth") == []
    assert len(srv.seen("/404" + REAL)) == 1 and len(srv.seen("/500" + REAL)) == 5
    assert len(srv.seen("/dropped" + REAL)) == 5 and len(srv.seen("/stall" + REAL)) == 1


# --- two converters, one cache file --------------------------------------------------------------------------


@pytest.mark.slow
def test_two_converters_at_once_leave_one_valid_file(tmp_path):
    """Both download (the server answers only once both have asked), convert and write the same cache file. A
    watcher reads the file whenever it exists: every read must be the whole, final file, never part of one."""
    good = open(tiny_vgg19_pth(tmp_path / "good.pth"), "rb").read()
    digest = hashlib.sha256(good).hexdigest()
    srv = Server()
    srv.routes[REAL] = barrier(2, serve(good))
    cache = tmp_path / "cache"
    target = cache / "vgg19-torchvision.msgpack"
    env = {**os.environ, "NST_JAX_CACHE": str(cache), download.URL_ENV: srv.url(REAL)}
    seen: list[str] = []
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while not done.is_set() and time.monotonic() < deadline:
            try:
                with open(target, "rb") as f:
                    seen.append(hashlib.sha256(f.read()).hexdigest())
            except FileNotFoundError:
                pass
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "weights_converter", f"--sha256={digest}"], cwd=REPO_ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [p.communicate(timeout=CLI_TIMEOUT_S) for p in procs]
    finally:
        done.set()
        watcher.join(timeout=10)
        srv.close()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert len(srv.requests) == 2
    assert os.listdir(cache) == ["vgg19-torchvision.msgpack"]  # no temporary file, no download folder
    assert_tiny_weights(str(target), digest)
    final = weights.file_sha256(str(target))
    assert seen and set(seen) == {final}, (len(seen), len(set(seen)))
