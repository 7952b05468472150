"""Video in and out (PyAV, frame folders), the command line's errors, and whole clips: the temporal term against
independent frames, frame count and rate kept, a scene cut, interruption and --resume (nst_jax.video)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from nst_jax import clip, flow, image, video_io
from nst_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = "/work/shared/images/tubingen.jpg"


def texture(hw=(240, 320), seed=0) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).uniform(size=(*hw, 3)).astype(np.float32)
    out = cv2.GaussianBlur(noise, (0, 0), 2.0) * 0.5 + cv2.GaussianBlur(noise, (0, 0), 6.0) * 0.5
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


def camera_frames(n: int, hw=(32, 48), seed=0) -> list[np.ndarray]:
    """A panning, zooming camera over the shared photograph (or a generated texture where it is absent)."""
    photo = image.load_image(PHOTO) if os.path.exists(PHOTO) and seed == 0 else texture(seed=seed)
    return flow.camera_clip(photo, n, hw, pan=(1.0, 0.5), zoom=1.01)[0]


def write_folder(folder, frames):
    os.makedirs(folder, exist_ok=True)
    for k, f in enumerate(frames):
        image.save_image(os.path.join(folder, f"f{k}.png"), f)  # f10 after f9: natural order
    return str(folder)


# ------------------------------------------------------------------------------------------------ video_io


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(30000, 1001)])
def test_mp4_keeps_frame_count_and_rate(tmp_path, fps):
    frames = camera_frames(7, (30, 40))
    path = str(tmp_path / "a.mp4")
    assert video_io.write_mp4(path, iter(frames), fps) == 7
    src = video_io.open_source(path)
    assert (src.frame_count, src.fps, src.size, src.kind) == (7, fps, (30, 40), "video")
    back = list(video_io.read_frames(src))
    assert len(back) == 7
    assert np.abs(back[3] - frames[3]).mean() < 0.03  # H.264 at crf 18
    assert [np.abs(b - frames[3]).mean() for b in back].index(min(np.abs(b - frames[3]).mean() for b in back)) == 3


def test_frame_range_reads_that_part(tmp_path):
    frames = camera_frames(6, (16, 24))
    src = video_io.open_source(write_folder(tmp_path / "in", frames))
    assert src.kind == "frames" and src.fps is None and src.frame_count == 6
    start, end = video_io.parse_range("2:5", src.frame_count)
    part = list(video_io.read_frames(src, start, end))
    assert len(part) == 3 and np.abs(part[0] - frames[2]).max() < 1 / 255 + 1e-6
    assert video_io.parse_range("", 6) == (0, 6) and video_io.parse_range(":4", 6) == (0, 4)
    assert video_io.parse_range("3:", 6) == (3, 6)
    for bad in ("5:2", "0:7", "6:", "a:b", "3", "2:2"):
        with pytest.raises(UserError, match="--frames"):
            video_io.parse_range(bad, 6)


def test_gif_input(tmp_path):
    import av

    path = str(tmp_path / "a.gif")
    with av.open(path, "w") as c:
        s = c.add_stream("gif", rate=10)
        s.width, s.height, s.pix_fmt = 24, 16, "rgb8"
        for f in camera_frames(5, (16, 24)):
            for p in s.encode(av.VideoFrame.from_ndarray(image.to_uint8(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    src = video_io.open_source(path)
    assert (src.frame_count, src.size, src.fps) == (5, (16, 24), Fraction(10))
    assert len(list(video_io.read_frames(src))) == 5


def test_even_shape():
    assert video_io.even_shape((33, 47)) == (32, 46) and video_io.even_shape((1, 2)) == (2, 2)


# ------------------------------------------------------------------------------------------------ errors


def run_video(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "NST_JAX_COMPILE_CACHE": "off"}
    return subprocess.run([sys.executable, "-m", "nst_jax.video", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def assert_user_error(proc, pattern: str, out_dir) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr
    assert not os.path.exists(out_dir), os.listdir(out_dir)


def bad_input(tmp_path, case: str) -> tuple[list[str], str]:
    """(arguments, what the message says) of each bad input."""
    if case == "unreadable":
        p = tmp_path / "bad.mp4"
        p.write_bytes(b"this is not a video" * 50)
        return [f"--input={p}"], "not a video PyAV can read"
    if case == "empty":
        p = tmp_path / "empty.mp4"
        p.write_bytes(b"")
        return [f"--input={p}"], "empty file"
    if case == "no_frames":
        (tmp_path / "none").mkdir()
        (tmp_path / "none" / "notes.txt").write_text("no frames here")
        return [f"--input={tmp_path / 'none'}"], "a folder with no frames"
    if case == "sizes":
        folder = write_folder(tmp_path / "mixed", camera_frames(2, (16, 24)))
        image.save_image(os.path.join(folder, "f2.png"), np.zeros((20, 24, 3), np.float32))
        return [f"--input={folder}"], "frames of different sizes"
    folder = write_folder(tmp_path / "ok", camera_frames(3, (16, 24)))
    return [f"--input={folder}", "--frames=2:1"], "selects no frame"


@pytest.mark.parametrize("case", ["unreadable", "no_frames", "sizes", "range"])
def test_bad_inputs_exit_2_in_one_line_writing_nothing(tmp_path, case):
    args, pattern = bad_input(tmp_path, case)
    out_dir = tmp_path / "out"
    assert_user_error(run_video(*args, f"--output={out_dir}/v.mp4", "--weights=/nonexistent.msgpack"), pattern,
                      out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["empty", "extension", "resume"])
def test_more_errors(tmp_path, case, random_weights):
    folder = write_folder(tmp_path / "ok", camera_frames(3, (16, 24)))
    args, pattern = {
        "empty": (bad_input(tmp_path, "empty")[0], "empty file"),
        "extension": ([f"--input={folder}", f"--output={tmp_path / 'out' / 'v.avi'}"], "unsupported extension"),
        "resume": ([f"--input={folder}", "--resume", f"--weights={random_weights}", "--size=32"],
                   "no frames of an earlier run"),
    }[case]
    if not any(a.startswith("--output") for a in args):
        args = [*args, f"--output={tmp_path / 'out' / 'v.mp4'}"]
    assert_user_error(run_video(*args), pattern, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ whole clips


def clip_config(**fields):
    from configs import default

    c = default.get_config()
    c.size, c.steps, c.output = 48, 8, ""
    c.style = ""
    for k, v in fields.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> str:
    return write_folder(tmp_path_factory.mktemp("clip") / "in", camera_frames(5, (32, 48)))


@pytest.fixture(scope="module")
def runs(clip_folder, random_weights, tmp_path_factory):
    """The same clip independent (--temporal_weight=0) and temporal, through the library entry point."""
    from nst_jax import video

    out = tmp_path_factory.mktemp("runs")
    records = {}
    for name, weight in (("independent", 0.0), ("temporal", clip.TEMPORAL_WEIGHT)):
        cfg = clip_config(output=str(out / f"{name}.mp4"), weights=random_weights)
        compare = str(out / "independent.json") if name == "temporal" else None
        assert video.run(cfg, input_path=clip_folder, temporal_weight=weight, fps=12, compare_with=compare) == 0
        with open(out / f"{name}.json") as f:
            records[name] = json.load(f)
    return out, records


@pytest.mark.slow
def test_temporal_term_lowers_the_warping_error(runs):
    _, records = runs
    ind, tmp = records["independent"], records["temporal"]
    assert tmp["mean_warping_error"] < ind["mean_warping_error"] / 2, (tmp["mean_warping_error"],
                                                                       ind["mean_warping_error"])
    assert [f["prior"] for f in tmp["frames"]] == [False, True, True, True, True]
    assert not any(f["prior"] for f in ind["frames"])
    assert all("temporal" in f["final_losses"] for f in tmp["frames"][1:])
    assert tmp["temporal"]["energy_weight"] == pytest.approx(200.0 * 4 * 6 * 512)  # 32x48: relu4_2 is 4x6x512


@pytest.mark.slow
def test_record_and_mp4_keep_count_and_rate(runs):
    out, records = runs
    r = records["temporal"]
    assert len(r["frames"]) == 5 and r["output"]["fps"] == "12" and r["output"]["size"] == [32, 48]
    src = video_io.open_source(str(out / "temporal.mp4"))
    assert (src.frame_count, src.fps, src.size) == (5, Fraction(12), (32, 48))
    for f in r["frames"]:
        assert f["steps"] == 8 and f["time_s"] > 0 and np.isfinite(f["final_energy"])
    errors = [f["warping_error"] for f in r["frames"][1:]]
    assert r["mean_warping_error"] == pytest.approx(np.mean(errors))
    sheet = image.load_image(str(out / "temporal_compare.png"))
    assert sheet.shape[1] > 4 * 160


@pytest.mark.slow
def test_frame_folder_output_odd_size_and_a_cut(tmp_path, random_weights):
    from nst_jax import video

    frames = camera_frames(3, (33, 47)) + camera_frames(3, (33, 47), seed=5)  # a cut at frame 3
    folder = write_folder(tmp_path / "in", frames)
    out = tmp_path / "styled"
    assert video.run(clip_config(output=str(out), weights=random_weights, size=47), input_path=folder, fps=10) == 0
    with open(str(out) + ".json") as f:
        r = json.load(f)
    assert r["cuts"] == [3] and r["frames"][3]["prior"] is False and r["frames"][3]["warping_error"] is None
    assert r["frames"][4]["prior"] is True
    written = video_io.open_source(str(out))
    assert (written.frame_count, written.size) == (6, (33, 47))  # a folder keeps the odd size
    assert r["output"]["fps"] == "10"


@pytest.mark.slow
def test_interrupted_clip_resumes_to_the_same_frames(clip_folder, random_weights, runs, tmp_path, monkeypatch):
    from nst_jax import cli, video

    class StopAfterTwoFrames:
        """Ctrl-C once two frames are written."""

        def __init__(self):
            self.folder = str(tmp_path / "v_frames")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __call__(self):
            return clip.frames_done(self.folder) >= 2

    cfg = clip_config(output=str(tmp_path / "v.mp4"), weights=random_weights)
    with monkeypatch.context() as m:
        m.setattr(cli, "StopOnInterrupt", StopAfterTwoFrames)
        assert video.run(cfg, input_path=clip_folder, fps=12) == 130
    assert clip.frames_done(str(tmp_path / "v_frames")) == 2
    assert not os.path.exists(tmp_path / "v.mp4") and not os.path.exists(tmp_path / "v.json")
    cfg.resume = True
    assert video.run(cfg, input_path=clip_folder, fps=12) == 0
    out, _ = runs
    for k in range(5):  # the same frames as the uninterrupted temporal run
        a = image.load_image(clip.frame_path(str(tmp_path / "v_frames"), k))
        b = image.load_image(clip.frame_path(str(out / "temporal_frames"), k))
        np.testing.assert_array_equal(a, b)
    # another setting refuses to continue these frames
    cfg.steps = 9
    with pytest.raises(UserError, match="differs in config, config.steps"):
        video.run(cfg, input_path=clip_folder, fps=12)


# ------------------------------------------------------------------------------------------------ trained networks


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Untrained johnson and adain model files (the post-process does not care what the network learnt)."""
    import jax
    from conftest import he_params

    from nst_jax.nets import adain, johnson, model_file

    root = tmp_path_factory.mktemp("networks")
    small = {"johnson_channels": [8, 16, 32], "johnson_residual_blocks": 1}
    net = johnson.TransformerNet(channels=(8, 16, 32), residual_blocks=1)
    paths = {"johnson": str(root / "johnson.msgpack"), "adain": str(root / "adain.msgpack")}
    model_file.save(paths["johnson"], "johnson", {"net": johnson.init_params(jax.random.key(0), net)}, "torchvision",
                    small, 0)
    model_file.save(paths["adain"], "adain", {"net": adain.init_params(jax.random.key(1)),
                                              "encoder": adain.encoder_params(he_params(0))}, "torchvision", {}, 0)
    return paths


