"""One sheet of the result controls on one pair: plain, luminance-only, histogram-matched, coarse to fine,
and a 50/50 blend of two styles.

    python scripts/controls_sheet.py --content=photo.jpg --style=a.jpg --style2=b.jpg --out=controls.png

Uses the cached weights unless --weights is given; the sheet's footer names them.
"""

from __future__ import annotations

import argparse
import os
import sys

from configs import default
from nst_jax import cli, image, report, runner, sheet
from nst_jax import weights as weights_lib
from nst_jax.errors import UserError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", required=True)
    parser.add_argument("--style", required=True)
    parser.add_argument("--style2", required=True)
    parser.add_argument("--weights", default="")
    parser.add_argument("--kernel", default="gram")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default="controls.png")
    args = parser.parse_args()
    try:
        weights = weights_lib.load(weights_lib.resolve(args.weights or None))
        variants = [
            ("plain", args.style, {}),
            ("preserve_colors=luminance", args.style, {"preserve_colors": "luminance"}),
            ("preserve_colors=histogram", args.style, {"preserve_colors": "histogram"}),
            ("scales=2", args.style, {"scales": 2}),
            ("blend 0.5/0.5", f"{args.style},{args.style2}", {"style_blend": "0.5,0.5"}),
        ]
        tiles = []
        for label, style, fields in variants:
            config = default.get_config()
            config.kernel, config.size, config.steps = args.kernel, args.size, args.steps
            for k, v in fields.items():
                config[k] = v
            print(f"== {label}", file=sys.stderr, flush=True)
            result, record = runner.stylize(args.content, style, config, weights=weights, progress=report.ProgressBar())
            final = record["final_losses"]
            tiles.append((result, f"{label}  {record['run_s']:.0f} s\nstyle {final['style']:.3g} "
                                  f"content {final['content']:.3g}"))
        base = default.get_config()
        base.size = args.size
        (content, _), styles = runner.prepare_images(args.content, [args.style, args.style2], base)
        inputs = [(content, "content"), (styles[0][0], "style"), (styles[1][0], "style 2")]
        grid = sheet.contact_sheet(inputs + tiles, footer="weights: " + weights_lib.describe(weights))
        image.save_image(args.out, grid)
    except UserError as e:
        cli.fail(str(e))
    print(f"wrote {os.path.abspath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
