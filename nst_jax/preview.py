"""A live preview of a run in the browser: ``python -m nst_jax.main --preview`` (and ``nst_jax.compare``).

A small web page on 127.0.0.1 (a free port, printed on start) shows the current image, updated after every
chunk, the loss curves, the step and the time left, and a Stop button that ends the run as Ctrl-C does (the
command line's :class:`nst_jax.cli.StopOnInterrupt`: a checkpoint, the current image saved, ``--resume``
continues). Standard library only (``http.server`` in a daemon thread); the page's HTML, CSS and JavaScript
are inline and load nothing from elsewhere.

The optimisation never waits for the page. The run's callbacks (:meth:`Preview.progress`,
:meth:`Preview.image`) only store a reference under a lock; the PNG is encoded in the server's thread, at most
once per new image and only when the page asks for it.

Endpoints: ``GET /`` the page, ``GET /state.json`` the run's state, ``GET /image.png`` the latest image,
``POST /stop`` asks the run to stop (with the header ``X-NST-Preview: stop``, which a page from another site
cannot send without a CORS preflight this server never grants; requests whose ``Host`` is not this server's
loopback address are refused, against DNS rebinding).
"""

from __future__ import annotations

import http.server
import io
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from nst_jax.loop import Progress

STOP_HEADER = "X-NST-Preview"
MAX_POINTS = 1000
"""Points kept per loss curve: past it, every other one is dropped (the newest always kept)."""


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) float RGB in [0, 1] -> PNG bytes (zlib level 1: fast; the page is local)."""
    u8 = (np.clip(np.asarray(rgb, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: None instead."""
    return float(value) if math.isfinite(value) else None


