"""Peak memory of one optimisation step per megapixel, with and without block rematerialisation and bf16.

    python benchmarks/memory.py                          # 1024 and 2048 px, compiled sizes and measured RSS
    python benchmarks/memory.py --sizes=1024 --no-rss    # compiled sizes only (seconds)

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

Parameters are random (:func:`nst_jax.vgg.init_params`): memory does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

from nst_jax import losses, transfer, vgg

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CASES = ((False, "float32"), (True, "float32"), (False, "bfloat16"), (True, "bfloat16"))
MB = 1e6


def problem(remat: bool, dtype: str) -> transfer.Problem:
    return transfer.Problem(
        content_layers=("relu4_2",), style_layers=STYLE_LAYERS, layer_weights=(1.0,) * len(STYLE_LAYERS),
        terms=(losses.StyleTerm("gram", 1.0, {}),), pooling="max", content_weight=1.0, tv_weight=0.0,
        optimizer="adam", remat=remat, dtype=dtype,
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


def compiled_bytes(remat: bool, dtype: str, size: int) -> dict[str, float]:
    prob = problem(remat, dtype)
    t0 = time.time()
    analysis = jax.jit(step_fn(prob)).lower(*abstract_inputs(prob, size)).compile().memory_analysis()
    return {
        "temp": analysis.temp_size_in_bytes,
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
        "total": analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes,
        "compile_s": time.time() - t0,
    }


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_rss(remat: bool, dtype: str, size: int) -> dict[str, float]:
    """In this process (run it in a fresh one): peak RSS growth of compiling and running one step."""
    prob = problem(remat, dtype)
    key = jax.random.key(0)
    params = vgg.init_params(key)
    x = jax.random.uniform(key, (size, size, 3), jnp.float32)
    # Targets of the right shapes without a forward pass: nothing but the step itself allocates at scale.
    tgt = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), abstract_inputs(prob, size)[1])
    scales = {"content": jnp.float32(1.0), "style": {(0, name): jnp.float32(1.0) for name in STYLE_LAYERS}}
    jax.block_until_ready((params, tgt, x))
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (VmHWM) to the current RSS
        f.write("5")
    compiled = jax.jit(step_fn(prob)).lower(params, tgt, scales, x, key).compile()
    t0 = time.time()
    jax.block_until_ready(compiled(params, tgt, scales, x, key))
    step_s = time.time() - t0
    return {"rss_growth": (_status_kb("VmHWM") - before) * 1024.0, "step_s": step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048", help="comma-separated square image sizes in px")
    parser.add_argument("--no-rss", action="store_true", help="compiled sizes only (no subprocess runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "remat,dtype,size": measure RSS and print JSON
    args = parser.parse_args()
    if args.child:
        remat, dtype, size = args.child.split(",")
        print(json.dumps(measure_rss(remat == "1", dtype, int(size))))
        return

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        mp = size * size / 1e6
        for remat, dtype in CASES:
            row = {"size": size, "remat": remat, "dtype": dtype, **compiled_bytes(remat, dtype, size)}
            if not args.no_rss and os.path.exists("/proc/self/clear_refs"):
                proc = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), f"--child={int(remat)},{dtype},{size}"],
                    capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                )
                if proc.returncode == 0:
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                else:
                    print(f"RSS run failed for {size} px remat={remat} {dtype}: {proc.stderr[-500:]}",
                          file=sys.stderr)
            rows.append(row)
            print(f"{size} px remat={remat} {dtype}: compiled {row['total'] / MB / mp:.0f} MB/MP"
                  + (f", RSS {row['rss_growth'] / MB / mp:.0f} MB/MP, step {row['step_s']:.1f} s"
                     if "rss_growth" in row else ""), file=sys.stderr, flush=True)

    print(f"\nOne step (forward + input gradient, Gram + content loss), {jax.default_backend()} "
          f"({platform.processor() or platform.machine()}), jax {jax.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; MB = 10^6 bytes, MP = 10^6 px\n")
    print("| size | remat | dtype | temp MB | args MB | out MB | compiled MB/MP | RSS growth MB/MP | step s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mp = r["size"] ** 2 / 1e6
        rss = f"{r['rss_growth'] / MB / mp:.0f}" if "rss_growth" in r else "-"
        step = f"{r['step_s']:.1f}" if "step_s" in r else "-"
        print(f"| {r['size']} | {'yes' if r['remat'] else 'no'} | {r['dtype']} | {r['temp'] / MB:.0f} | "
              f"{r['argument'] / MB:.0f} | {r['output'] / MB:.0f} | {r['total'] / MB / mp:.0f} | {rss} | {step} |")


if __name__ == "__main__":
    main()
