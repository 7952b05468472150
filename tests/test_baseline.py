"""The PyTorch baseline of benchmarks/ computes nst_jax's energy: step-0 losses agree, method by method."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/ is not installed
from benchmarks import run as bench  # noqa: E402
from benchmarks import torch_baseline as tb  # noqa: E402
from configs import default  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def setup(random_pth):
    content, style = bench.demo_images(SIZE)
    return {"pth": random_pth, "params": bench.flax_params(random_pth), "content": content, "style": style,
            "features": tb.load_features(random_pth, "relu5_1")}


def test_settings_are_the_default_config():
    c = default.get_config()
    s = bench.SETTINGS
    assert ",".join(s["content_layers"]) == c.content_layers
    assert ",".join(s["style_layers"]) == c.style_layers
    assert list(s["layer_weights"]) == [float(v) for v in c.layer_weights.split(",")]
    assert (s["content_weight"], s["style_weight"], s["tv_weight"], s["lr"], s["pooling"]) == (
        c.content_weight, c.style_weight, c.tv_weight, c.lr, c.pooling)
    assert (s["poly_c"], s["poly_d"], s["gaussian_estimator"], s["seed"]) == (
        c.poly_c, c.poly_d, c.gaussian_estimator, c.seed)


@pytest.mark.slow
@pytest.mark.parametrize("method", tb.METHODS)  # those with a PyTorch twin
def test_step0_losses_agree_with_nst_jax(method, setup):
    import jax
    import jax.numpy as jnp

    from nst_jax import transfer

    side = bench.jax_side(method, setup["params"], setup["content"], setup["style"])
    ts = bench.torch_side(side, setup["features"], setup["content"], setup["style"], False, None)
    key = jax.random.fold_in(side.loop_key, 0)  # the key make_chunk gives step 0
    total, terms = jax.jit(lambda x: transfer.energy(side.problem, side.params, side.tgt, side.scales, x, key))(
        jnp.asarray(np.asarray(side.x0) + 0.3))
    random = method in ("gaussian", "mkmmd", "swd")
    perms = tb.perms_to_torch(bench.jax_pair_perms(side, 1, SIZE)[0], "cpu") if random else None
    ts.x = (ts.init + 0.3).requires_grad_(True)  # away from the content image, where content loss is 0
    t_total, t_terms = ts.energy(ts.x, perms)
    assert float(terms["style"]) > 0 and float(terms["content"]) > 0
    for name in ("content", "style"):
        np.testing.assert_allclose(float(t_terms[name].detach()), float(terms[name]), rtol=1e-3)
    np.testing.assert_allclose(float(t_total.detach()), float(total), rtol=1e-3)


@pytest.mark.slow
def test_adam_steps_track_nst_jax(setup):

    side = bench.jax_side("gram", setup["params"], setup["content"], setup["style"])
    ts = bench.torch_side(side, setup["features"], setup["content"], setup["style"], True, None)  # channels_last
    runner = bench.make_jax_runner(side, steps=3, chunk=3, name="jax")
    _, jax_rows = runner.round()
    torch_rows = [{k: float(v) for k, v in ts.step().items()} for _ in range(3)]
    assert jax_rows[-1]["total"] < jax_rows[0]["total"]
    for a, b in zip(torch_rows, jax_rows, strict=True):
        assert bench.rel(a["total"], b["total"]) < 1e-3


@pytest.mark.slow
def test_gaussian_pairs_are_used_and_a_wrong_permutation_changes_the_loss(setup):
    x = torch.randn(16, 4)
    y = torch.randn(16, 4) + 1.0
    p = torch.arange(16)
    a = tb.gaussian_linear_time(x, y, p, p)
    b = tb.gaussian_linear_time(x, y, p.flip(0), p)
    assert torch.isfinite(a) and float(a) != float(b)
    # Direct evaluation of the estimator on these pairs.
    x0, x1, y0, y1 = x[0::2], x[1::2], y[0::2], y[1::2]
    sq = [((u - v) ** 2).sum(1) for u, v in ((x0, x1), (y0, y1), (x0, y1), (y0, x1))]
    gamma = 1.0 / torch.cat(sq).mean()
    k = [torch.exp(-gamma * s) for s in sq]
    np.testing.assert_allclose(float(a), float((k[0] + k[1] - k[2] - k[3]).mean()), rtol=1e-5)


def test_iteration_flops_counts_the_convolutions():
    # 64 px: conv1 at 64^2, conv2 at 32^2, conv3 at 16^2, conv4 at 8^2, conv5_1 at 4^2.
    convs = [(64, 3, 64), (64, 64, 64), (32, 64, 128), (32, 128, 128), (16, 128, 256)] + [(16, 256, 256)] * 3 + [
        (8, 256, 512)] + [(8, 512, 512)] * 3 + [(4, 512, 512)]
    expected = sum(2 * s * s * ci * co * 9 for s, ci, co in convs)
    assert bench.conv_flops(64, "relu5_1") == expected
    assert bench.iteration_flops(64, "relu5_1") == 2 * expected


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown style method"):
        tb.style_target(tb.Term("nope"), torch.zeros(4, 2))


@pytest.mark.parametrize("method", ["gram", "gaussian"])
@pytest.mark.slow
def test_whole_step_is_the_eager_step_in_one_graph(method, setup):
    # Dynamo's whole-graph capture (fullgraph: no break at the gradient or the update) with the eager backend;
    # the functional Adam must give torch.optim.Adam's images step for step.
    import torch

    side = bench.jax_side(method, setup["params"], setup["content"], setup["style"])
    perms = (tb.perms_to_torch(p, "cpu") for p in bench.jax_pair_perms(side, 3, SIZE)) if method == "gaussian" \
        else iter([None] * 3)
    perms = list(perms)
    eager = bench.torch_side(side, setup["features"], setup["content"], setup["style"], False, None)
    whole = tb.WholeStep(bench.torch_side(side, setup["features"], setup["content"], setup["style"], False, None),
                         setup["features"], backend="eager")
    torch._dynamo.reset()
    totals = []
    for p in perms:
        a, b = eager.step(p), whole.step(p)
        totals.append(float(a["total"]))
        for k in ("total", "content", "style"):
            assert bench.rel(float(b[k]), float(a[k]), float(a["total"])) < 1e-5, (k, b, a)
    assert bench.rel(totals[-1], totals[0]) > 1e-3  # the losses above moved 100x more than they differ
    # Adam divides by sqrt(v): where a gradient is near 0 its rounding decides the update's size and sign, so a
    # few pixels differ by up to a step (lr 0.05) while the energies agree to 1e-5.
    diff = np.abs(whole.image() - eager.image())
    assert np.mean(diff < 1e-3) > 0.97 and diff.max() < 3 * 0.05, (np.mean(diff < 1e-3), diff.max())


def test_torch_cli_constants_are_nst_jax_paper_scales():
    from benchmarks import torch_cli
    from nst_jax import losses

    for method, scale in torch_cli.PAPER_SCALES.items():
        extra = {"c": 1.0, "d": 2} if method == "poly" else {}
        for m, n in ((4096, 64), (1023, 512)):
            assert scale(m, n) == pytest.approx(losses.paper_scale(method, m, n, **extra), rel=1e-12)


@pytest.mark.slow
def test_torch_cli_writes_the_image_and_its_timings(setup, tmp_path, capsys):
    import json

    from PIL import Image

    from benchmarks import torch_cli

    paths = []
    for name, rgb in (("c", setup["content"]), ("s", setup["style"])):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    out = tmp_path / "out.png"
    assert torch_cli.main([f"--pth={setup['pth']}", f"--content={paths[0]}", f"--style={paths[1]}",
                           f"--output={out}", f"--size={SIZE}", "--steps=3", "--kernel=gaussian",
                           "--device=cpu"]) == 0
    timings = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.asarray(Image.open(out)).shape == (SIZE, SIZE, 3)
    assert timings["balance_factor"] > 0 and timings["steps_started_at"] <= timings["total_s"] + torch_cli.STARTED


@pytest.mark.slow
def test_bf16_psnr_benchmark_compares_the_dtypes(random_weights, capsys, monkeypatch):
    # benchmarks/bf16_psnr.py at 32 px, 2 steps: three runs (fp32, bf16, fp32 nudged) and their comparison.
    from benchmarks import bf16_psnr

    assert bf16_psnr.psnr(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)) == float("inf")
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert bf16_psnr.psnr(a, b) == pytest.approx(0.0)  # mse = 255^2
    monkeypatch.setattr(sys, "argv", ["bf16_psnr", f"--weights={random_weights}", "--size=32", "--steps=2",
                                      "--methods=gram"])
    bf16_psnr.main()
    out = capsys.readouterr().out.strip().splitlines()
    (row,) = json.loads(out[-1])
    assert row["method"] == "gram" and row["steps"] == 2
    assert set(row["final_energy"]) == {"float32", "bfloat16", "float32_nudged"}
    assert row["final_energy"]["bfloat16"] != row["final_energy"]["float32"]  # the dtype did change the run
    assert out[2].startswith("| gram | ") and 0 <= row["max_diff_bf16"] <= 255


@pytest.mark.slow
def test_memory_is_sampled_in_an_untimed_round(random_pth, tmp_path, monkeypatch):
    """benchmarks.run on a CPU: one heap-sampled round per framework before the timed rounds, none beside them
    (the sampler's thread slowed what it watched: PyTorch eager 2.3x, nst_jax 1.5x at 256 px); every row has
    its timing, its memory and, for PyTorch, its parity against nst_jax."""
    entered = []
    real = bench.HeapPeak.__enter__
    monkeypatch.setattr(bench.HeapPeak, "__enter__", lambda self: entered.append(1) or real(self))
    out = tmp_path / "bench"
    assert bench.main([f"--out={out}", "--sizes=32", "--methods=gram", "--frameworks=jax,torch_eager", "--rounds=2",
                       "--steps=2", "--chunk=2", f"--weights={random_pth}", "--device=cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["framework"] for r in rows] == ["jax", "torch_eager"]
    assert len(entered) == 2  # one per framework, not one per framework and round
    for r in rows:
        assert len(r["round_ms"]) == 2 and r["ms_per_iter"] > 0 and r["memory"]["heap_delta_bytes"] is not None
    assert rows[1]["parity"]["step0_rel"] < 1e-3
    assert "torch_layout" not in rows[0] and rows[1]["torch_layout"] in ("nchw", "channels_last")
