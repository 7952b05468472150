"""What ``--preview`` costs a run, the figures the README's "Live preview" quotes:

    python benchmarks/preview_cost.py                  # 512 x 384 px, 20 repeats

* ``to_rgb``: the run's own work per chunk for the page (:func:`nst_jax.image.to_rgb` of the current image, done
  on the optimisation's thread);
* ``Preview.image``: the callback that hands the page that image (a reference under a lock);
* ``encode_png``: the PNG the page's server encodes in its own thread, once per new image it is asked for, for
  a smooth picture (the demo image) and for uniform noise (the worst case for zlib).

Best and median ms of ``--repeats`` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import results, timing  # noqa: E402
from nst_jax import demo, image, preview  # noqa: E402


def _ms(fn, repeats: int) -> tuple[float, float]:
    t = timing.repeat(fn, repeats)
    return 1e3 * t.best, 1e3 * t.median


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "preview_cost")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    hw = (args.height, args.width)
    noise = np.random.default_rng(0).random((*hw, 3), dtype=np.float32)
    smooth = image.resize(demo.content_image(max(hw)), hw).astype(np.float32)
    x = np.asarray(image.preprocess(jnp.asarray(smooth), "torchvision"))
    page = preview.Preview()
    rows = [("to_rgb (run thread)", _ms(lambda: image.to_rgb(x, "torchvision"), args.repeats)),
            ("Preview.image (run thread)", _ms(lambda: page.image(1, smooth), args.repeats)),
            ("encode_png, demo picture (server thread)", _ms(lambda: preview.encode_png(smooth), args.repeats)),
            ("encode_png, uniform noise (server thread)", _ms(lambda: preview.encode_png(noise), args.repeats))]
    doc = results.document("preview_cost", argv, {"width": args.width, "height": args.height,
                                                  "repeats": args.repeats},
                           [{"what": name, "best_ms": best, "median_ms": median} for name, (best, median) in rows])
    print(table(doc), end="")
    results.write(doc, args.out, args.record)


def table(doc: dict[str, Any]) -> str:
    """The results document's table: best and median ms of each call."""
    env = doc["settings"]
    lines = [f"{env['width']} x {env['height']} px, {env['repeats']} repeats", "",
             "| what | best ms | median ms |", "| --- | ---: | ---: |"]
    lines += [f"| {r['what']} | {r['best_ms']:.3f} | {r['median_ms']:.3f} |" for r in doc["results"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
