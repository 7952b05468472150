"""benchmarks/conv_bound.py times the same convolutions and network pass on both sides, and its bound is what it
says: PyTorch's step over nst_jax's network alone."""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/ is not installed
from benchmarks import conv_bound  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from nst_jax import vgg  # noqa: E402


def to_nhwc(t) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(scope="module")
def params(random_pth):
    return bench.flax_params(random_pth)


@pytest.mark.parametrize("name", ["conv1_1", "conv2_1"])
@pytest.mark.slow
def test_both_sides_compute_the_same_convolution_and_input_gradient(name, params):
    calls = conv_bound.conv_pair(name, 32, params)
    y, dx = calls["jax"]()
    for layout in ("torch_nchw", "torch_channels_last"):
        yt, dxt = calls[layout]()
        assert rel(to_nhwc(yt), y) < 1e-5 and rel(to_nhwc(dxt), dx) < 1e-5, layout
    assert y.shape[-1] == vgg.conv_shapes()[name][1]


@pytest.mark.slow
def test_both_sides_compute_the_same_network_pass(random_pth, params):
    calls = conv_bound.network_pair(32, params, random_pth)
    value, dx = calls["jax"]()
    for layout in ("torch_nchw", "torch_channels_last"):
        vt, dxt = calls[layout]()
        assert abs(float(vt.detach()) - float(value)) <= 1e-4 * abs(float(value)), layout
        assert rel(to_nhwc(dxt), dx) < 1e-4, layout


@pytest.mark.slow
def test_the_command_writes_every_convolution_and_the_bound_from_its_own_figures(random_pth, tmp_path, capsys):
    out = tmp_path / "cb"
    assert conv_bound.main([f"--out={out}", "--size=32", "--methods=gram", "--rounds=1", "--reps=1", "--steps=2",
                            "--chunk=1", f"--weights={random_pth}"]) == 0
    res = json.loads((out / "results.json").read_text())["results"]
    assert [r["conv"] for r in res["convs"]] == list(conv_bound.CONVS)
    assert all(r[k] > 0 for r in res["convs"] for k in ("jax", "torch_nchw", "torch_channels_last"))
    gram, net = res["methods"]["gram"], res["network"]
    md = (out / "results.md").read_text()
    assert capsys.readouterr().out.endswith(md + "\n")  # what it printed ends with the tables it wrote
    row = next(line for line in md.splitlines() if line.startswith("| gram |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{gram['torch_eager'] / gram['jax']:.2f}x"
    assert cells[6] == f"{gram['torch_eager'] / net['jax']:.2f}x"  # the bound: PyTorch's step / nst_jax's network
    total = sum(r["jax"] for r in res["convs"])
    assert re.search(rf"\| all \| \| \| {total:.1f} \|", md)


@pytest.mark.parametrize("flag", ["--size=40", "--methods=gram,vgg", "--steps=3"])
def test_bad_flags_exit_2(flag, tmp_path):
    with pytest.raises(SystemExit) as e:
        conv_bound.main([f"--out={tmp_path}", "--chunk=2", flag])
    assert e.value.code == 2