class Preview:
    """The page's server and the run state it shows.

    ``progress`` and ``image`` are the run's callbacks (``stylize(progress=..., on_image=...)``); ``begin``
    starts a new series of loss curves (a method of a comparison); ``finish`` records how the run ended.
    ``on_stop`` is called (in a server thread) when the page's Stop is pressed; :attr:`stop_requested` says
    whether it was, so ``should_stop=preview.should_stop`` works without a callback.
    """

    def __init__(self, title: str = "nst_jax", on_stop: Callable[[], None] | None = None):
        self.title = title
        self.on_stop = on_stop
        self.stop_requested = False
        self._lock = threading.Lock()
        self._started = time.time()
        self._state: dict[str, Any] = {"status": "starting", "message": "", "label": "", "part": "", "step": 0,
                                       "steps": 0, "it_per_s": None, "eta_s": None, "terms": {}, "image": 0,
                                       "image_step": None, "image_shape": None}
        self._series: list[dict[str, Any]] = []
        self._scale = 1  # the scale of a coarse-to-fine run the last series belongs to
        self._rgb: np.ndarray | None = None
        self._png: tuple[int, bytes] | None = None  # (image version, its PNG)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # The run's side: cheap, never blocks on the page.

    def begin(self, label: str, part: str = "") -> None:
        """Starts a new series of loss curves called ``label`` (``part``: e.g. "method 2 of 11")."""
        with self._lock:
            self._series.append({"label": label, "step": [], "terms": {}})
            self._scale = 1
            self._state.update(label=label, part=part, step=0, status="running", it_per_s=None, eta_s=None)

    def progress(self, p: Progress) -> None:
        """The run's ``progress`` callback (a :class:`nst_jax.loop.Progress` after each chunk)."""
        step, steps, terms, rate = p.step, p.steps, p.losses, p.rate
        with self._lock:
            if not self._series or (p.scales > 1 and self._scale != p.scale + 1):
                # The run's first chunk, or a coarse-to-fine run's next scale: its steps count from 0 again.
                self._scale = p.scale + 1
                label = self._state["label"] or "run"
                self._series.append({"label": f"{label}, scale {self._scale}" if p.scales > 1 else label,
                                     "step": [], "terms": {}})
            series = self._series[-1]
            if terms:
                series["step"].append(int(step))
                for name, value in terms.items():
                    series["terms"].setdefault(name, []).append(_finite(value))
                if len(series["step"]) > MAX_POINTS:  # a long run: every other point, so the page stays light
                    series["step"] = series["step"][-1::-2][::-1]
                    series["terms"] = {k: v[-1::-2][::-1] for k, v in series["terms"].items()}
            self._state.update(status="running", step=int(step), steps=int(steps), it_per_s=_finite(rate),
                               eta_s=_finite(p.eta_s) if rate > 0 else None,
                               terms={k: _finite(v) for k, v in terms.items()})

    def image(self, step: int, rgb: np.ndarray) -> None:
        """The run's ``on_image`` callback: keeps a reference to the latest image (encoded on request)."""
        with self._lock:
            self._rgb = rgb
            self._state.update(image=self._state["image"] + 1, image_step=int(step), image_shape=list(rgb.shape[:2]))

    def finish(self, status: str, message: str = "") -> None:
        """How the run ended (``done``, ``interrupted``, ``failed``), shown on the page."""
        with self._lock:
            self._state.update(status=status, message=message)

    def should_stop(self) -> bool:
        return self.stop_requested

    # The page's side.

    def state(self) -> dict[str, Any]:
        """The JSON the page polls."""
        with self._lock:
            return {**self._state, "title": self.title, "elapsed_s": time.time() - self._started,
                    "stop_requested": self.stop_requested,
                    "series": [{"label": s["label"], "step": list(s["step"]),
                                "terms": {k: list(v) for k, v in s["terms"].items()}} for s in self._series]}

    def png(self) -> tuple[int, bytes] | None:
        """(version, PNG bytes) of the latest image, encoded once per version; None before the first."""
        with self._lock:
            version, rgb, cached = self._state["image"], self._rgb, self._png
        if rgb is None:
            return None
        if cached is not None and cached[0] == version:
            return cached
        encoded = (version, encode_png(rgb))
        with self._lock:
            if self._png is None or self._png[0] < version:
                self._png = encoded
        return encoded

    def request_stop(self) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            if self.on_stop is not None:
                self.on_stop()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serves the page from a daemon thread; returns its address (``port`` 0: a free one)."""
        preview = self

        class Handler(_Handler):
            owner = preview

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="nst_jax-preview", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        """Stops serving (the page then says the run has ended)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Preview:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: Preview
    server_version = "nst_jax-preview"

    def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for the progress bar
        pass

    def _send(self, code: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _local(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}")

    def do_GET(self) -> None:
        if not self._local():
            return self._send(403, b"forbidden\n", "text/plain")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        if path == "/state.json":
            return self._send(200, json.dumps(self.owner.state()).encode(), "application/json")
        if path == "/image.png":
            png = self.owner.png()
            if png is None:
                return self._send(404, b"no image yet\n", "text/plain")
            return self._send(200, png[1], "image/png", {"X-Image-Version": str(png[0])})
        return self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._local():
            return self._send(403, b"forbidden\n", "text/plain")
        if self.path != "/stop":
            return self._send(404, b"not found\n", "text/plain")
        if self.headers.get(STOP_HEADER) != "stop":
            return self._send(403, f"needs the header {STOP_HEADER}: stop\n".encode(), "text/plain")
        self.owner.request_stop()
        return self._send(200, b'{"stopping": true}', "application/json")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nst_jax preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
 h1 { font-size: 18px; margin: 0 0 8px; }
 #line { margin: 0 0 12px; font-variant-numeric: tabular-nums; }
 #main { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
 #image { width: clamp(256px, 45vw, 640px); height: auto; image-rendering: pixelated; border: 1px solid #ccc;
          background: #eee; }
 canvas { border: 1px solid #ccc; background: #fff; }
 button { font-size: 15px; padding: 6px 18px; margin: 0 0 12px; }
 #status.done { color: #176; } #status.interrupted, #status.ended { color: #a50; } #status.failed { color: #b00; }
</style></head>
<body>
<h1 id="title">nst_jax</h1>
<div id="line"><span id="status">starting</span> &middot; <span id="progress"></span></div>
<button id="stop" title="End the run as Ctrl-C does: checkpoint and current image saved, --resume continues">
Stop</button>
<div id="main">
 <div><img id="image" alt="current image (none yet)"><div id="caption"></div></div>
 <div><canvas id="terms" width="520" height="300"></canvas><br>
      <canvas id="totals" width="520" height="220" hidden></canvas></div>
</div>
<script>
"use strict";
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939"];
let shownVersion = 0, ended = false, stopping = false;
const $ = (id) => document.getElementById(id);

function hms(s) {
  if (s === null || s === undefined) return "--:--";
  s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(x).padStart(2, "0");
}

function plot(canvas, title, lines, log) {
  // lines: [{name, x: [...], y: [...]}]; log: plot log10(y).
  const g = canvas.getContext("2d"), W = canvas.width, H = canvas.height, L = 58, R = 110, T = 22, B = 28;
  g.clearRect(0, 0, W, H); g.font = "12px system-ui, sans-serif"; g.fillStyle = "#222";
  g.fillText(title, L, 14);
  const pts = lines.map(l => l.x.map((x, i) => [x, l.y[i]]).filter(p => p[1] !== null && (!log || p[1] > 0))
                               .map(p => [p[0], log ? Math.log10(p[1]) : p[1]]));
  const all = pts.flat();
  if (all.length < 1) { g.fillText("no losses yet", L, T + 20); return; }
  let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  g.strokeStyle = "#999"; g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  g.fillStyle = "#555";
  for (let k = 0; k <= 4; k++) {
    const y = y0 + (y1 - y0) * k / 4, v = log ? Math.pow(10, y) : y;
    g.fillText(v.toPrecision(3), 4, Y(y) + 4);
  }
  g.fillText(String(x0), L, H - 10); g.fillText(String(x1), W - R - 24, H - 10);
  g.fillText("step", (L + W - R) / 2, H - 10);
  pts.forEach((p, i) => {
    if (!p.length) return;
    g.strokeStyle = g.fillStyle = COLOURS[i % COLOURS.length]; g.lineWidth = 1.6; g.beginPath();
    p.forEach(([x, y], j) => j ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))); g.stroke();
    g.fillText(lines[i].name, W - R + 6, T + 12 + 14 * i);
  });
}

