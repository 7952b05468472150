"""Spatial control on one pair, drawn by hand: masks, results without and with them, and what masks cost.

    python scripts/masks_sheet.py --weights=W --out=/tmp/masks_sheet [--images=../shared/images] [--size=256]
        [--steps=100] [--timing_steps=30]

Draws two label images as polygons (relative coordinates, so they fit the images at any resolution):
tubingen.jpg split into sky, buildings and river, and starry_night.jpg into sky, village and cypress. The sky
is styled like the painting's sky, the buildings like its village; the river has no region in the painting,
so with ``mask_fallback=none`` it gets no style loss (content and TV only); the cypress is unused. Writes into
``--out``: the two masks (``content_mask.png``, ``style_mask.png``), the results without and with masks and
their records, ``sheet.png`` (content, its mask, style, its mask, both results, and which weights made them),
``regions.md`` (each colour's role and pixel shares) and, with ``--timing_steps``, ``timing.md``: ms per step
without and with masks for Gram and the Gaussian, measured side by side in this one process, each after its
compilation (``run_s / steps`` of the record). Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from nst_jax import image, outputs, runner, sheet  # noqa: E402
from nst_jax import weights as weights_lib  # noqa: E402

SKY, BUILDINGS, RIVER, CYPRESS = (40, 110, 230), (230, 120, 30), (30, 170, 90), (120, 40, 160)

# (colour, polygon in (x, y) fractions of width and height), drawn in order over a first colour everywhere.
CONTENT_REGIONS = (  # tubingen.jpg, 1024 x 768: everything starts as buildings
    (SKY, [(0, 0), (1, 0), (1, 0.22), (0.93, 0.24), (0.85, 0.26), (0.76, 0.3), (0.68, 0.27), (0.655, 0.14),
           (0.63, 0.27), (0.56, 0.37), (0.43, 0.4), (0.3, 0.44), (0.18, 0.47), (0.08, 0.42), (0, 0.38)]),
    (RIVER, [(0, 0.7), (0.2, 0.71), (0.36, 0.73), (0.5, 0.77), (0.65, 0.82), (0.8, 0.88), (0.92, 0.93),
             (1, 0.95), (1, 1), (0, 1)]),
)
STYLE_REGIONS = (  # starry_night.jpg, 1024 x 640: everything starts as sky
    (BUILDINGS, [(0.32, 1), (0.32, 0.8), (0.45, 0.74), (0.6, 0.7), (0.78, 0.64), (0.9, 0.58), (1, 0.55), (1, 1)]),
    (CYPRESS, [(0.12, 1), (0.13, 0.6), (0.16, 0.35), (0.19, 0.15), (0.22, 0.3), (0.25, 0.55), (0.3, 0.8),
               (0.32, 1)]),
)


def draw_mask(hw: tuple[int, int], first: tuple[int, int, int], regions) -> np.ndarray:
    """A label image (H, W, 3) uint8: ``first`` everywhere, then each (colour, polygon) over it."""
    h, w = hw
    img = Image.new("RGB", (w, h), first)
    draw = ImageDraw.Draw(img)
    for colour, polygon in regions:
        draw.polygon([(x * w, y * h) for x, y in polygon], fill=colour)
    return np.asarray(img)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", default="/tmp/masks_sheet")
    parser.add_argument("--images", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "images"))
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--style", default="starry_night.jpg")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--timing_steps", type=int, default=30, help="0: no timing")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    content, style = os.path.join(args.images, args.content), os.path.join(args.images, args.style)
    content_rgb, style_rgb = image.load_image(content), image.load_image(style)
    cm, sm = os.path.join(args.out, "content_mask.png"), os.path.join(args.out, "style_mask.png")
    Image.fromarray(draw_mask(content_rgb.shape[:2], BUILDINGS, CONTENT_REGIONS)).save(cm)
    Image.fromarray(draw_mask(style_rgb.shape[:2], SKY, STYLE_REGIONS)).save(sm)
    weights = weights_lib.load(args.weights)

    def run(kernel: str, steps: int, masked: bool, name: str | None):
        c = default.get_config()
        c.size, c.steps, c.kernel, c.content, c.style = args.size, steps, kernel, content, style
        c.checkpoint_every = 0
        extra = {"content_mask": cm, "style_mask": sm} if masked else {}
        rgb, record = runner.stylize(content, style, c, weights=weights, **extra)
        if name:
            outputs.write_outputs(os.path.join(args.out, name), rgb, record)
        print(f"{kernel} masked={masked}: {record['steps_run']} steps, {record['run_s']:.1f} s run, "
              f"{record['compile_s']:.1f} s compile", file=sys.stderr, flush=True)
        return rgb, record

    plain, _ = run("gram", args.steps, False, "plain.png")
    masked, record = run("gram", args.steps, True, "masked.png")
    described = weights_lib.describe(weights)
    regions = ", ".join(f"{r['colour']} {r['style']} ({100 * r['content_share']:.0f} % / "
                        f"{100 * r['style_share'][0]:.0f} %)" for r in record["regions"])
    tiles = [(content_rgb, "content"), (image.load_image(cm), "content mask: sky, buildings, river"),
             (plain, f"gram, no masks, {args.steps} steps"),
             (style_rgb, "style"), (image.load_image(sm), "style mask: sky, village, cypress"),
             (masked, f"gram, masks, {args.steps} steps\nriver: no style region (fallback none)")]
    grid = sheet.contact_sheet(tiles, columns=3, footer=f"weights: {described}")
    image.save_image(os.path.join(args.out, "sheet.png"), grid)
    lines = [f"regions (colour, role, share of content / style pixels): {regions}", f"weights: {described}"]
    with open(os.path.join(args.out, "regions.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if args.timing_steps:
        rows = ["| method | no masks, ms/step | masks (3 content regions, 2 with a style), ms/step | extra |",
                "| --- | ---: | ---: | ---: |"]
        for kernel in ("gram", "gaussian"):
            times = []
            for flag in (False, True):
                _, rec = run(kernel, args.timing_steps, flag, None)
                times.append(1e3 * rec["run_s"] / rec["steps_run"])
            rows.append(f"| {kernel} | {times[0]:.0f} | {times[1]:.0f} | {times[1] / times[0] - 1:+.0%} |")
        lines += ["", f"{args.size} px, {args.timing_steps} Adam steps per run, run time after compilation:", *rows]
        with open(os.path.join(args.out, "timing.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "regions.json"), "w") as f:
        json.dump(record["regions"], f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
