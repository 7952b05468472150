"""What bounds nst_jax's speed against PyTorch eager on a CPU: the convolutions of both sides measured alone.

    python -m benchmarks.conv_bound --out=DIR --size=256 [--methods=gram,w2] [--rounds=3] [--weights=W.pth]

Side by side in one process, each measurement alternating between the two frameworks round by round:

1. Each convolution of VGG-19 up to conv5_1 alone at its size for a ``--size`` px image: the forward pass and the
   input gradient (what a style-transfer step needs; the weights are frozen), XLA's (NHWC, as nst_jax's Flax
   ``nn.Conv``) against PyTorch's (oneDNN on a CPU; NCHW and channels_last).
2. The network alone: the image through relu5_1 and the input gradient of a fixed linear function of the
   activations at the default style and content layers (what every method's step shares).
3. Each method's whole step (:func:`benchmarks.run.bench_size`, frameworks ``jax`` and ``torch_eager``), and the
   bound: if nst_jax's losses, Adam and clamp cost nothing, its step would be its network pass, so PyTorch's step
   over nst_jax's network time is the highest ratio it could reach.

Writes ``results.json`` (:mod:`benchmarks.results`) and ``results.md`` to ``--out``; ``--record`` files the JSON
for ``docs/results/``. Figures are medians over ``--rounds`` rounds of ``--reps`` calls each
(:mod:`benchmarks.timing`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks import report, results, timing
from benchmarks import run as bench_run

# The convolutions a default run computes (its deepest layer is relu5_1).
CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4", "conv4_1",
         "conv4_2", "conv4_3", "conv4_4", "conv5_1")


def conv_pair(name: str, size: int, pth_params: Any, seed: int = 0) -> dict[str, Callable[[], Any]]:
    """{framework: a call computing convolution ``name``'s output and input gradient once} for a size px image:
    ``jax`` (NHWC/HWIO, ``lax.conv_general_dilated`` with bias, as Flax's ``nn.Conv``), ``torch_nchw`` and
    ``torch_channels_last`` (``F.conv2d`` and autograd), on the same input, weights and output cotangent."""
    import jax
    import torch
    import torch.nn.functional as F

    from nst_jax import vgg

    side = size // 2 ** vgg.downsampling(name)
    cin, cout = vgg.conv_shapes()[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, side, side, cin)).astype(np.float32)
    g = rng.standard_normal((1, side, side, cout)).astype(np.float32)
    kernel = np.asarray(pth_params["params"][name]["kernel"])  # (3, 3, cin, cout)
    bias = np.asarray(pth_params["params"][name]["bias"])

    def conv(x, k, b):
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    @jax.jit
    def forward_and_input_grad(x, k, b, g):
        y, pullback = jax.vjp(lambda x: conv(x, k, b), x)
        return y, pullback(g)[0]

    args = tuple(jax.device_put(a) for a in (x, kernel, bias, g))
    out = {"jax": lambda: jax.block_until_ready(forward_and_input_grad(*args))}

    w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # (cout, cin, 3, 3)
    b = torch.from_numpy(bias.copy())
    for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt).requires_grad_(True)
        gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
        wt = w.contiguous(memory_format=fmt)

        def call(xt=xt, gt=gt, wt=wt):
            y = F.conv2d(xt, wt, b, padding=1)
            (dx,) = torch.autograd.grad(y, xt, gt)
            return y, dx

        out[f"torch_{layout}"] = call
    return out


def network_pair(size: int, params: Any, pth: str, seed: int = 0) -> dict[str, Callable[[], Any]]:
    """{framework: one forward pass of the image through relu5_1 and the input gradient of sum_l <F_l, G_l> over
    the default style and content layers (G_l fixed random cotangents)}: ``jax`` (``nst_jax.vgg.extract``),
    ``torch_nchw`` and ``torch_channels_last`` (:mod:`benchmarks.torch_baseline`'s frozen features)."""
    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks import torch_baseline as tb
    from nst_jax import vgg

    layers = tuple(sorted(set(bench_run.SETTINGS["style_layers"] + bench_run.SETTINGS["content_layers"]),
                          key=vgg.LAYERS.index))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
    cot = {name: rng.standard_normal((1, size // 2 ** vgg.downsampling(name), size // 2 ** vgg.downsampling(name),
                                      vgg.layer_channels(name))).astype(np.float32) for name in layers}

    @jax.jit
    def value_and_input_grad(params, x, cot):
        def f(x):
            feats = vgg.extract(params, x, layers, bench_run.SETTINGS["pooling"])
            return sum(jnp.vdot(feats[n], cot[n]) for n in layers)
        return jax.value_and_grad(f)(x)

    xj, cj = jax.device_put(x), jax.device_put(cot)
    out = {"jax": lambda: jax.block_until_ready(value_and_input_grad(params, xj, cj))}
    for layout, cl in (("nchw", False), ("channels_last", True)):
        features = tb.load_features(pth, layers[-1], bench_run.SETTINGS["pooling"], "cpu", cl)
        fmt = torch.channels_last if cl else torch.contiguous_format
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt).requires_grad_(True)
        ct = {n: torch.from_numpy(c.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=fmt)
              for n, c in cot.items()}

        def call(features=features, xt=xt, ct=ct):
            feats = tb.extract(features, xt, layers)
            value = sum((feats[n] * ct[n]).sum() for n in layers)
            (dx,) = torch.autograd.grad(value, xt)
            return value, dx

        out[f"torch_{layout}"] = call
    return out


def time_pairs(pairs: dict[str, Callable[[], Any]], rounds: int, reps: int) -> dict[str, float]:
    """Median ms per call of each callable: one warm-up call each, then ``rounds`` rounds of ``reps`` calls, the
    callables taking turns round by round; the median over rounds of each round's median."""
    for fn in pairs.values():
        timing.once(fn)
    per = timing.interleave({k: functools.partial(timing.repeat, fn, reps, warmup=0) for k, fn in pairs.items()},
                            rounds)
    return {k: 1e3 * timing.median_of(v) for k, v in per.items()}


def method_steps(methods: Sequence[str], size: int, params: Any, pth: str, args: Any, log: Callable[[str], None]
                 ) -> dict[str, dict[str, Any]]:
    """{method: {"jax": ms, "torch_eager": ms, "torch_layout": "nchw" or "channels_last"}}: each method's whole
    step timed by :func:`benchmarks.run.bench_size` (nst_jax's chunked loop and PyTorch eager in the layout its
    probe picks, rounds in turn)."""
    run_args = argparse.Namespace(rounds=args.rounds, steps=args.steps, chunk=args.chunk, torch_layout="auto",
                                  torch_step_mode="auto")
    out: dict[str, dict[str, Any]] = {}
    for row in bench_run.bench_size(size, methods, ("jax", "torch_eager"), pth, params, run_args, "cpu", log):
        if "error" in row:
            raise RuntimeError(f"{row['method']} {row['framework']}: {row['error']}")
        times = out.setdefault(row["method"], {})
        times[row["framework"]] = row["ms_per_iter"]
        if "torch_layout" in row:
            times["torch_layout"] = row["torch_layout"]
    return out


def table(doc: dict[str, Any]) -> str:
    """The tables of a results document: each convolution, the network, each method's step and its bound."""
    env, res = doc["settings"], doc["results"]
    lines = [f"Medians over {env['rounds']} rounds of {env['reps']} calls, the frameworks in turn within each round; "
             f"PyTorch threads {env['torch_threads']}.", "",
             f"Each convolution alone at {env['size']} px (forward + input gradient), ms:", "",
             "| conv | h x w | C_in -> C_out | jax | torch NCHW | torch channels_last | best torch / jax |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    total = {"jax": 0.0, "torch_nchw": 0.0, "torch_channels_last": 0.0}
    for row in res["convs"]:
        best = min(row["torch_nchw"], row["torch_channels_last"])
        lines.append(f"| {row['conv']} | {row['side']} x {row['side']} | {row['cin']} -> {row['cout']} | "
                     f"{row['jax']:.1f} | {row['torch_nchw']:.1f} | {row['torch_channels_last']:.1f} | "
                     f"{best / row['jax']:.2f}x |")
        for k in total:
            total[k] += row[k]
    best = min(total["torch_nchw"], total["torch_channels_last"])
    lines.append(f"| all | | | {total['jax']:.1f} | {total['torch_nchw']:.1f} | "
                 f"{total['torch_channels_last']:.1f} | {best / total['jax']:.2f}x |")
    net = res["network"]
    nbest = min(net["torch_nchw"], net["torch_channels_last"])
    lines += ["", "The network alone (image to relu5_1, input gradient of a fixed linear function of the style and "
              "content layers), ms:", "",
              "| jax | torch NCHW | torch channels_last | best torch / jax |", "| ---: | ---: | ---: | ---: |",
              f"| {net['jax']:.1f} | {net['torch_nchw']:.1f} | {net['torch_channels_last']:.1f} | "
              f"{nbest / net['jax']:.2f}x |"]
    if res["methods"]:
        lines += ["", "Whole steps, ms (nst_jax's chunked loop; PyTorch eager in its probed layout). Outside the "
                  "network: step minus the network alone. Bound: PyTorch's step over nst_jax's network alone, the "
                  "ratio nst_jax would reach if everything but its network cost nothing.", "",
                  "| method | jax step | torch step | torch / jax | jax outside the network | "
                  "torch outside the network | bound |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for m, row in res["methods"].items():
            tnet = net["torch_channels_last" if row["torch_layout"] == "channels_last" else "torch_nchw"]
            lines.append(f"| {m} | {row['jax']:.0f} | {row['torch_eager']:.0f} | "
                         f"{row['torch_eager'] / row['jax']:.2f}x | {row['jax'] - net['jax']:.0f} | "
                         f"{row['torch_eager'] - tnet:.0f} | {row['torch_eager'] / net['jax']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--methods", default=None, help="whole steps to time beside the network (empty: none; "
                        "default: every method with a PyTorch twin, benchmarks.torch_baseline.METHODS)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5, help="calls per round of each convolution and network pass")
    parser.add_argument("--steps", type=int, default=10, help="steps per round of each method (a multiple of "
                        "--chunk)")
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--weights", default="", help="torchvision VGG-19 .pth (default: cached or random)")
    results.add_arguments(parser, "conv_bound")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    from benchmarks import torch_baseline as tb

    methods = list(tb.METHODS) if args.methods is None else [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in tb.METHODS:
            parser.error(f"unknown method {m!r}; expected some of {','.join(tb.METHODS)} (those with a PyTorch twin)")
    if args.steps % args.chunk or args.steps < args.chunk:
        parser.error("--steps must be a positive multiple of --chunk")
    if args.size < 16 or args.size % 16:
        parser.error("--size must be a positive multiple of 16 (four poolings before conv5_1)")

    import jax
    import torch

    from nst_jax import lapack

    if jax.default_backend() != "cpu":
        parser.error("this benchmark compares CPU convolutions; run it on a CPU")
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(args.out, exist_ok=True)
    pth, pth_desc = bench_run.weights_pth(args.weights, args.out)
    params = jax.device_put(bench_run.flax_params(pth))
    meta = results.metadata("conv_bound", sys.argv[1:] if argv is None else argv)  # the commit and load it starts at
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {msg}", flush=True)

    from nst_jax import vgg

    settings = {"size": args.size, "methods": methods, "rounds": args.rounds, "reps": args.reps,
                "steps_per_round": args.steps, "chunk": args.chunk, "torch_threads": torch.get_num_threads(),
                "weights": results.weights_record(pth, pth_desc)}
    res: dict[str, Any] = {"convs": [], "network": {}, "methods": {}}
    with lapack.single_threaded():  # as nst_jax's runs (nst_jax/lapack.py)
        for name in CONVS:
            cin, cout = vgg.conv_shapes()[name]
            times = time_pairs(conv_pair(name, args.size, params), args.rounds, args.reps)
            res["convs"].append({"conv": name, "side": args.size // 2 ** vgg.downsampling(name), "cin": cin,
                                 "cout": cout, **times})
            log(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + " ms")
        res["network"] = time_pairs(network_pair(args.size, params, pth), args.rounds, args.reps)
        log("network: " + ", ".join(f"{k} {v:.1f}" for k, v in res["network"].items()) + " ms")
    if methods:
        res["methods"] = method_steps(methods, args.size, params, pth, args, log)
    doc = results.document("conv_bound", argv, settings, res, meta)
    results.write(doc, args.out, args.record)
    print(report.section(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