function draw(s) {
  const cur = s.series.length ? s.series[s.series.length - 1] : null;
  if (cur) plot($("terms"), "loss terms of " + cur.label + " (log scale)",
                Object.keys(cur.terms).map(k => ({name: k, x: cur.step, y: cur.terms[k]})), true);
  const many = s.series.length > 1;
  $("totals").hidden = !many;
  if (many) plot($("totals"), "total energy relative to its first value",
                 s.series.filter(x => x.terms.total && x.terms.total.length).map(x => {
                   const t = x.terms.total, first = t.find(v => v !== null && v > 0) || 1;
                   return {name: x.label, x: x.step, y: t.map(v => v === null ? null : v / first)};
                 }), true);
}

async function poll() {
  if (ended) return;
  let s;
  try { s = await (await fetch("state.json", {cache: "no-store"})).json(); }
  catch (e) {
    ended = true; $("status").textContent = "the run has ended (its server closed)"; $("status").className = "ended";
    $("stop").disabled = true; return;
  }
  $("title").textContent = s.title;
  const st = stopping && s.status === "running" ? "stopping after this chunk" : s.status;
  $("status").textContent = st + (s.message ? ": " + s.message : ""); $("status").className = s.status;
  const rate = s.it_per_s === null ? "-" : s.it_per_s.toFixed(2);
  $("progress").textContent = (s.label ? s.label + (s.part ? " (" + s.part + ")" : "") + " \\u00b7 " : "") +
      "step " + s.step + " / " + s.steps + " \\u00b7 " + rate + " it/s \\u00b7 " + hms(s.eta_s) + " left" +
      " \\u00b7 " + hms(s.elapsed_s) + " elapsed";
  if (s.image !== shownVersion && s.image > 0) {
    shownVersion = s.image; $("image").src = "image.png?v=" + s.image;
    $("caption").textContent = "image at step " + s.image_step + " (" + s.image_shape[1] + " x " +
        s.image_shape[0] + " px)";
  }
  if (s.status !== "running" && s.status !== "starting") $("stop").disabled = true;
  draw(s);
  setTimeout(poll, 400);
}

$("stop").onclick = async () => {
  $("stop").disabled = true; stopping = true;
  try { await fetch("stop", {method: "POST", headers: {"X-NST-Preview": "stop"}}); } catch (e) {}
};
poll();
</script></body></html>
"""
