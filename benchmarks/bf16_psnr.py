"""What ``--dtype=bfloat16`` does to the result: PSNR of the bfloat16 run's image against the float32 run's.

    python benchmarks/bf16_psnr.py --weights=W [--size=512 --steps=500 --methods=gram,gaussian] [--images=DIR]

For each method: the same run (same seed, config defaults, Adam, content init) in float32 and with VGG in
bfloat16 (parameters, losses and the optimiser stay float32), then the PSNR of the two 8-bit results in dB
(peak 255) and their largest difference in levels. As the yardstick of what any rounding does to the same
optimisation, the float32 run is also compared with a float32 run whose content weight differs by one part in
10^7. Content and style: ``--images`` (tubingen.jpg and starry_night.jpg there) or the built-in demo images.
Prints a Markdown table and a JSON line; ``--out`` also writes the images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import results  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--methods", default="gram,gaussian")
    parser.add_argument("--images", default="", help="folder with tubingen.jpg and starry_night.jpg")
    parser.add_argument("--out", default="", help="folder for the images, results.json and results.md (optional)")
    results.add_arguments(parser, "bf16_psnr")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)

    from configs import default
    from nst_jax import image, runner, weights

    loaded = weights.load(args.weights)
    content = os.path.join(args.images, "tubingen.jpg") if args.images else None
    style = os.path.join(args.images, "starry_night.jpg") if args.images else None
    rows = []
    for method in args.methods.split(","):
        runs = {}
        for name, dtype, nudge in (("float32", "float32", 1.0), ("bfloat16", "bfloat16", 1.0),
                                   ("float32_nudged", "float32", 1.0 + 1e-7)):
            config = default.get_config()
            config.kernel, config.size, config.steps, config.dtype = method, args.size, args.steps, dtype
            config.content_weight = config.content_weight * nudge
            config.sgd.stop_tol = 0.0  # every step, both ways
            rgb, record = runner.stylize(content, style, config, weights=loaded)
            runs[name] = (image.to_uint8(rgb), record)
            if args.out:
                image.save_image(os.path.join(args.out, f"{method}_{name}.png"), rgb)
        ref = runs["float32"][0]
        row = {"method": method, "size": args.size, "steps": args.steps, "weights": loaded.source,
               "psnr_bf16_db": psnr(ref, runs["bfloat16"][0]),
               "max_diff_bf16": int(np.abs(ref.astype(int) - runs["bfloat16"][0].astype(int)).max()),
               "psnr_nudged_db": psnr(ref, runs["float32_nudged"][0]),
               "final_energy": {k: runs[k][1]["final_losses"]["total"] for k in runs},
               "ms_per_step": {k: 1e3 * runs[k][1]["run_s"] / max(runs[k][1]["steps_run"], 1) for k in runs}}
        rows.append(row)
        print(f"[{method}] {json.dumps(row)}", file=sys.stderr, flush=True)
    settings = {"size": args.size, "steps": args.steps, "methods": args.methods,
                "images": "tubingen.jpg, starry_night.jpg" if args.images else "demo",
                "weights": results.weights_record(loaded.path)}
    doc = results.document("bf16_psnr", argv, settings, rows)
    print(table(doc), end="")
    print(json.dumps(rows))
    results.write(doc, args.out, args.record)


def table(doc: dict[str, Any]) -> str:
    """The results document's table: per method, the PSNRs, the largest difference and the step times."""
    lines = ["| method | PSNR bf16 vs fp32, dB | max diff, levels | PSNR fp32 vs fp32 (content weight x (1 + 1e-7)), "
             "dB | ms/step fp32 | ms/step bf16 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['method']} | {r['psnr_bf16_db']:.1f} | {r['max_diff_bf16']} | {r['psnr_nudged_db']:.1f} | "
              f"{r['ms_per_step']['float32']:.0f} | {r['ms_per_step']['bfloat16']:.0f} |" for r in doc["results"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
