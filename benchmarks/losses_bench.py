"""Time and memory of each style loss at the VGG-19 style-layer shapes of a square image.

    python benchmarks/losses_bench.py                      # 256 and 512 px, all methods (under 10 min, 2 cores)
    python benchmarks/losses_bench.py --sizes=256 --repeats=3

Prints a markdown table (``--out``: also results.json, :mod:`benchmarks.results`), one row per (image size, layer,
method, estimator): the median wall time of the jitted ``value_and_grad`` of :func:`nst_jax.losses.style_loss`
with respect to the generated samples x (style target precomputed, as in a run; compile and first call excluded,
except that a first call longer than the time budget is the one measurement), and the compiled program's memory
from XLA's memory analysis (temporaries + arguments + outputs, bytes), plus the process's peak RSS when the case
was done (cases run smallest first; progress goes to stderr).

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
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import results, timing  # noqa: E402
from nst_jax import losses  # noqa: E402

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
    compiled, compile_s = timing.once(lambda: step.lower(x, target, key).compile())
    out: dict[str, Any] = {"compile_s": compile_s, "bytes": compiled_bytes(compiled)}
    if run:
        _, first = timing.once(lambda: compiled(x, target, key))
        # Compilation is already done; a first call slower than the budget is the one measurement kept.
        reps = min(repeats, int(budget_s / max(first, 1e-6)))
        keys = iter(jax.random.fold_in(key, i) for i in range(reps))
        t = timing.repeat(lambda: compiled(x, target, next(keys)), reps, warmup=0) if reps >= 1 else None
        out["ms"] = 1e3 * (t.median if t else first)
        out["reps"] = len(t.seconds) if t else 1
    return out


def cases(sizes: Sequence[int], repeats: int, budget_s: float, max_pair_flops: float) -> list[dict[str, Any]]:
    """Every (size, layer, method, estimator) case, smallest M first (progress lines to stderr), then the
    largest full/unbiased Gaussian cases compiled with smaller tiles; one row each, with its place
    ``(size, layer index, config index)`` in the table (``order``; absent for the tile rows)."""
    rate: dict[str, float] = {}  # seconds per M^2 N, full/unbiased Gaussian, from the largest timed case
    cells = [(size, li, layer, (size // div) ** 2, n) for size in sizes for li, (layer, div, n) in enumerate(LAYERS)]
    rows, extra = [], []
    # Smallest M first, so that the rate for an estimated case has been measured when it is reached.
    for size, li, layer, m, n in sorted(cells, key=lambda r: (r[3] * r[3] * r[4], r[0])):
        for ci, (method, params) in enumerate(CONFIGS):
            est = params.get("estimator", "-")
            quadratic = method == "gaussian" and est in ("full", "unbiased")
            run = not quadratic or 3.0 * m * m * n <= max_pair_flops
            r = bench_case(method, params, m, n, run=run, repeats=repeats, budget_s=budget_s)
            row = {"size": size, "layer": layer, "m": m, "n": n, "method": method, "estimator": est,
                   "ms": r.get("ms"), "calls": r.get("reps", 0), "bytes": r["bytes"], "peak_rss_mib": peak_rss_mib(),
                   "order": [size, li, ci]}
            if run and quadratic:
                rate[est] = r["ms"] / 1e3 / (m * m * n)
            if not run and est in rate:
                row["estimated_s"] = rate[est] * m * m * n
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
            if quadratic and m >= 2**18:
                extra.append((size, layer, m, n, est))
    rows.sort(key=lambda row: row["order"])
    # The giant full Gaussian case with smaller tiles: memory is O(block_size x M), never O(M^2).
    for size, layer, m, n, est in extra:
        for bs in (128, 2048):
            r = bench_case("gaussian", {"estimator": est}, m, n, run=False, repeats=0, budget_s=0, block_size=bs)
            rows.append({"size": size, "layer": layer, "m": m, "n": n, "method": "gaussian",
                         "estimator": f"{est}, block_size={bs}", "ms": None, "calls": 0, "bytes": r["bytes"],
                         "peak_rss_mib": peak_rss_mib()})
    return rows


def _line(row: dict[str, Any]) -> str:
    if row["ms"] is not None:
        ms = f"{row['ms']:.1f}"
    else:
        ms = f"~{row['estimated_s']:.0f} s (est.)" if "estimated_s" in row else "not run"
    return (f"| {row['size']} | {row['layer']} | {row['m']} | {row['n']} | {row['method']} | {row['estimator']} | "
            f"{ms} | {row['calls']} | {fmt_bytes(row['bytes'])} | {row['peak_rss_mib']:.0f} MiB |")


def table(doc: dict[str, Any]) -> str:
    """The results document's table, one row per case (see the module docstring)."""
    lines = ["| px | layer | M | N | method | estimator | ms (median) | calls | compiled memory | peak RSS so far |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_line(row) for row in doc["results"]]
    lines += ["", f"An M x M float32 matrix at M = {2**18}: {fmt_bytes(4 * 2**36)}. Total bench time "
              f"{doc['settings']['total_s']} s."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512", help="square image sizes in px, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (fewer for slow cases)")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case, at most")
    parser.add_argument("--max-pair-flops", type=float, default=3e10,
                        help="largest 3 M^2 N for which full/unbiased Gaussian cases are run")
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "losses_bench")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)

    sizes = [int(size) for size in args.sizes.split(",")]
    rows, total_s = timing.once(lambda: cases(sizes, args.repeats, args.budget, args.max_pair_flops),
                                sync=timing.no_sync)
    settings = {"sizes": sizes, "repeats": args.repeats, "budget_s": args.budget,
                "max_pair_flops": args.max_pair_flops, "total_s": round(total_s), "weights": None}
    doc = results.document("losses_bench", argv, settings, rows)
    print(table(doc))
    results.write(doc, args.out, args.record)


if __name__ == "__main__":
    main()
