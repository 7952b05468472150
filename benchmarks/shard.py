"""One image over 1, 2, 4, 8 devices (``--shard_image``): per-device memory and time per step.

    python benchmarks/shard.py                                   # 512 px, gram and gaussian, 8 forced CPU devices
    python benchmarks/shard.py --size=1024 --methods=gram --devices=1,8 --steps=2
    python benchmarks/shard.py --size=2048 --steps=0             # memory only: compile, do not run
    python benchmarks/shard.py --platform=gpu --devices=1        # on a machine with GPUs: its real devices

On a CPU each device count runs in a fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(fixed when JAX starts); the image's rows are split over the first N devices (:mod:`nst_jax.shard`).

One step is what a run compiles (:func:`nst_jax.transfer.chunk` of one Adam step, through
:meth:`nst_jax.shard.ImageRows.compile_chunk`) with the default config's layers (content relu4_2; style relu1_1
... relu5_1) and the method's default estimator, on a square image. Two figures per device count:

* ``MB per device``: XLA's memory analysis of the compiled, partitioned program (what one device holds:
  temporaries + arguments + outputs; arguments include the replicated VGG-19 parameters up to relu5_1);
* ``s per step``: the median wall time of ``--steps`` steps after one warm-up step.

Forced CPU devices share the machine's cores: their time shows the partitioned program's overhead, not a
speed-up; memory per device is what the split buys there. Parameters are random (:func:`nst_jax.vgg.init_params`):
neither figure depends on their values.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import results, timing  # noqa: E402


def child(args: argparse.Namespace) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import default
    from nst_jax import config as cfg_lib
    from nst_jax import job, shard, transfer, vgg

    devices = jax.devices()[: args.child]
    stack = functools.partial(jax.tree.map, lambda a: a[None])
    for method in args.methods.split(","):
        config = default.get_config()
        config.kernel = method
        problem = cfg_lib.problem(config)
        settings = cfg_lib.step_settings(config, "torchvision")
        params = vgg.init_params(jax.random.key(0))
        x = jax.random.uniform(jax.random.key(1), (args.size, args.size, 3), jnp.float32, -1.0, 1.0)
        rows = shard.over(devices, problem, x.shape)
        problem_n = rows.problem(problem)
        tgt = jax.jit(transfer.targets, static_argnums=0)(problem, params, x, [x[::-1]])
        base = transfer.paper_scales(problem, params, x)
        scales = jax.tree.map(lambda a: a[0], job.multipliers(1.0, 1.0, [[1.0]], base))
        # The run's functions take a job axis of one on the job's arrays (the state, targets, multipliers).
        state = rows.put(stack(transfer.init_state(problem_n, settings, x)))
        shared = (rows.replicated(params), rows.put(stack(tgt)), rows.put(stack(scales)),
                  rows.replicated(jax.random.key(2)))
        compiled, compile_s = timing.once(functools.partial(rows.compile_chunk, problem_n, settings, 1, state, *shared))
        memory = compiled.memory_analysis()
        per_device = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        carry = [state, None]

        def step(carry=carry, compiled=compiled, shared=shared):
            carry[0], carry[1], _ = compiled(carry[0], *shared)
            return carry

        # --steps=0: compile only.
        steps = timing.repeat(step, args.steps, warmup=1) if args.steps else None
        terms = carry[1]
        print(json.dumps({
            "devices": len(devices), "method": method, "size": args.size, "padded_rows": rows.padded,
            "rows_per_device": rows.padded // len(devices), "mb_per_device": per_device / 1e6,
            "temp_mb": memory.temp_size_in_bytes / 1e6, "arguments_mb": memory.argument_size_in_bytes / 1e6,
            "s_per_step": steps.median if steps else None, "compile_s": compile_s,
            "platform": devices[0].platform, "energy": float(np.ravel(terms["total"])[-1]) if steps else None,
        }), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--methods", default="gram,gaussian")
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--platform", default="cpu", help="cpu: forced host devices; gpu/tpu: the real ones")
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "shard")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    if args.child:
        child(args)
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for n in map(int, args.devices.split(",")):
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if args.platform == "cpu":
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n} "
                       + os.environ.get("XLA_FLAGS", ""))
        out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={n}", f"--size={args.size}",
                              f"--methods={args.methods}", f"--steps={args.steps}"],
                             capture_output=True, text=True, env=env, check=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    settings = {"size": args.size, "methods": args.methods, "devices": args.devices, "steps": args.steps,
                "platform": args.platform, "weights": results.INIT_PARAMS}
    doc = results.document("shard", argv, settings, rows)
    print(table(doc), end="")
    print(json.dumps(rows))
    results.write(doc, args.out, args.record)


def table(doc: dict[str, Any]) -> str:
    """The results document's table: per method and device count, memory per device and time per step."""
    lines = ["| method | devices | rows per device | MB per device | of which temporaries | s per step | compile s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(doc["results"], key=lambda r: (r["method"], r["devices"])):
        step = "" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
        lines.append(f"| {r['method']} | {r['devices']} | {r['rows_per_device']} | {r['mb_per_device']:.0f} | "
                     f"{r['temp_mb']:.0f} | {step} | {r['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
