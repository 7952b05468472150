"""Bad inputs, interrupted runs, untrusted checkpoints and numerical edge cases, met as a user meets them: through
``python -m nst_jax.main`` and ``python -m weights_converter`` in subprocesses.

Every error a user can cause must end with exit status 2, exactly one stderr line ``error: ...`` naming the file
or flag and the problem, no traceback, and no output file (image, record, checkpoint, temporary) left behind.
The commands of each group run together (a few at a time) in one fixture; each case is then its own test.

``pytest tests/test_robustness.py -s`` prints the table of cases, exit statuses and messages at the end.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO_ROOT
from flax import serialization
from PIL import Image

from configs import test as test_config
from nst_jax import checkpoint, image, optimizers, placement, runner, vgg, weights

# Every test runs the command lines in subprocesses or several whole runs: all of them are slow.
pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO_ROOT, "configs", "test.py")
MAIN, CONVERTER = "nst_jax.main", "weights_converter"
WORKERS = max(2, min(4, os.cpu_count() or 2))
TABLE: dict[str, tuple[int, str]] = {}  # case -> (exit status, message), for the printed table


# --- helpers -------------------------------------------------------------------------------------------------


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_all(commands: dict[str, list[str]], workers: int = WORKERS) -> dict[str, subprocess.CompletedProcess]:
    """Runs the commands ``workers`` at a time; each result as ``subprocess.run`` gives it."""

    def one(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {case: pool.submit(one, cmd) for case, cmd in commands.items()}
        return {case: f.result() for case, f in futures.items()}


def note(case: str, proc: subprocess.CompletedProcess) -> None:
    """A row of the table: the ``error:`` line, else the last stderr line (the ``wrote ...`` summary)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    TABLE[case] = (proc.returncode, errors[0] if errors else (lines[-1] if lines else ""))


def user_error(case: str, proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Asserts exit 2 and a stderr of exactly one ``error: `` line holding every needle; returns the line."""
    note(case, proc)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def worked(case: str, proc: subprocess.CompletedProcess) -> None:
    note(case, proc)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr


def assert_nothing_written(folder) -> None:
    """No image, record, checkpoint or temporary file in the output folder (which may not exist)."""
    if os.path.isdir(folder):
        assert os.listdir(folder) == [], os.listdir(folder)


def record_of(output) -> dict:
    with open(os.path.splitext(str(output))[0] + ".json") as f:
        return json.load(f)


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flip_png_crc(data: bytes, kind: bytes) -> bytes:
    """``data`` with the checksum of its first ``kind`` chunk inverted (the chunk's bytes intact)."""
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == kind:
            crc_at = pos + 8 + length
            return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at:crc_at + 4]) + data[crc_at + 4:]
        pos += 12 + length
    raise ValueError(f"no {kind!r} chunk")


def folder_digest(folder) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module", autouse=True)
def print_table():
    yield
    if TABLE:
        width = max(map(len, TABLE))
        print("\n\n| case | exit | message |\n|---|---|---|")
        for case, (status, message) in TABLE.items():
            print(f"| {case:<{width}} | {status} | `{message}` |")


# --- inputs --------------------------------------------------------------------------------------------------


def _vgg16_tree() -> dict:
    """VGG-16's convolutions in nst_jax's layout: VGG-19's without conv3_4, conv4_4 and conv5_4."""
    shapes = vgg.param_shapes()["params"]
    return {"params": {name: {k: np.zeros(v.shape, np.float32) for k, v in shapes[name].items()}
                       for name in shapes if not name.endswith("_4")}}


