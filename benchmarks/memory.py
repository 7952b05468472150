"""Peak memory of one optimisation step per megapixel: with and without strips, block rematerialisation, bf16.

    python benchmarks/memory.py                          # 1024 and 2048 px, compiled sizes and measured RSS
    python benchmarks/memory.py --sizes=1024 --no-rss    # compiled sizes only (seconds)
    python benchmarks/memory.py --strips=1,8,16          # which strip counts (--strips of the CLI) to compare
    python -m benchmarks.memory --sizes=1024 --no-rss --out=DIR --record   # results.json in DIR, and the JSON
                                                         # filed for docs/results/ (benchmarks/results.py)

One step is what a run does per iteration with the default config's layers (content relu4_2; style relu1_1,
relu2_1, relu3_1, relu4_1, relu5_1; max pooling): the VGG-19 forward pass of the generated image, the Gram
style loss and the content loss, and the gradient with respect to the image (``jax.value_and_grad`` of
:func:`nst_jax.transfer.energy`; the targets are inputs, as in a run). Images are square, size x size px.

Two figures per case, both divided by the image's megapixels (MB = 10^6 bytes):

* ``compiled``: XLA's memory analysis of the compiled step (temporaries + arguments + outputs). Arguments
  include the VGG-19 parameters up to relu5_1 (about 80 MB whatever the size), the image and the targets.
* ``RSS``: the growth of the process's peak resident memory (``VmHWM``) over its resident memory just before
  compiling the step, in a fresh subprocess per case that compiles and runs the step once (compilation and
  XLA's CPU runtime included). Linux only; skipped with ``--no-rss``.

On XLA:CPU the scheduler decides most of the peak: the default (concurrency-optimised) one keeps about
twice the memory of ``XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED``; run both.

``strips`` is the CLI's ``--strips`` (:mod:`nst_jax.strips`): VGG blocks 1-2 computed in that many horizontal
strips, one at a time, so their activations stop setting the peak; the step's value and gradient are the same.

Parameters are random (:func:`nst_jax.vgg.init_params`): memory does not depend on their values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import results, timing  # noqa: E402
from nst_jax import losses, transfer, vgg  # noqa: E402

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CASES = ((False, "float32"), (True, "float32"), (False, "bfloat16"), (True, "bfloat16"))  # (remat, dtype)
MB = 1e6


def problem(remat: bool, dtype: str, strips: int = 1) -> transfer.Problem:
    return transfer.Problem(
        content_layers=("relu4_2",), style_layers=STYLE_LAYERS, layer_weights=(1.0,) * len(STYLE_LAYERS),
        terms=(losses.StyleTerm("gram", 1.0, {}),), pooling="max", content_weight=1.0, tv_weight=0.0,
        optimizer="adam", remat=remat, dtype=dtype, strips=strips,
    )


def step_fn(prob: transfer.Problem):
    """(params, targets, scales, x, key) -> (energy, d energy / d x): one step's numerics."""
    def step(params, tgt, scales, x, key):
        return jax.value_and_grad(lambda y: transfer.energy(prob, params, tgt, scales, y, key)[0])(x)
    return step


def abstract_inputs(prob: transfer.Problem, size: int) -> tuple[Any, ...]:
    """Shapes and dtypes of the step's inputs at a size x size image (nothing allocated)."""
    params = jax.eval_shape(vgg.init_params, jax.random.key(0))
    x = jax.ShapeDtypeStruct((size, size, 3), jnp.float32)
    tgt = jax.eval_shape(lambda p, c, s: transfer.targets(prob, p, c, [s]), params, x, x)
    scales = {"content": jax.ShapeDtypeStruct((), jnp.float32),
              "style": {(0, name): jax.ShapeDtypeStruct((), jnp.float32) for name in STYLE_LAYERS}}
    return params, tgt, scales, x, jax.eval_shape(lambda: jax.random.key(0))


def compiled_bytes(remat: bool, dtype: str, strips: int, size: int, run: bool = False) -> dict[str, float]:
    """XLA's memory analysis of the compiled step; with ``run``, also :func:`measure_time` of it here."""
    prob = problem(remat, dtype, strips)
    (inputs, compiled), compile_s = timing.once(lambda: _inputs_and_compiled(prob, size, run))
    analysis = compiled.memory_analysis()
    out = {
        "temp": analysis.temp_size_in_bytes,
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
        "total": analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes,
        "compile_s": compile_s,
    }
    return {**out, **measure_time(compiled, inputs)} if run else out


def _inputs_and_compiled(prob: transfer.Problem, size: int, run: bool) -> tuple[tuple[Any, ...], Any]:
    inputs = concrete_inputs(prob, size) if run else abstract_inputs(prob, size)
    return inputs, jax.jit(step_fn(prob)).lower(*inputs).compile()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def concrete_inputs(prob: transfer.Problem, size: int) -> tuple[Any, ...]:
    """Random parameters and image; targets of the right shapes without a forward pass (constant 0.5), so
    nothing but the step itself allocates at scale."""
    key = jax.random.key(0)
    params = vgg.init_params(key)
    x = jax.random.uniform(key, (size, size, 3), jnp.float32)
    tgt = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), abstract_inputs(prob, size)[1])
    scales = {"content": jnp.float32(1.0), "style": {(0, name): jnp.float32(1.0) for name in STYLE_LAYERS}}
    return jax.block_until_ready((params, tgt, scales, x, key))