def test_network_frames_hold_kept_pixels_to_the_warped_frame():
    rng = np.random.default_rng(0)
    f_x, warped = rng.random((6, 8, 3)).astype(np.float32), rng.random((6, 8, 3)).astype(np.float32)
    mask = (rng.random((6, 8)) > 0.3).astype(np.float32)
    for lam in (0.0, 1.0, 3.0):
        out, info = clip.network_frames(lambda rgb: f_x, consistency=lam)(f_x, clip.Prior(warped, mask))
        c = lam * mask[..., None]
        np.testing.assert_allclose(out, (f_x + c * warped) / (1 + c), rtol=1e-6)
        assert info["steps"] == 0
    out, _ = clip.network_frames(lambda rgb: f_x)(f_x, None)  # a first frame, a cut: the network's own output
    np.testing.assert_array_equal(out, f_x)


def test_a_network_over_a_clip_with_and_without_consistency(clip_folder, networks, tmp_path):
    from nst_jax import video

    errors = {}
    for lam in (0.0, 1.0):
        out = tmp_path / f"c{lam:g}.mp4"
        assert video.run(clip_config(output=str(out)), input_path=clip_folder, fps=12, model=networks["johnson"],
                         consistency=lam) == 0
        with open(tmp_path / f"c{lam:g}.json") as f:
            record = json.load(f)
        assert len(record["frames"]) == 5 and record["weights"]["net"] == "johnson"
        assert "johnson network" in record["weights"]["described"]
        assert [fr["prior"] for fr in record["frames"]] == [False] + [lam > 0] * 4
        errors[lam] = record["mean_warping_error"]
    assert errors[1.0] < errors[0.0] / 2, errors


@pytest.mark.parametrize("case", ["adain_without_style", "damaged"])
def test_network_errors_exit_2_in_one_line_writing_nothing(clip_folder, networks, tmp_path, case):
    model = networks["adain"]
    pattern = "needs a style image"
    if case == "damaged":
        model = str(tmp_path / "damaged.msgpack")
        with open(networks["johnson"], "rb") as f:
            data = f.read()
        with open(model, "wb") as f:
            f.write(data[: len(data) // 2])
        pattern = "damaged.msgpack"
    out_dir = tmp_path / "out"
    assert_user_error(run_video(f"--input={clip_folder}", f"--output={out_dir}/v.mp4", f"--model={model}"), pattern,
                      out_dir)
