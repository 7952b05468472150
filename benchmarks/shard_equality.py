"""Each method alone, single-device against ``--shard_image`` over 8 forced CPU devices: the figures in the README.

    python benchmarks/shard_equality.py WEIGHTS [METHODS]      # default: every method

A 35 x 40 image (35 rows: not a multiple of 8) from seeded noise, 4 Adam steps, the automatic balance, the test
config's layers (relu1_1, relu2_1, relu3_1; content relu2_2), the same seed both ways. Prints, per method, the
largest difference of the two results in 8-bit levels and the largest relative difference of the energy over
the logged steps and at the end. (``tests/test_shard.py`` checks all methods at once as a fusion.)
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + os.environ.get("XLA_FLAGS", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import test as test_config  # noqa: E402
from nst_jax import losses, runner, weights  # noqa: E402


def main() -> None:
    loaded = weights.load(sys.argv[1])
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else list(losses.METHODS)
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 1, (35, 40, 3)).astype(np.float32)
    style = rng.uniform(0, 1, (30, 36, 3)).astype(np.float32)
    print("| method | image: max diff, 8-bit levels | energy: max rel. diff over steps | final energy rel. diff |")
    print("| --- | ---: | ---: | ---: |")
    for method in methods:
        runs = []
        for sharded in (False, True):
            config = test_config.get_config()
            config.kernel, config.size, config.steps, config.init = method, 40, 4, "noise"
            config.shard_image = sharded
            runs.append(runner.stylize(content, style, config, weights=loaded))
        (a, rec_a), (b, rec_b) = runs
        history = max(abs(x - y) / abs(x) for x, y in zip(rec_a["losses"]["total"], rec_b["losses"]["total"],
                                                           strict=True))
        final = abs(rec_a["final_losses"]["total"] - rec_b["final_losses"]["total"]) / abs(
            rec_a["final_losses"]["total"])
        print(f"| {method} | {np.abs(a - b).max() * 255:.2g} | {history:.2g} | {final:.2g} |", flush=True)


if __name__ == "__main__":
    main()
