"""The live preview (nst_jax/preview.py, ``--preview``): the server on its own, the run's ``on_image`` hook, and
the command line end to end, through urllib and, where a Chromium is installed, in a real headless browser.

The runs use configs/test.py with random VGG-19 weights (not pretrained). The browser test drives Debian's
Chromium (``apt-get install chromium``) through Playwright when it is importable, else through Chromium's own
``--headless --dump-dom`` and ``--screenshot``; without a Chromium it skips and says so.
``NST_JAX_PREVIEW_SHOT=docs/preview.png`` makes it run at 160 px and keep its screenshot there (the README's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from nst_jax import cli, preview, runner
from nst_jax.loop import Progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------
# The server alone (no run).


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_server_serves_page_state_image_and_stop():
    stops = []
    with preview.Preview("title x", on_stop=lambda: stops.append(1)) as page:
        url = page.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(":0/")
        code, body, head = get(url)
        assert code == 200 and head["Content-Type"].startswith("text/html")
        html = body.decode()
        assert 'id="stop"' in html and 'id="image"' in html and "<canvas" in html
        # No external assets: nothing is loaded from another address.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "@import" not in html
        assert get(url + "image.png")[0] == 404  # no image yet
        state = json.loads(get(url + "state.json")[1])
        assert state["title"] == "title x" and state["image"] == 0 and state["status"] == "starting"

        rgb = np.zeros((6, 8, 3), np.float32)
        rgb[2, 3] = (1.0, 0.5, 0.25)
        page.progress(Progress(2, 10, {"total": 3.0, "style": 2.0, "content": float("nan")}, 4.0))
        page.image(2, rgb)
        code, png, head = get(url + "image.png")
        assert code == 200 and head["Content-Type"] == "image/png" and head["X-Image-Version"] == "1"
        got = np.asarray(Image.open(BytesIO(png)))
        assert got.shape == (6, 8, 3) and tuple(got[2, 3]) == (255, 128, 64) and got.sum() == 255 + 128 + 64
        state = json.loads(get(url + "state.json")[1])  # strict JSON: NaN became null
        assert state["step"] == 2 and state["steps"] == 10 and state["eta_s"] == pytest.approx(2.0)
        assert state["terms"] == {"total": 3.0, "style": 2.0, "content": None}
        assert state["series"] == [{"label": "run", "step": [2], "terms": {"total": [3.0], "style": [2.0],
                                                                         "content": [None]}}]
        page.image(4, rgb * 0.5)
        assert get(url + "image.png")[2]["X-Image-Version"] == "2"

        # Stop: refused without the header a cross-site page cannot send, and for another Host (rebinding).
        assert get(url + "stop", method="POST")[0] == 403 and not page.stop_requested
        port = url.rsplit(":", 1)[1].strip("/")
        assert get(url + "state.json", {"Host": f"evil.example:{port}"})[0] == 403
        assert get(url + "stop", {"X-NST-Preview": "stop", "Host": "evil.example"}, "POST")[0] == 403
        assert get(url + "stop", {"X-NST-Preview": "stop"}, "POST")[0] == 200
        assert page.stop_requested and page.should_stop() and stops == [1]
        get(url + "stop", {"X-NST-Preview": "stop"}, "POST")
        assert stops == [1]  # once
        assert json.loads(get(url + "state.json")[1])["stop_requested"] is True
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "state.json", timeout=5)  # closed


def test_series_per_method_per_scale_and_thinned():
    page = preview.Preview()
    page.begin("gram", "method 1 of 2")
    for step in (2, 4, 6):
        page.progress(Progress(step, 6, {"total": float(step)}, 1.0, scales=2))
    page.progress(Progress(2, 6, {"total": 1.0}, 1.0, scale=1, scales=2))  # a coarse-to-fine run's next scale
    page.begin("bn", "method 2 of 2")
    for step in range(1, 2 * preview.MAX_POINTS + 2):
        page.progress(Progress(step, 10**6, {"total": 1.0}, 1.0))
    series = page.state()["series"]
    assert [s["label"] for s in series] == ["gram", "gram, scale 2", "bn"]  # begin() named the first scale's
    assert series[0]["step"] == [2, 4, 6] and series[1]["step"] == [2]
    assert len(series[2]["step"]) <= preview.MAX_POINTS and series[2]["step"][-1] == 2 * preview.MAX_POINTS + 1
    assert len(series[2]["terms"]["total"]) == len(series[2]["step"])
    assert page.state()["part"] == "method 2 of 2"


# ---------------------------------------------------------------------------------------------------------
# The run's hook.


@pytest.mark.slow
def test_on_image_after_every_chunk_of_every_scale(random_weights, tmp_path):
    c = test_config.get_config()
    c.weights, c.output, c.scales, c.steps = random_weights, str(tmp_path / "o.png"), 2, 4
    seen, steps_seen = [], []
    page = preview.Preview()  # the Python API's use of the page (not served here)
    result, _ = runner.stylize(None, None, c, should_stop=page.should_stop,
                               on_image=cli.tee(lambda step, rgb: seen.append((step, rgb.copy())), page.image),
                               progress=cli.tee(lambda p: steps_seen.append(p.step), page.progress))
    assert [s for s, _ in seen] == [2, 4, 2, 4] == steps_seen  # chunk 2, steps 4, at each of 2 scales
    assert all(rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[-1] == 3 for _, rgb in seen)
    assert seen[0][1].shape[0] * 2 == seen[-1][1].shape[0] == result.shape[0]
    np.testing.assert_array_equal(seen[-1][1], result)  # the last one is the result (no colour step, no denoise)
    assert not np.array_equal(seen[2][1], seen[3][1])
    state = page.state()
    assert state["image"] == 4 and state["image_shape"] == list(result.shape[:2]) and state["step"] == 4
    assert [(s["label"], s["step"]) for s in state["series"]] == [("run, scale 1", [2, 4]), ("run, scale 2", [2, 4])]
    shown = np.asarray(Image.open(BytesIO(page.png()[1])))  # the page's PNG of the last image: the result
    np.testing.assert_array_equal(shown, (result * 255.0 + 0.5).astype(np.uint8))


def test_tee_calls_each_callback():
    calls = []
    both = cli.tee(lambda *a: calls.append(("a", a)), None, lambda *a: calls.append(("b", a)))
    both(1, 2)
    assert calls == [("a", (1, 2)), ("b", (1, 2))]


# ---------------------------------------------------------------------------------------------------------
# The command line end to end.


class PreviewRun:
    """``python -m nst_jax.main --preview`` in a subprocess; stderr drained in a thread; ``url`` once printed."""

    def __init__(self, *args: str, program: str = "nst_jax.main"):
        self.proc = subprocess.Popen([sys.executable, "-m", program, "--preview", *args], cwd=REPO,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = None
        deadline = time.time() + 180
        while self.url is None and time.time() < deadline and self.proc.poll() is None:
            found = [m.group(1) for line in list(self.lines) if (m := re.match(r"preview: (\S+)", line))]
            self.url = found[0] if found else None
            time.sleep(0.1)
        assert self.url, "".join(self.lines)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def state(self) -> dict:
        return json.loads(get(self.url + "state.json")[1])

    def wait_for(self, cond, what: str, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.state()
            if cond(s):
                return s
            assert self.proc.poll() is None, "".join(self.lines[-20:])
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_cli_preview_end_to_end_without_a_browser(random_weights, tmp_path):
    out = tmp_path / "o.png"
    run = PreviewRun(f"--config={REPO}/configs/test.py", f"--weights={random_weights}", f"--output={out}",
                     "--steps=100000", "--checkpoint_every=0")
    try:
        assert get(run.url)[0] == 200
        first = run.wait_for(lambda s: s["image"] >= 1, "a first image")
        png1 = get(run.url + "image.png")[1]
        second = run.wait_for(lambda s: s["image"] > first["image"] + 1, "a later image")
        png2 = get(run.url + "image.png")[1]
        assert png1 != png2 and second["step"] > first["step"]
        assert second["status"] == "running" and second["eta_s"] > 0 and second["series"][0]["terms"]["style"]
        assert get(run.url + "stop", {"X-NST-Preview": "stop"}, "POST")[0] == 200
        assert run.wait() == 130, run.stderr()
    finally:
        run.kill()
    text = run.stderr()
    stopped = int(re.search(r"interrupted at step (\d+); checkpoint", text).group(1))
    assert "Stop pressed on the preview page" in text
    assert os.path.isfile(tmp_path / "o.ckpt") and os.path.isfile(out)  # checkpoint and the current image
    # Resumable: --resume continues from the checkpoint to a few steps further.
    proc = subprocess.run([sys.executable, "-m", "nst_jax.main", f"--config={REPO}/configs/test.py",
                           f"--weights={random_weights}", f"--output={out}", f"--steps={stopped + 4}", "--resume"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["resumed_from"] == stopped and record["steps_run"] == stopped + 4
    assert not os.path.exists(tmp_path / "o.ckpt")


@pytest.mark.slow
def test_compare_preview_shows_each_method_and_stops(random_weights, tmp_path):
    out = tmp_path / "cmp"
    run = PreviewRun(f"--config={REPO}/configs/test.py", f"--weights={random_weights}", f"--output_dir={out}",
                     "--methods=gram,bn", "--steps=100000", "--nometrics", program="nst_jax.compare")
    try:
        s = run.wait_for(lambda s: s["image"] >= 1, "a first image")
        assert s["label"] == "gram" and s["part"] == "method 1 of 2" and s["series"][0]["label"] == "gram"
        assert get(run.url + "stop", {"X-NST-Preview": "stop"}, "POST")[0] == 200
        assert run.wait() == 130, run.stderr()
    finally:
        run.kill()
    assert re.search(r"interrupted: gram at step \d+, its current image in .*gram\.png; 0 method\(s\) complete",
                     run.stderr())
    assert sorted(os.listdir(out)) == ["gram.png"]  # the current image; no record, no sheet


@pytest.mark.slow
def test_preview_refuses_batch_mode(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nst_jax.main", "--preview", f"--content_dir={tmp_path}",
                           f"--output_dir={tmp_path / 'o'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == ("error: --preview shows a single run; batch mode "
                                                            "(--content_dir) has none")


def chromium() -> str | None:
    for name in (os.environ.get("NST_JAX_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


PIXELS_JS = """() => { const i = document.getElementById('image'); if (!i.complete || !i.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(i, 0, 0);
  return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(','); }"""


@pytest.mark.slow
def test_preview_in_a_headless_browser(random_weights, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium, or NST_JAX_CHROMIUM=path): the browser test "
                    "of the preview page did not run")
    shot_to = os.environ.get("NST_JAX_PREVIEW_SHOT")
    steps = ["--size=160", "--config.chunk=5", "--steps=300"] if shot_to else ["--steps=100000"]
    run = PreviewRun(f"--config={REPO}/configs/test.py", f"--weights={random_weights}",
                     f"--output={tmp_path / 'out.png'}", "--checkpoint_every=0", *steps)
    shot = str(tmp_path / "preview.png")
    try:
        run.wait_for(lambda s: s["image"] >= 1, "a first image")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None
        if sync_playwright is not None:
            _drive_with_playwright(sync_playwright, browser, run, shot, bool(shot_to))
        else:
            _drive_with_chromium_alone(browser, run, shot)
        assert run.wait() == 130, run.stderr()
    finally:
        run.kill()
    assert os.path.isfile(tmp_path / "out.ckpt") and os.path.isfile(tmp_path / "out.png")
    assert "interrupted at step" in run.stderr()
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    if shot_to:
        shutil.copyfile(shot, shot_to)


def _drive_with_playwright(sync_playwright, browser: str, run: PreviewRun, shot: str, slow: bool) -> None:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": 1100, "height": 640})
            page.goto(run.url)
            page.wait_for_function("document.getElementById('image').naturalWidth > 0", timeout=60_000)
            first = page.evaluate(PIXELS_JS)
            src = page.eval_on_selector("#image", "i => i.src")
            page.wait_for_function("s => document.getElementById('image').src !== s", arg=src, timeout=60_000)
            page.wait_for_function("document.getElementById('image').complete", timeout=60_000)
            second = page.evaluate(PIXELS_JS)
            assert first and second and hashlib.sha256(first.encode()).digest() != hashlib.sha256(
                second.encode()).digest(), "the displayed image did not change"
            assert re.search(r"step \d+ / (100000|300)", page.inner_text("#progress"))
            assert "left" in page.inner_text("#progress")
            if slow:  # the README's screenshot: let the curves grow a little
                run.wait_for(lambda s: s["step"] >= 100, "100 steps", timeout=600)
                page.wait_for_timeout(1000)
            page.screenshot(path=shot)
            page.click("#stop")
            assert page.is_disabled("#stop")
            page.wait_for_function("/stopping|interrupted|ended/.test(document.getElementById('status')"
                                   ".textContent)", timeout=60_000)
            run.wait()
            page.wait_for_function("/ended|interrupted/.test(document.getElementById('status').textContent)",
                                   timeout=30_000)
        finally:
            b.close()


def _drive_with_chromium_alone(browser: str, run: PreviewRun, shot: str) -> None:
    """Without Playwright: Chromium's own DOM dump (after the page's script ran) twice, a screenshot, and the
    Stop request the button sends."""

    def dump() -> str:
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                               "--dump-dom", run.url], capture_output=True, text=True, timeout=120)
        return proc.stdout

    steps = []
    for _ in range(2):
        dom = dump()
        assert 'id="stop"' in dom
        steps.append(int(re.search(r"image at step (\d+)", dom).group(1)))
    assert steps[1] != steps[0], "the displayed image did not change"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                    f"--screenshot={shot}", "--window-size=1100,640", run.url], capture_output=True, timeout=120)
    assert get(run.url + "stop", {"X-NST-Preview": "stop"}, "POST")[0] == 200
