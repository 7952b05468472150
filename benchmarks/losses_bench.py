"""Time and memory of each style loss at the VGG-19 style-layer shapes of a square image.

    python benchmarks/losses_bench.py                      # 256 and 512 px, all methods (under 10 min, 2 cores)
    python benchmarks/losses_bench.py --sizes=256 --repeats=3

Prints a markdown table, one row per (image size, layer, method, estimator): the median wall time of the jitted
``value_and_grad`` of :func:`nst_jax.losses.style_loss` with respect to the generated samples x (style target
precomputed, as in a run; compile and first call excluded, except that a first call longer than the time
budget is the one measurement), and the compiled program's memory from XLA's memory analysis (temporaries +
arguments + outputs, bytes), plus the process's peak RSS when the case was done (cases run smallest first;
progress goes to stderr).

Features are random (ReLU of a standard normal), M = H*W positions at the layer's resolution by N channels:
relu1_1 full resolution, 64 channels; relu2_1 1/2, 128; relu3_1 1/4, 256; relu4_1 1/8, 512; relu5_1 1/16, 512.
The style image has the content's size (M' = M), as in the official code.

The full and unbiased Gaussian estimators cost O(M^2 N); cases above ``--max-pair-flops`` (3 M^2 N, the x-x,
x-y and y-y kernel sums) are compiled (their memory is real) but not run; their time is an estimate from the
measured rate of the largest timed case with the same estimator, marked "est.". The x-x and x-y sums dominate
the backward pass too, so the estimate scales the measured time by M^2 N.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import losses

LAYERS = (("relu1_1", 1, 64), ("relu2_1", 2, 128), ("relu3_1", 4, 256), ("relu4_1", 8, 512),
          ("relu5_1", 16, 512))

CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("gram", {}),
    ("linear", {}),
    ("bn", {}),
    ("poly", {"c": 1.0, "d": 2, "estimator": "full"}),
    ("poly", {"c": 1.0, "d": 2, "estimator": "unbiased"}),
    ("poly", {"c": 1.0, "d": 2, "estimator": "linear"}),
    ("gaussian", {"estimator": "linear"}),
    ("gaussian", {"estimator": "rff", "num_features": 1024}),
    ("gaussian", {"estimator": "full"}),
    ("gaussian", {"estimator": "unbiased"}),
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def compiled_bytes(compiled: Any) -> int | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes)


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def bench_case(method: str, params: dict[str, Any], m: int, n: int, *, run: bool, repeats: int,
               budget_s: float, block_size: int | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.maximum(rng.standard_normal((m, n), np.float32), 0))
    y = jnp.asarray(np.maximum(rng.standard_normal((m, n), np.float32) + 0.1, 0))
    if block_size is not None:
        params = dict(params, block_size=block_size)
    target = jax.jit(lambda y: losses.style_target(method, y, **params))(y)
    key = jax.random.key(0)
    step = jax.jit(jax.value_and_grad(lambda x, t, k: losses.style_loss(method, x, t, key=k, **params)))
    t0 = time.perf_counter()
    compiled = step.lower(x, target, key).compile()
    out: dict[str, Any] = {"compile_s": time.perf_counter() - t0, "bytes": compiled_bytes(compiled)}
    if run:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x, target, key))
        first = time.perf_counter() - t0
        # Compilation is already done; a first call slower than the budget is the one measurement kept.
        reps = min(repeats, int(budget_s / max(first, 1e-6)))
        times = [first] if reps < 1 else []
        for i in range(reps):
            k = jax.random.fold_in(key, i)
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(x, target, k))
            times.append(time.perf_counter() - t0)
        out["ms"] = 1e3 * statistics.median(times)
        out["reps"] = len(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512", help="square image sizes in px, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (fewer for slow cases)")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case, at most")
    parser.add_argument("--max-pair-flops", type=float, default=3e10,
                        help="largest 3 M^2 N for which full/unbiased Gaussian cases are run")
    args = parser.parse_args()

    start = time.perf_counter()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform} ({platform.processor() or platform.machine()}), "
          f"{jax.local_device_count()} device(s)\n")
    print("| px | layer | M | N | method | estimator | ms (median) | calls | compiled memory | peak RSS so far |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rate: dict[str, float] = {}  # seconds per M^2 N, full/unbiased Gaussian, from the largest timed case
    rows = [(size, li, layer, (size // div) ** 2, n) for size in map(int, args.sizes.split(","))
            for li, (layer, div, n) in enumerate(LAYERS)]
    table: dict[tuple[int, int, int], str] = {}
    extra = []
    # Smallest M first, so that the rate for an estimated case has been measured when it is reached.
    for size, li, layer, m, n in sorted(rows, key=lambda r: (r[3] * r[3] * r[4], r[0])):
        for ci, (method, params) in enumerate(CONFIGS):
            est = params.get("estimator", "-")
            quadratic = method == "gaussian" and est in ("full", "unbiased")
            run = not quadratic or 3.0 * m * m * n <= args.max_pair_flops
            r = bench_case(method, params, m, n, run=run, repeats=args.repeats, budget_s=args.budget)
            if run:
                ms, calls = f"{r['ms']:.1f}", str(r["reps"])
                if quadratic:
                    rate[est] = r["ms"] / 1e3 / (m * m * n)
            else:
                ms = f"~{rate[est] * m * m * n:.0f} s (est.)" if est in rate else "not run"
                calls = "0"
            table[(size, li, ci)] = (f"| {size} | {layer} | {m} | {n} | {method} | {est} | {ms} | {calls} | "
                                     f"{fmt_bytes(r['bytes'])} | {peak_rss_mib():.0f} MiB |")
            print(table[(size, li, ci)], file=sys.stderr, flush=True)
            if quadratic and m >= 2**18:
                extra.append((size, layer, m, n, est))
    for k in sorted(table):
        print(table[k])
    # The giant full Gaussian case with smaller tiles: memory is O(block_size x M), never O(M^2).
    for size, layer, m, n, est in extra:
        for bs in (128, 2048):
            r = bench_case("gaussian", {"estimator": est}, m, n, run=False, repeats=0, budget_s=0, block_size=bs)
            print(f"| {size} | {layer} | {m} | {n} | gaussian | {est}, block_size={bs} | not run | 0 | "
                  f"{fmt_bytes(r['bytes'])} | {peak_rss_mib():.0f} MiB |", flush=True)
    print(f"\nAn M x M float32 matrix at M = {2**18}: {fmt_bytes(4 * 2**36)}. Total bench time "
          f"{time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
