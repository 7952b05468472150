"""What the progress bar's losses cost: a chunk of steps with and without the energy at its last image.

    python benchmarks/report_cost.py --weights=W [--size=256] [--kernels=gram,gaussian] [--repeats=6]

The run reports the energy terms at the step the bar shows (:func:`nst_jax.job.chunk_report`): one forward
pass and loss more per chunk. This times ``transfer.chunk`` and ``job.chunk_report`` of the run's chunk length,
compiled the same way, alternately in one process (the machine is shared: only the ratio means anything), and
prints seconds per chunk of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from nst_jax import config as cfg_lib  # noqa: E402
from nst_jax import demo, job, transfer, weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--kernels", default="gram,gaussian")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    loaded = weights.load(args.weights)
    print(f"{jax.devices()[0].device_kind}, {args.size} px, weights {weights.describe(loaded)}")
    print("| method | chunk | plain s/chunk | with the report s/chunk | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kernel in args.kernels.split(","):
        config = default.get_config()
        config.kernel, config.size, config.steps = kernel, args.size, 10_000
        problem = cfg_lib.problem(config)
        settings = cfg_lib.step_settings(config, loaded.source)
        length = cfg_lib.chunk_length(config)
        rgb = demo.content_image(args.size)
        inputs = job.JobInputs(config, rgb, [demo.style_image(args.size)], "demo", ["demo"])
        s = job._setup(problem, settings, [inputs], loaded, job.Placement(), None)
        one = jax.tree.map(lambda a: a[0], (s.state, s.tgt, s.scales))
        fns = {
            "plain": jax.jit(transfer.chunk, static_argnums=(0, 1, 2)),
            "report": jax.jit(job.chunk_report, static_argnums=(0, 1, 2)),
        }
        compiled = {name: fn.lower(problem, settings, length, one[0], s.params, one[1], one[2], s.loop_key).compile()
                    for name, fn in fns.items()}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(one[0], s.params, one[1], one[2], s.loop_key))
                times[name].append(time.perf_counter() - t0)
        plain, report = (float(np.median(times[n][1:] or times[n])) for n in ("plain", "report"))
        print(f"| {kernel} | {length} | {plain:.3f} | {report:.3f} | {report / plain:.3f} |", flush=True)


if __name__ == "__main__":
    main()
