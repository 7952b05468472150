"""python -m nst_jax.compare and its cross-evaluation table (nst_jax.evaluate)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import demo, evaluate, image, losses, weights


@pytest.mark.slow
def test_table_is_one_for_the_content_and_zero_for_the_style(random_weights):
    loaded = weights.load(random_weights)
    config = test_config.get_config()
    content = image.resize(demo.content_image(64), (24, 32))
    style = image.resize(demo.style_image(64), (24, 32))
    methods = {name: cls.from_config(config) for name, cls in losses.REGISTRY.items()}
    table = evaluate.cross_distances(config_lib.problem(config), loaded.params, loaded.source, methods, content,
                                     style, {"photo": content, "painting": style})
    assert table["columns"] == [*losses.METHODS, "content"]
    photo, painting = table["rows"]["photo"], table["rows"]["painting"]
    for name in losses.METHODS:
        assert photo[name] == pytest.approx(1.0), name
        # The style itself: distance 0, to rounding (w2's matrix square roots carry the most, sqrt(eps) tr C).
        assert abs(painting[name]) < 2e-3, (name, painting[name])
        assert table["content_image"][name] > 0, name
    assert photo["content"] == 0.0 and painting["content"] == pytest.approx(1.0)
    md = evaluate.markdown(table, "note")
    assert md.startswith("note\n\n| result | gram |") and md.count("\n| ") == 4


@pytest.mark.slow
def test_compare_writes_results_sheet_curves_and_metrics(random_weights, tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "nst_jax.compare", f"--config={os.path.join(REPO_ROOT, 'configs', 'test.py')}",
         f"--weights={random_weights}", f"--output_dir={out}", "--steps=3", "--methods=gram,swd,w2+coral"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sheet.png", "losses.png", "metrics.md", "metrics.json", "summary.json", "gram.png", "swd.json",
                 "w2+coral.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "gram.json").read_text())
    assert record["losses"]["step"][-1] == 3  # the curves reach the final step
    assert record["losses"]["total"][-1] == record["final_losses"]["total"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["rows"]) == ["gram", "swd", "w2+coral"]
    assert metrics["columns"] == [*losses.METHODS, "content"]
    for label, row in metrics["rows"].items():
        assert all(math.isfinite(v) and v >= 0 for v in row.values()), (label, row)
        # Each run moved toward the style by its own measure.
        for method in label.split("+"):
            assert row[method] < 1.0, (label, method, row[method])
    assert "not pretrained" in (out / "metrics.md").read_text()
    sheet = np.asarray(image.load_image(str(out / "sheet.png")))
    assert sheet.shape[0] > 256 and sheet.shape[1] > 256
    assert "metrics.md" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_nometrics_skips_the_cross_evaluation(random_weights, tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "nst_jax.compare", f"--config={os.path.join(REPO_ROOT, 'configs', 'test.py')}",
         f"--weights={random_weights}", f"--output_dir={out}", "--steps=1", "--methods=linear", "--nometrics"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "sheet.png").is_file() and (out / "linear.png").is_file()
    assert not (out / "metrics.md").exists() and not (out / "metrics.json").exists()
    assert "cross-evaluation" not in proc.stderr and "metrics.md" not in proc.stderr


def test_sheet_footer_wraps_within_the_sheet():
    from nst_jax import sheet

    tile = np.full((32, 32, 3), 0.5, np.float32)
    short = sheet.contact_sheet([(tile, "a")], columns=1, tile=64, footer="weights: w")
    long_text = "weights: not a published pretrained file: " + " ".join(["torchvision"] * 12)
    long = sheet.contact_sheet([(tile, "a")], columns=1, tile=64, footer=long_text)
    assert long.shape[1] == short.shape[1] and long.shape[0] > short.shape[0] + 20  # several lines, same width
    footer = long[short.shape[0] - 10:]
    assert np.all(footer[:, -4:] == 1.0)  # nothing drawn at the right edge: no line runs off the sheet
    assert footer.min() < 0.5  # the text is there
