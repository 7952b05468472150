"""The PyTorch baseline as a command line, the twin of ``python -m nst_jax.main`` for
:mod:`benchmarks.end_to_end`: load the weights and images, compute the targets and the automatic balance, run
the same number of Adam steps, save the PNG.

    python -m benchmarks.torch_cli --pth=vgg19.pth --content=a.jpg --style=b.jpg --output=out.png \\
        --size=256 --steps=500 --kernel=gram --mode=step

``--mode=eager``: :class:`benchmarks.torch_baseline.StyleTransfer` (``torch.optim.Adam``, one kernel launch at a
time); ``--mode=step``: :class:`benchmarks.torch_baseline.WholeStep` (the whole step as one ``torch.compile``
graph; on a GPU mode max-autotune with CUDA graphs). The settings are those of ``configs/default.py``
(:data:`benchmarks.run.SETTINGS`): relu4_2 content, relu1_1..relu5_1 style, content weight 1, style weight 5
(1 for bn), Adam lr 0.05, init from the content, the balance factor ||grad content|| / ||grad style|| at a
random image, the paper's per-layer constants (:data:`PAPER_SCALES`, checked against nst_jax's by
tests/test_baseline.py). Random draws (the Gaussian's pairs) are PyTorch's own. Imports no JAX: the process
pays only PyTorch's start-up. Prints one JSON line of timings (seconds since process start).
"""

from __future__ import annotations

import time

STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

# c(M, N) of nst_jax.losses.paper_scale for the methods with no parameters in the constant.
PAPER_SCALES = {
    "gram": lambda m, n: 0.1 * m,
    "linear": lambda m, n: 1e3 * m / n,
    "poly": lambda m, n: 0.1 * m / (4.0 * n * n),
    "gaussian": lambda m, n: 3e14 * (m // 2) / (2.0 * n * m),
    "mkmmd": lambda m, n: 3e14 * (m // 2) / (2.0 * n * m),
    "bn": lambda m, n: 1e3 * m / 2.0,
}
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
DOWNSAMPLING = {"relu1_1": 0, "relu2_1": 1, "relu3_1": 2, "relu4_1": 3, "relu5_1": 4}


def load_rgb(path: str, size: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], the long edge resized to ``size``."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = size / max(im.size)
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), Image.BICUBIC)
        return np.asarray(im, np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pth", required=True)
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--kernel", default="gram", choices=sorted(PAPER_SCALES))
    p.add_argument("--mode", default="eager", choices=("eager", "step"))
    p.add_argument("--compile_mode", default="auto", help="torch.compile mode of --mode=step (see benchmarks.run)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    from benchmarks import torch_baseline as tb
    from benchmarks.run import SETTINGS, torch_step_mode

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(args.seed)
    t_import = time.time()
    s = SETTINGS
    cl = device == "cuda"  # channels_last: cuDNN's preferred layout on a GPU; NCHW on a CPU
    features = tb.load_features(args.pth, s["style_layers"][-1], s["pooling"], device, cl)
    content = (load_rgb(args.content, args.size) - MEAN) / STD
    style = (load_rgb(args.style, max(content.shape[:2])) - MEAN) / STD
    low, high = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD
    h, w = content.shape[:2]
    paper = {(0, name): PAPER_SCALES[args.kernel]((h // 2 ** DOWNSAMPLING[name]) * (w // 2 ** DOWNSAMPLING[name]),
                                                  CHANNELS[name]) for name in s["style_layers"]}
    ts = tb.StyleTransfer(features, content, style, content, content_layers=s["content_layers"],
                          style_layers=s["style_layers"], layer_weights=s["layer_weights"],
                          terms=[tb.Term(args.kernel, 1.0, s["poly_c"])], content_scale=s["content_weight"],
                          style_scales=paper, tv_weight=s["tv_weight"], lr=s["lr"], low=low, high=high,
                          channels_last=cl)
    # The automatic balance: ||d content / dx|| / ||d style / dx|| at a random image.
    x_ref = tb.to_nchw((np.random.default_rng(args.seed).random(content.shape, np.float32) - MEAN) / STD,
                       device, cl).requires_grad_(True)
    _, terms = ts.energy(x_ref)
    g_content, = torch.autograd.grad(terms["content"], x_ref, retain_graph=True)
    g_style, = torch.autograd.grad(terms["style"], x_ref)
    factor = float(g_content.norm()) / max(float(g_style.norm()), 1e-30)
    weight = s["bn_style_weight"] if args.kernel == "bn" else s["style_weight"]
    ts.style_scales = {k: weight * factor * v for k, v in paper.items()}
    runner = tb.WholeStep(ts, features, mode=torch_step_mode(args.compile_mode, device)) if args.mode == "step" else ts
    t_setup = time.time()
    first_step_done = None
    for i in range(args.steps):
        runner.step()
        if i == 0:
            if device == "cuda":
                torch.cuda.synchronize()
            first_step_done = time.time()
    if device == "cuda":
        torch.cuda.synchronize()
    t_steps = time.time()
    rgb = np.clip(runner.image() * STD + MEAN, 0.0, 1.0)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    Image.fromarray(np.round(rgb * 255.0).astype(np.uint8)).save(args.output)
    done = time.time()
    first = (first_step_done or t_setup) - t_setup
    later = (t_steps - t_setup - first) / (args.steps - 1) if args.steps > 1 else 0.0
    # torch.compile compiles inside the first call: the steps start when it returns, less one later step.
    print(json.dumps({"import_s": t_import - STARTED, "setup_s": t_setup - t_import, "first_step_s": first,
                      "steps_s": t_steps - t_setup, "save_s": done - t_steps, "total_s": done - STARTED,
                      "steps_started_at": t_setup + first - later, "balance_factor": factor}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
