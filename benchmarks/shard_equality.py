"""Each method alone, single-device against ``--shard_image`` over 8 forced CPU devices: the figures in the README.

    python benchmarks/shard_equality.py WEIGHTS [METHODS [STEPS [INIT]]]   # default: all, 100 steps, content

A 35 x 40 image (35 rows: not a multiple of 8) of seeded noise, started from INIT, STEPS Adam steps, the
automatic balance, the test config's layers (relu1_1, relu2_1, relu3_1; content relu2_2), the same seed both
ways. Prints, per method, the largest difference of the two results in 8-bit levels and the largest relative
difference of the energy over the logged steps and at the end; and, as the yardstick of what float rounding
alone does to this optimisation, the same figures for two single-device runs whose content weights differ by
one part in 10^7. (``tests/test_shard.py`` checks all methods at once as a fusion.)
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + os.environ.get("XLA_FLAGS", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import test as test_config  # noqa: E402
from nst_jax import losses, runner, weights  # noqa: E402


def differences(a: tuple, b: tuple) -> tuple[float, float, float]:
    """(image max diff in 8-bit levels, energy max rel. diff over the history, final energy rel. diff)."""
    (x, rec_x), (y, rec_y) = a, b
    history = max(abs(u - v) / abs(u) for u, v in zip(rec_x["losses"]["total"], rec_y["losses"]["total"],
                                                       strict=True))
    final = abs(rec_x["final_losses"]["total"] - rec_y["final_losses"]["total"]) / abs(
        rec_x["final_losses"]["total"])
    return float(np.abs(x - y).max() * 255), history, final


def main() -> None:
    loaded = weights.load(sys.argv[1])
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else list(losses.METHODS)
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    init = sys.argv[4] if len(sys.argv) > 4 else "content"
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 1, (35, 40, 3)).astype(np.float32)
    style = rng.uniform(0, 1, (30, 36, 3)).astype(np.float32)
    print(f"{steps} steps from {init}; sharded (8 devices) vs single | single vs single, content weight x (1 + 1e-7)")
    print("| method | image, levels | energy, max rel. over steps | final energy rel. "
          "| image, levels | energy, max rel. over steps | final energy rel. |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method in methods:
        runs = []
        for sharded, nudge in ((False, 1.0), (True, 1.0), (False, 1.0 + 1e-7)):
            config = test_config.get_config()
            config.kernel, config.size, config.steps, config.init = method, 40, steps, init
            config.shard_image, config.content_weight = sharded, config.content_weight * nudge
            runs.append(runner.stylize(content, style, config, weights=loaded))
        cells = [*differences(runs[0], runs[1]), *differences(runs[0], runs[2])]
        print(f"| {method} | " + " | ".join(f"{v:.2g}" for v in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
