"""Outputs: nothing is created before every input, flag and the weights have been checked; two writers of one
``--output`` leave one run's image with that run's record.

The command-line cases run ``python -m nst_jax.main`` (two at a time) with their output in a folder that does
not exist yet; after a failure it must still not exist.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO_ROOT
from flax import serialization

from nst_jax import image, outputs
from nst_jax.errors import UserError

CONFIG = os.path.join(REPO_ROOT, "configs", "test.py")
SHALLOW = ["--config.content_layers=relu1_1", "--config.style_layers=relu1_1", "--config.layer_weights=1",
           "--balance=none", "--steps=1"]


def sha256_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- check_output and prepare_output -------------------------------------------------------------------------


def test_check_output_creates_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "o.png"
    outputs.check_output(str(out), [])
    assert os.listdir(tmp_path) == []
    outputs.prepare_output(str(out))
    assert os.listdir(out.parent) == []  # the folder, and no trial file left in it


@pytest.mark.parametrize(
    "output,message",
    [
        ("note.txt/sub/o.png", "--output={t}/note.txt/sub/o.png: {t}/note.txt is a file, not a folder"),
        ("o.gif", "--output={t}/o.gif: unsupported extension .gif; use .png, .jpg or .jpeg"),
        ("photo.png", "--output={t}/photo.png: would overwrite the input {t}/photo.png"),
        ("", "--output is empty"),
    ],
    ids=["under-a-file", "extension", "overwrites-input", "empty"],
)
def test_check_output_refuses(tmp_path, output, message):
    (tmp_path / "note.txt").write_text("x")
    (tmp_path / "photo.png").write_bytes(b"x")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserError) as e:
        outputs.check_output(str(tmp_path / output) if output else "", [str(tmp_path / "photo.png")])
    assert str(e.value) == message.format(t=tmp_path)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_check_output_refuses_a_read_only_folder_above_a_missing_one(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"folder .*/ro/new cannot be created: .*/ro is not writable"):
            outputs.check_output(str(tmp_path / "ro" / "new" / "o.png"), [])
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_prepare_output_refuses_what_only_a_write_can_tell(tmp_path):
    """/proc says yes to os.access for root; the trial write says no."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    with pytest.raises(UserError, match=r"--output=/proc/o.png: folder /proc is not"):
        outputs.check_output("/proc/o.png", [])
        outputs.prepare_output("/proc/o.png")


# --- write_outputs: the pair, and two writers ----------------------------------------------------------------


def test_record_names_the_sha256_of_its_image(tmp_path):
    out = tmp_path / "new" / "o.png"
    rgb = np.random.default_rng(0).uniform(size=(8, 12, 3)).astype(np.float32)
    outputs.write_outputs(str(out), rgb, {"seed": 1})
    record = json.loads((tmp_path / "new" / "o.json").read_text())
    assert record == {"seed": 1, "output": str(out), "output_sha256": sha256_of(out)}
    assert sorted(os.listdir(out.parent)) == ["o.json", "o.png"]


