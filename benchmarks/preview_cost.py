"""What ``--preview`` costs a run, the figures the README's "Live preview" quotes:

    python benchmarks/preview_cost.py                  # 512 x 384 px, 20 repeats

* ``to_rgb``: the run's own work per chunk for the page (:func:`nst_jax.job.to_rgb` of the current image, done
  on the optimisation's thread);
* ``Preview.image``: the callback that hands the page that image (a reference under a lock);
* ``encode_png``: the PNG the page's server encodes in its own thread, once per new image it is asked for, for
  a smooth picture (the demo image) and for uniform noise (the worst case for zlib).

Best and median ms of ``--repeats`` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax.numpy as jnp
import numpy as np

from nst_jax import demo, image, job, preview


def _ms(fn, repeats: int) -> tuple[float, float]:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t0))
    return min(out), statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    hw = (args.height, args.width)
    noise = np.random.default_rng(0).random((*hw, 3), dtype=np.float32)
    smooth = image.resize(demo.content_image(max(hw)), hw).astype(np.float32)
    x = np.asarray(image.preprocess(jnp.asarray(smooth), "torchvision"))
    page = preview.Preview()
    rows = [("to_rgb (run thread)", _ms(lambda: job.to_rgb(x, "torchvision"), args.repeats)),
            ("Preview.image (run thread)", _ms(lambda: page.image(1, smooth), args.repeats)),
            ("encode_png, demo picture (server thread)", _ms(lambda: preview.encode_png(smooth), args.repeats)),
            ("encode_png, uniform noise (server thread)", _ms(lambda: preview.encode_png(noise), args.repeats))]
    print(f"{args.width} x {args.height} px, {args.repeats} repeats")
    print("| what | best ms | median ms |\n| --- | ---: | ---: |")
    for name, (best, median) in rows:
        print(f"| {name} | {best:.3f} | {median:.3f} |")


if __name__ == "__main__":
    main()