def _write_images(folder) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), np.uint8)
    Image.fromarray(rgb).save(folder / "photo.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a note, not a picture\n")
    jpeg = (folder / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = (folder / "photo.png").read_bytes()
    (folder / "badcrc_header.png").write_bytes(flip_png_crc(png, b"IHDR"))
    (folder / "badcrc_data.png").write_bytes(flip_png_crc(png, b"IDAT"))  # Pillow alone decodes this silently
    Image.fromarray(rgb[:1, :1]).save(folder / "one_pixel.png")
    # A header claiming 100000 x 100000 RGB pixels (30 GB decoded) in a file of 100 bytes.
    (folder / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))
    Image.fromarray(rng.integers(0, 65536, (40, 60), np.uint16)).save(folder / "gray16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb).quantize(16).save(folder / "palette_alpha.png", transparency=0)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    # Stored 40 wide and 20 high, tagged "rotate 90 degrees clockwise to view" (orientation 6): upright 20 x 40.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (20, 40, 3), np.uint8)).save(folder / "exif_rotated.jpg", exif=exif)
    Image.new("RGB", (40, 40), (0, 0, 0)).save(folder / "black.png")
    Image.new("RGB", (40, 40), (255, 255, 255)).save(folder / "white.png")
    for name, mode in [("gray16.png", "I;16"), ("cmyk.jpg", "CMYK"), ("palette_alpha.png", "P")]:
        with Image.open(folder / name) as img:
            assert img.mode == mode
    (folder / "note.txt").write_text("a file, not a folder\n")


def _write_weights(folder, good: str) -> None:
    data = open(good, "rb").read()
    (folder / "truncated.msgpack").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.msgpack").write_bytes(os.urandom(64) + data[64:])
    # The right header, another network: what weights.dumps() refuses to write, written anyway.
    (folder / "vgg16.msgpack").write_bytes(serialization.msgpack_serialize(
        {"format": weights.FORMAT, "version": weights.VERSION, "source": "torchvision", "origin": "vgg16",
         "params": _vgg16_tree()}))


def _write_checkpoints(folder) -> None:
    """torch.save-style .pth files: booby-trapped ones, and torchvision's VGG-16 (not VGG-19)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from test_converter import _Call, _Storage, _Tensor, write_zip_pth

    one = _Tensor(_Storage("0", 1), 0, (1,), (1,))
    zero = {"0": b"\0" * 4}
    marker = str(folder / "pwned")
    for name, call in [("os_system", _Call(os.system, f"touch {marker}")),
                       ("eval", _Call(eval, f"open({marker!r}, 'w').close()")),
                       ("subprocess", _Call(subprocess.call, ["touch", marker]))]:
        write_zip_pth(folder / f"{name}.pth", OrderedDict(ok=one, evil=call), zero)  # after a genuine tensor
    write_zip_pth(folder / "traversal.pth", {"w": one}, zero, extra=[("archive/../../evil", b"x")])
    write_zip_pth(folder / "short.pth", {"w": _Tensor(_Storage("0", 6), 0, (6,), (1,))},
                  {"0": np.zeros(5, np.float32).tobytes()})
    torch.manual_seed(0)
    layers = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in layers.state_dict().items()}, folder / "vgg16.pth")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, random_weights):
    """A folder of input files, good and bad (outputs go elsewhere), and a digest of it to check it stays so."""
    folder = tmp_path_factory.mktemp("inputs")
    _write_images(folder)
    _write_weights(folder, random_weights)
    _write_checkpoints(folder)
    if os.geteuid() != 0:
        (folder / "readonly").mkdir()
        (folder / "readonly").chmod(0o555)
    yield folder
    if (folder / "readonly").exists():
        (folder / "readonly").chmod(0o755)


# --- user errors: inputs, outputs, flags, weights files, untrusted checkpoints --------------------------------

# case: (program, arguments, needles the error line must hold). {in}: the inputs folder; {out}: this case's own
# output folder (it must stay empty). nst_jax.main also gets --config=configs/test.py, --weights (random VGG-19)
# and --output={out}/o.png first; a later flag of the same name wins.
ERRORS: dict[str, tuple[str, list[str], list[str]]] = {
    "missing file": (MAIN, ["--content={in}/no_such.jpg"], ["image {in}/no_such.jpg: no such file"]),
    "folder instead of a file": (MAIN, ["--content={in}"], ["image {in}: is a folder, not an image file"]),
    "empty file": (MAIN, ["--content={in}/empty.jpg"], ["image {in}/empty.jpg: empty file"]),
    "text file named .jpg": (MAIN, ["--content={in}/text.jpg"], ["image {in}/text.jpg: not an image file"]),
    "truncated JPEG": (MAIN, ["--content={in}/truncated.jpg"],
                       ["image {in}/truncated.jpg: cannot be decoded", "truncated"]),
    "PNG with a bad CRC (header chunk)": (MAIN, ["--content={in}/badcrc_header.png"],
                                          ["image {in}/badcrc_header.png: ", "corrupt PNG file", "checksum in IHDR"]),
    "PNG with a bad CRC (data chunk)": (MAIN, ["--content={in}/badcrc_data.png"],
                                        ["image {in}/badcrc_data.png: ", "corrupt PNG file", "checksum in IDAT"]),
    "1x1 image": (MAIN, ["--content={in}/one_pixel.png"],
                  ["image {in}/one_pixel.png: 1x1 px is too small; images need at least 8 px a side"]),
    "decompression bomb (PNG header claims 100000x100000)": (
        MAIN, ["--content={in}/bomb.png"], ["image {in}/bomb.png: too many pixels (10000000000 pixels"]),
    "--style: missing file": (MAIN, ["--style={in}/no_such.jpg"], ["image {in}/no_such.jpg: no such file"]),
    "--style: PNG with a bad CRC": (MAIN, ["--style={in}/badcrc_data.png"], ["image {in}/badcrc_data.png: "]),
    "--init: text file named .jpg": (MAIN, ["--init={in}/text.jpg"], ["image {in}/text.jpg: not an image file"]),
    # configs/test.py stops at relu3_1, behind two poolings: 4 px a side at least; 40x60 at --size=4 is 3x4.
    "image too small after resizing (--size=4)": (
        MAIN, ["--content={in}/photo.png", "--size=4"],
        ["content image ({in}/photo.png) is 4x3 px after resizing; layer relu3_1 needs at least 4 px", "--size"]),
    "output path equal to the content image": (
        MAIN, ["--content={in}/photo.png", "--output={in}/photo.png"],
        ["--output={in}/photo.png: would overwrite the input {in}/photo.png"]),
    "output path equal to the style image": (
        MAIN, ["--style={in}/photo.jpg", "--output={in}/photo.jpg"],
        ["--output={in}/photo.jpg: would overwrite the input {in}/photo.jpg"]),
    "unwritable output folder (chmod 0o555)": (
        MAIN, ["--output={in}/readonly/o.png"], ["folder {in}/readonly is not writable (Permission denied)"]),
    "unwritable output folder (under a file)": (
        MAIN, ["--output={in}/note.txt/o.png"],
        ["--output={in}/note.txt/o.png: {in}/note.txt is a file, not a folder"]),
    "unwritable output folder (/proc)": (MAIN, ["--output=/proc/o.png"], ["--output=/proc/o.png: folder /proc is not"]),
    "--resume with no checkpoint": (MAIN, ["--resume"], ["--resume: no checkpoint {out}/o.ckpt"]),
    # Config values: a few through the command line for the one-line promise; all of them in test_config.py.
    "negative steps": (MAIN, ["--steps=-5"], ["--steps=-5: must be an integer >= 0"]),
    "unknown kernel": (MAIN, ["--kernel=sobel"], ["--kernel=sobel: unknown method 'sobel'"]),
    "style_weight NaN": (MAIN, ["--style_weight=nan"], ["--style_weight=nan: must be a finite number >= 0"]),
    "weights file truncated": (MAIN, ["--weights={in}/truncated.msgpack"],
                               ["weights file {in}/truncated.msgpack: not an nst_jax weights file, or truncated",
                                "incomplete input"]),
    "weights file corrupted": (MAIN, ["--weights={in}/corrupt.msgpack"],
                               ["weights file {in}/corrupt.msgpack: not an nst_jax"]),
    "weights file of another architecture (VGG-16)": (
        MAIN, ["--weights={in}/vgg16.msgpack"],
        ["weights file {in}/vgg16.msgpack: not VGG-19 parameters: missing params/conv3_4/bias", "conv5_4/kernel"]),
    "converter: torchvision VGG-16 .pth": (
        CONVERTER, ["--checkpoint={in}/vgg16.pth"],
        ["checkpoint {in}/vgg16.pth: not a torchvision VGG-19 state dict", "missing features.16.weight"]),
    "converter: .pth calling os.system": (
        CONVERTER, ["--checkpoint={in}/os_system.pth"],
        ["checkpoint {in}/os_system.pth: unsafe checkpoint: its pickle refers to " + os.system.__module__ + ".system"]),
    "converter: .pth calling builtins.eval": (
        CONVERTER, ["--checkpoint={in}/eval.pth"], ["checkpoint {in}/eval.pth: unsafe", "refers to builtins.eval"]),
    "converter: .pth calling subprocess": (
        CONVERTER, ["--checkpoint={in}/subprocess.pth"],
        ["checkpoint {in}/subprocess.pth: unsafe", "refers to subprocess.call"]),
    "converter: .pth with path traversal": (
        CONVERTER, ["--checkpoint={in}/traversal.pth"], ["checkpoint {in}/traversal.pth: ", "outside the archive"]),
    "converter: .pth with a short storage": (
        CONVERTER, ["--checkpoint={in}/short.pth"],
        ["checkpoint {in}/short.pth: ", "storage 0 has 20 bytes, its tensors need 24"]),
}


def _skip_reason(case: str) -> str | None:
    if "chmod" in case and os.geteuid() == 0:
        return "root writes into a 0o555 folder (the 'under a file' and '/proc' cases cover root)"
    if "/proc" in case and not os.path.isdir("/proc/self"):
        return "no /proc here"
    return None


@pytest.fixture(scope="module")
def error_runs(inputs, random_weights, tmp_path_factory):
    """{case: (completed process, its output folder)} for every case of ERRORS, plus the inputs' digest before."""
    before = folder_digest(inputs)
    commands, outs = {}, {}
    for i, (case, (program, args, _)) in enumerate(ERRORS.items()):
        if _skip_reason(case):
            continue
        outs[case] = out = tmp_path_factory.mktemp(f"case{i}") / "out"
        args = [a.format(**{"in": inputs, "out": out}) for a in args]
        if program == MAIN:
            args = [f"--config={CONFIG}", f"--weights={random_weights}", f"--output={out}/o.png", *args]
        else:
            args = [f"--output={out}/w.msgpack", *args]
        commands[case] = command(program, *args)
    procs = run_all(commands)
    return {case: (procs[case], outs[case]) for case in procs}, before


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_error(case, error_runs, inputs):
    if _skip_reason(case):
        pytest.skip(_skip_reason(case))
    runs, _ = error_runs
    proc, out = runs[case]
    needles = [n.format(**{"in": inputs, "out": out}) for n in ERRORS[case][2]]
    user_error(case, proc, "error: ", *needles)
    assert_nothing_written(out)


def test_user_errors_leave_the_inputs_alone(error_runs, inputs):
    """No input overwritten, nothing written beside them, no payload ran (the .pth files would touch 'pwned')."""
    _, before = error_runs
    assert folder_digest(inputs) == before
    assert not os.path.exists(inputs / "pwned") and not os.path.exists(inputs.parent / "evil")


# --- runs that must work (and the run that must stop on a non-finite loss) -----------------------------------

# Where only the input matters, one layer and no balancing: a run that compiles in a fraction of the time.
SHALLOW = ["--config.content_layers=relu1_1", "--config.style_layers=relu1_1", "--config.layer_weights=1",
           "--balance=none", "--steps=1"]
# case: (arguments after the common ones, output file relative to the case's folder)
RUNS: dict[str, tuple[list[str], str]] = {
    "16-bit PNG": (["--content={in}/gray16.png", "--style={in}/gray16.png", *SHALLOW], "o.png"),
    "CMYK JPEG": (["--content={in}/cmyk.jpg", "--style={in}/cmyk.jpg", *SHALLOW], "o.png"),
    "palette PNG with transparency": (["--content={in}/palette_alpha.png", "--style={in}/palette_alpha.png",
                                       *SHALLOW], "o.png"),
    "grayscale PNG": (["--content={in}/gray.png", "--style={in}/gray.png", *SHALLOW], "o.png"),
    "EXIF-rotated JPEG (orientation 6)": (["--content={in}/exif_rotated.jpg", *SHALLOW], "o.png"),
    "output in a folder that does not exist (created)": (["--content={in}/photo.png", *SHALLOW],
                                                         "new/deeper/o.png"),
    "BN loss, constant channels (all black)": (["--content={in}/black.png", "--style={in}/black.png",
                                                "--kernel=bn", "--steps=3"], "o.png"),
    "Gaussian MMD, identical samples (content == style)": (["--content={in}/photo.png", "--style={in}/photo.png",
                                                            "--kernel=gaussian", "--steps=3"], "o.png"),
    "Gaussian MMD, zero bandwidth (all black)": (["--content={in}/black.png", "--style={in}/black.png",
                                                  "--kernel=gaussian", "--steps=3"], "o.png"),
    "all white content, all black style, fusion": (["--content={in}/white.png", "--style={in}/black.png",
                                                    "--kernel=linear,gaussian,bn", "--steps=3"], "o.png"),
    # Any move away from the content makes content_weight * ||F - P||^2 overflow float32.
    "non-finite loss (--content_weight=3e38)": (["--content={in}/photo.png", "--content_weight=3e38",
                                                 "--steps=6"], "o.png"),
}


@pytest.fixture(scope="module")
def runs(inputs, random_weights, tmp_path_factory):
    """{case: (completed process, output file)} for every case of RUNS, two at a time (XLA uses both cores)."""
    commands, outs = {}, {}
    for i, (case, (args, output)) in enumerate(RUNS.items()):
        outs[case] = out = tmp_path_factory.mktemp(f"run{i}") / output
        args = [a.format(**{"in": inputs}) for a in args]
        commands[case] = command(MAIN, f"--config={CONFIG}", f"--weights={random_weights}", f"--output={out}",
                                 "--init=content", *args)
    procs = run_all(commands, workers=2)
    return {case: (procs[case], outs[case]) for case in procs}


@pytest.mark.parametrize("case", ["16-bit PNG", "CMYK JPEG", "palette PNG with transparency", "grayscale PNG"])
def test_unusual_image_modes_work(case, runs):
    proc, out = runs[case]
    worked(case, proc)
    record = record_of(out)
    assert record["content"]["size"] == [21, 32]
    assert np.reshape(record["style"]["size"], -1).tolist() == [21, 32]  # one style (several give a list)
    assert pixels(out).shape == (21, 32, 3)


def test_exif_rotated_jpeg_comes_out_upright(runs, inputs):
    case = "EXIF-rotated JPEG (orientation 6)"
    proc, out = runs[case]
    worked(case, proc)
    with Image.open(inputs / "exif_rotated.jpg") as img:
        assert img.size == (40, 20)  # stored landscape, 40 wide
    assert record_of(out)["content"]["size"] == [32, 16]  # (H, W): portrait, as the tag says
    assert pixels(out).shape == (32, 16, 3)


def test_output_in_a_missing_folder_is_created(runs):
    case = "output in a folder that does not exist (created)"
    proc, out = runs[case]
    worked(case, proc)
    assert sorted(os.listdir(out.parent)) == ["o.json", "o.png"]


@pytest.mark.parametrize("case", ["BN loss, constant channels (all black)",
                                  "Gaussian MMD, identical samples (content == style)",
                                  "Gaussian MMD, zero bandwidth (all black)",
                                  "all white content, all black style, fusion"])
def test_degenerate_inputs_give_finite_losses(case, runs):
    proc, out = runs[case]
    worked(case, proc)
    record = record_of(out)
    assert record["steps_run"] == 3
    values = [v for k, vs in record["losses"].items() if k != "step" for v in vs]
    values += list(record["final_losses"].values()) + list(record["balance"]["factors"].values())
    assert len(values) > 3 and all(np.isfinite(values)), record["losses"]


def test_non_finite_loss_stops_with_the_last_finite_image(runs, inputs):
    case = "non-finite loss (--content_weight=3e38)"
    proc, out = runs[case]
    user_error(case, proc, "error: the energy became non-finite at step 1", "kept the last finite image",
               f"it is in {out}, the record in {out.with_suffix('.json')}")
    record = record_of(out)
    assert record["nonfinite"]["step"] == 1 and record["steps_run"] == 0 and record["status"] == "nonfinite"
    assert record["losses"]["total"] and all(np.isfinite(record["losses"]["total"]))
    # The kept image is the last one with a finite energy: here the start, the content image at the run's size.
    start = image.to_uint8(image.load_image(str(inputs / "photo.png"), size=32)).astype(np.int16)
    assert np.abs(pixels(out).astype(np.int16) - start).max() <= 1


# --- interrupted runs ----------------------------------------------------------------------------------------


def test_ctrl_c_checkpoints_and_resume_is_bit_for_bit(inputs, random_weights, tmp_path):
    steps = 80  # the signal goes when step 1 is reported; the run stops after the step in progress
    common = [f"--config={CONFIG}", f"--weights={random_weights}", f"--content={inputs / 'photo.png'}",
              "--kernel=gaussian", f"--steps={steps}", "--checkpoint_every=5", "--config.chunk=1", "--seed=7"]
    # The uninterrupted run, alongside the interrupted one.
    reference = subprocess.Popen(command(MAIN, *common, f"--output={tmp_path / 'ref' / 'o.png'}"), cwd=REPO_ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "run" / "o.png"
    proc = subprocess.Popen(command(MAIN, *common, f"--output={out}"), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # progress: one line per chunk when stderr is not a terminal
        seen.append(line)
        if "it/s" in line:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    TABLE["Ctrl-C (SIGINT) during a run"] = (proc.returncode, stderr.strip().splitlines()[-1])
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "error:" not in stderr
    ckpt = checkpoint.path_for(str(out))
    assert sorted(os.listdir(out.parent)) == ["o.ckpt", "o.png"]  # checkpoint and current image; no record
    with open(ckpt, "rb") as f:
        state = serialization.msgpack_restore(f.read())
    stopped_at = int(state["step"])
    assert state["format"] == checkpoint.FORMAT and 0 < stopped_at < steps
    assert f"interrupted at step {stopped_at}; checkpoint {ckpt}; continue with --resume" in stderr

    resumed = subprocess.run(command(MAIN, *common, f"--output={out}", "--resume"), capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=300)
    worked("--resume after Ctrl-C", resumed)
    record = record_of(out)
    assert record["resumed_from"] == stopped_at and record["steps_run"] == steps
    assert sorted(os.listdir(out.parent)) == ["o.json", "o.png"]  # the checkpoint is gone once complete

    _, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_err
    assert np.array_equal(pixels(out), pixels(tmp_path / "ref" / "o.png"))


# --- numerics in-process -------------------------------------------------------------------------------------


def test_non_finite_midway_keeps_the_image_of_the_last_finite_step(random_weights, tmp_path, monkeypatch):
    """In-process: an optimiser that returns NaN updates from step 4 on; the run must return the image after
    step 4 bit for bit (what an uninterrupted 4-step run returns)."""
    loaded = weights.load(random_weights)
    config = test_config.get_config()
    config.weights, config.chunk, config.steps = random_weights, 1, 8
    four = config.copy_and_resolve_references()
    four.steps = 4
    rng = np.random.default_rng(3)
    content, style = rng.uniform(size=(24, 32, 3)), rng.uniform(size=(32, 24, 3))
    expected, _ = runner.stylize(content, style, four, weights=loaded)

    real_make = optimizers.make

    def poisoned(name, cfg):
        inner = real_make(name, cfg)

        def init(params):
            return inner.init(params), jnp.int32(0)

        def update(grads, state, params=None):
            inner_state, count = state
            updates, inner_state = inner.update(grads, inner_state, params)
            updates = jax.tree.map(lambda u: jnp.where(count >= 4, jnp.nan, u), updates)
            return updates, (inner_state, count + 1)

        return optax.GradientTransformation(init, update)

    monkeypatch.setattr(optimizers, "make", poisoned)
    # A jit of its own: the poisoned step is compiled here and dropped after, so no other run can reuse it.
    uncached = placement._batched.__wrapped__
    monkeypatch.setattr(placement, "_batched", lambda *args: uncached(*args))
    with pytest.raises(runner.NonFiniteLoss, match="non-finite at step 5") as e:
        runner.stylize(content, style, config, weights=loaded)
    assert e.value.record["steps_run"] == 4
    assert np.array_equal(e.value.image, expected)