def test_two_writers_leave_one_writers_pair(tmp_path, monkeypatch):
    """Two threads write different images and records to one output, with a slow disk (a random pause before
    each file): every time, the record left names the image left."""
    real_save, real_json = image.save_image, outputs.write_json

    def slow(write):
        def slowly(*args, **kwargs):
            time.sleep(random.uniform(0, 0.01))  # the window in which the other writer could slip in
            return write(*args, **kwargs)

        return slowly

    monkeypatch.setattr(image, "save_image", slow(real_save))
    monkeypatch.setattr(outputs, "write_json", slow(real_json))
    random.seed(0)
    out = str(tmp_path / "o.png")
    pictures = [np.full((8, 8, 3), v, np.float32) for v in (0.2, 0.8)]
    for trial in range(20):
        threads = [threading.Thread(target=outputs.write_outputs,
                                    args=(out, pictures[i], {"writer": i, "trial": trial})) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        with open(outputs.record_path(out)) as f:
            record = json.load(f)
        assert record["trial"] == trial and record["output_sha256"] == sha256_of(out), trial
    assert sorted(os.listdir(tmp_path)) == ["o.json", "o.png"]


# --- the command line ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, random_weights):
    """Inputs: a photo, a text file named .jpg, a content folder holding it, and a weights file with one bit
    flipped in its float data."""
    folder = tmp_path_factory.mktemp("inputs")
    image.save_image(str(folder / "photo.png"), np.random.default_rng(0).uniform(size=(40, 60, 3)))
    (folder / "text.jpg").write_text("not a picture\n")
    (folder / "batch").mkdir()
    (folder / "batch" / "text.jpg").write_text("not a picture\n")
    data = bytearray(open(random_weights, "rb").read())
    kernel = serialization.msgpack_restore(bytes(data))["params"]["params"]["conv2_1"]["kernel"]
    data[data.find(np.ascontiguousarray(kernel, "<f4").tobytes()) + 1001] ^= 0x10
    (folder / "damaged.msgpack").write_bytes(bytes(data))
    tree = serialization.msgpack_restore(open(random_weights, "rb").read())  # as the previous version wrote it
    tree["version"] = 1
    del tree["params_sha256"]
    (folder / "v1.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    return folder


# case: (arguments after --config and --weights, the needle of the error line). {in}: inputs; {out}: the output
# file, two levels below a folder that does not exist.
FAILING = {
    "content image not an image": (["--content={in}/text.jpg", "--output={out}"], "image {in}/text.jpg: not an"),
    "weights file with a flipped bit": (["--weights={in}/damaged.msgpack", "--output={out}"],
                                        "weights file {in}/damaged.msgpack: parameters do not match their recorded "
                                        "digest (damaged file); convert again with: python -m weights_converter"),
    "weights file of the previous format (version 1)": (
        ["--weights={in}/v1.msgpack", "--output={out}"],
        "weights file {in}/v1.msgpack: format version 1 records no digest of its parameters, so damage to them "
        "cannot be detected; convert again with: python -m weights_converter --output={in}/v1.msgpack"),
    "image too small after resizing (the last check)": (["--content={in}/photo.png", "--size=4", "--output={out}"],
                                                        "is 4x3 px after resizing"),
    "--resume with no checkpoint": (["--resume", "--output={out}"], "--resume: no checkpoint"),
    "batch: a bad content image": (["--content_dir={in}/batch", "--style={in}/photo.png", "--kernel=gram",
                                    "--output_dir={outdir}"], "image {in}/batch/text.jpg: not an"),
}


@pytest.fixture(scope="module")
def failing_runs(files, random_weights, tmp_path_factory):
    commands, roots = {}, {}
    for case, (args, _) in FAILING.items():
        roots[case] = root = tmp_path_factory.mktemp("case")
        out = root / "new" / "deeper" / "o.png"
        args = [a.format(**{"in": files, "out": out, "outdir": out.parent}) for a in args]
        commands[case] = [sys.executable, "-m", "nst_jax.main", f"--config={CONFIG}", f"--weights={random_weights}",
                          *args]

    def one(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # each process compiles with both cores
        procs = dict(zip(commands, pool.map(one, commands.values()), strict=True))
    yield {case: (procs[case], roots[case]) for case in commands}
    print("\n\n| case | exit | line printed | left on disk |\n|---|---|---|---|")
    for case, (proc, root) in zip(commands, ((procs[c], roots[c]) for c in commands), strict=True):
        left = ", ".join(sorted(os.listdir(root))) or "nothing (not even the output's folder)"
        print(f"| {case} | {proc.returncode} | `{proc.stderr.strip().splitlines()[-1]}` | {left} |")


@pytest.mark.parametrize("case", list(FAILING))
@pytest.mark.slow
def test_failed_run_creates_no_folder(case, failing_runs, files):
    proc, root = failing_runs[case]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    if case.startswith("batch"):  # batch mode says first how the jobs are shared out
        lines = lines[1:] if lines[0].startswith("process 0 of 1:") else lines
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert FAILING[case][1].format(**{"in": files}) in lines[0], lines[0]
    assert os.listdir(root) == []  # not even the output's folder


@pytest.mark.slow
def test_two_runs_writing_one_output_at_once(files, random_weights, tmp_path):
    """Two runs (different seeds, so different images) with one --output: both succeed, and what is left is one
    whole image with the record that names it."""
    out = tmp_path / "new" / "o.png"
    procs = [subprocess.Popen([sys.executable, "-m", "nst_jax.main", f"--config={CONFIG}",
                               f"--weights={random_weights}", f"--content={files / 'photo.png'}", "--init=noise",
                               f"--seed={seed}", *SHALLOW, f"--output={out}"],
                              cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(os.listdir(out.parent)) == ["o.json", "o.png"]
    with open(out.with_suffix(".json")) as f:
        record = json.load(f)
    assert record["config"]["seed"] in (1, 2) and record["output_sha256"] == sha256_of(out)
    assert image.load_image(str(out)).shape == (21, 32, 3)  # decodes, checksums verified: the PNG is whole
