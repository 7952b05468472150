"""What the progress bar's losses cost: a chunk of steps with and without the energy at its last image.

    python benchmarks/report_cost.py --weights=W [--size=256] [--kernels=gram,gaussian] [--repeats=6]

The run reports the energy terms at the step the bar shows (:func:`nst_jax.transfer.chunk_report`): one forward
pass and loss more per chunk. This times ``transfer.chunk`` and ``transfer.chunk_report`` of the run's chunk length,
compiled the same way, alternately in one process (the machine is shared: only the ratio means anything), and
prints seconds per chunk of each and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import results, timing  # noqa: E402
from configs import default  # noqa: E402
from nst_jax import config as cfg_lib  # noqa: E402
from nst_jax import demo, job, placement, transfer, weights  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--kernels", default="gram,gaussian")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "report_cost")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    loaded = weights.load(args.weights)
    print(f"{jax.devices()[0].device_kind}, {args.size} px, weights {weights.describe(loaded)}")
    print(_HEADER)
    rows = []
    for kernel in args.kernels.split(","):
        config = default.get_config()
        config.kernel, config.size, config.steps = kernel, args.size, 10_000
        problem = cfg_lib.problem(config)
        settings = cfg_lib.step_settings(config, loaded.source)
        length = cfg_lib.chunk_length(config)
        rgb = demo.content_image(args.size)
        inputs = job.JobInputs(cfg_lib.parse(config), rgb, [demo.style_image(args.size)], "demo", ["demo"])
        s = job.prepare(problem, settings, [inputs], loaded, placement.JobMesh(), None)
        one = jax.tree.map(lambda a: a[0], (s.state, s.tgt, s.scales))
        fns = {
            "plain": jax.jit(transfer.chunk, static_argnums=(0, 1, 2)),
            "report": jax.jit(transfer.chunk_report, static_argnums=(0, 1, 2)),
        }
        compiled = {name: fn.lower(problem, settings, length, one[0], s.params, one[1], one[2], s.loop_key).compile()
                    for name, fn in fns.items()}
        call = {name: functools.partial(fn, one[0], s.params, one[1], one[2], s.loop_key)
                for name, fn in compiled.items()}
        # One call of each in turn per round; the first round's (a first call) is dropped when there are others.
        times = timing.interleave({name: functools.partial(timing.repeat, fn, 1, warmup=0)
                                   for name, fn in call.items()}, args.repeats)
        plain, report = (timing.median_of(times[n][1:] or times[n]) for n in ("plain", "report"))
        rows.append({"method": kernel, "chunk": length, "plain_s": plain, "report_s": report})
        print(_row(rows[-1]), flush=True)
    settings = {"size": args.size, "kernels": args.kernels, "repeats": args.repeats,
                "weights": results.weights_record(args.weights)}
    results.write(results.document("report_cost", argv, settings, rows), args.out, args.record)


_HEADER = "| method | chunk | plain s/chunk | with the report s/chunk | ratio |\n| --- | ---: | ---: | ---: | ---: |"


def _row(r: dict[str, Any]) -> str:
    return (f"| {r['method']} | {r['chunk']} | {r['plain_s']:.3f} | {r['report_s']:.3f} | "
            f"{r['report_s'] / r['plain_s']:.3f} |")


def table(doc: dict[str, Any]) -> str:
    """The results document's table: seconds per chunk without and with the report, and their ratio."""
    return f"{doc['settings']['size']} px.\n\n{_HEADER}\n" + "".join(_row(r) + "\n" for r in doc["results"])


if __name__ == "__main__":
    main()