def measure_rss(remat: bool, dtype: str, strips: int, size: int) -> dict[str, float]:
    """In this process (run it in a fresh one): peak RSS growth of compiling and running one step."""
    prob = problem(remat, dtype, strips)
    params, tgt, scales, x, key = concrete_inputs(prob, size)
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (VmHWM) to the current RSS
        f.write("5")
    compiled = jax.jit(step_fn(prob)).lower(params, tgt, scales, x, key).compile()
    _, step_s = timing.once(lambda: compiled(params, tgt, scales, x, key))
    return {"rss_growth": (_status_kb("VmHWM") - before) * 1024.0, "step_s": step_s}


def measure_time(compiled: Any, inputs: tuple[Any, ...], repeats: int = 5) -> dict[str, float]:
    """Median seconds of the compiled step over ``repeats`` after a warm-up, and on a GPU the device's peak
    bytes in use. The allocator's peak covers the whole process so far, so it is reported only when this
    step raised it (run the cases from small to large: ``--strips=8,1 --dtypes=bfloat16,float32``)."""
    stats = jax.devices()[0].memory_stats() or {}
    before = stats.get("peak_bytes_in_use", 0)
    out = {"step_s": timing.repeat(lambda: compiled(*inputs), repeats).median}
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("peak_bytes_in_use", 0) > before:
        out["device_peak"] = float(stats["peak_bytes_in_use"])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048", help="comma-separated square image sizes in px")
    parser.add_argument("--strips", default="1,8", help="comma-separated strip counts (1: whole image)")
    parser.add_argument("--remat", default="no,yes", help="comma-separated: no, yes (block rematerialisation)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated VGG compute dtypes")
    parser.add_argument("--no-rss", action="store_true", help="compiled sizes only (no subprocess runs)")
    parser.add_argument("--time", action="store_true", help="also run each step here: median s/step (GPU, TPU)")
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "remat,dtype,strips,size": measure RSS, print JSON
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    if args.child:
        remat, dtype, strips, size = args.child.split(",")
        print(json.dumps(measure_rss(remat == "1", dtype, int(strips), int(size))))
        return

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        cases = [(remat, dtype) for remat, dtype in CASES
                 if ("yes" if remat else "no") in args.remat.split(",") and dtype in args.dtypes.split(",")]
        for strips, (remat, dtype) in itertools.product([int(n) for n in args.strips.split(",")], cases):
            row = {"size": size, "strips": strips, "remat": remat, "dtype": dtype,
                   **compiled_bytes(remat, dtype, strips, size, run=args.time)}
            if not args.no_rss and os.path.exists("/proc/self/clear_refs"):
                proc = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), f"--child={int(remat)},{dtype},{strips},{size}"],
                    capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                )
                if proc.returncode == 0:
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                else:
                    print(f"RSS run failed for {size} px strips={strips} remat={remat} {dtype}: "
                          f"{proc.stderr[-500:]}", file=sys.stderr)
            rows.append(row)
            print(f"{size} px strips={strips} remat={remat} {dtype}: " + _summary(row), file=sys.stderr, flush=True)

    settings = {"sizes": args.sizes, "strips": args.strips, "remat": args.remat, "dtypes": args.dtypes,
                "rss": not args.no_rss, "time": args.time, "weights": results.INIT_PARAMS}
    doc = results.document("memory", argv, settings, rows)
    print("\n" + table(doc))
    results.write(doc, args.out, args.record)


def table(doc: dict[str, Any]) -> str:
    """The results document's table: per case, XLA's compiled sizes, the measured RSS growth and device peak per
    megapixel, and the step time where measured."""
    lines = ["One step (forward + input gradient, Gram + content loss); MB = 10^6 bytes, MP = 10^6 px. RSS: a "
             "fresh process per case (compilation included); device peak and step time with --time.", "",
             "| size | strips | remat | dtype | temp MB | args MB | out MB | compiled MB/MP | RSS growth MB/MP "
             "| device peak MB/MP | step ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["results"]:
        mp = r["size"] ** 2 / 1e6
        rss = f"{r['rss_growth'] / MB / mp:.0f}" if "rss_growth" in r else "-"
        peak = f"{r['device_peak'] / MB / mp:.0f}" if "device_peak" in r else "-"
        step = f"{1e3 * r['step_s']:.1f}" if "step_s" in r else "-"
        lines.append(f"| {r['size']} | {r['strips']} | {'yes' if r['remat'] else 'no'} | {r['dtype']} | "
                     f"{r['temp'] / MB:.0f} | {r['argument'] / MB:.0f} | {r['output'] / MB:.0f} | "
                     f"{r['total'] / MB / mp:.0f} | {rss} | {peak} | {step} |")
    return "\n".join(lines) + "\n"


def _summary(row: dict[str, Any]) -> str:
    mp = row["size"] ** 2 / 1e6
    parts = [f"compiled {row['total'] / MB / mp:.0f} MB/MP"]
    if "rss_growth" in row:
        parts.append(f"RSS {row['rss_growth'] / MB / mp:.0f} MB/MP")
    if "device_peak" in row:
        parts.append(f"device peak {row['device_peak'] / MB / mp:.0f} MB/MP")
    if "step_s" in row:
        parts.append(f"step {1e3 * row['step_s']:.1f} ms")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
