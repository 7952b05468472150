"""One image's rows split over 8 devices (``--shard_image``) against the single-device run.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python tests/programs/shard_on_devices.py WEIGHTS

Run by tests/test_shard.py in a subprocess (the device count is fixed when JAX starts). A 35 x 40 image (35 rows:
not a multiple of 8) runs single and sharded in this process, with noise init, for 3 steps: every method at once
as one fusion (each method's own energy is reported as a term), and L-BFGS (its history has a leading axis)
with the automatic balance; the Gaussian's full, unbiased and rff estimators; a sharded run stopped and resumed
from its checkpoint. Prints one JSON line: per run, the largest difference of the images in 8-bit levels and the
largest relative difference of each energy term over the logged steps and at the end; the compiled chunk's
convolutions (output rows and element counts, single and sharded) and the state's per-device shapes.
"""

import functools
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import test as test_config  # noqa: E402
from nst_jax import config as cfg_lib  # noqa: E402
from nst_jax import image, job, losses, runner, shard, transfer, weights  # noqa: E402

loaded = weights.load(sys.argv[1])
rng = np.random.default_rng(0)
content = rng.uniform(0, 1, (35, 40, 3)).astype(np.float32)
style = rng.uniform(0, 1, (30, 36, 3)).astype(np.float32)
report = {"devices": jax.local_device_count()}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-30)


def compare(name: str, **fields) -> None:
    runs = {}
    for sharded in (False, True):
        config = test_config.get_config()
        config.size, config.steps, config.chunk, config.init = 40, 3, 1, "noise"
        config.update(fields)
        config.shard_image = sharded
        runs[sharded] = runner.stylize(content, style, config, weights=loaded)
    (single, rec1), (split, rec8) = runs[False], runs[True]
    terms = [k for k in rec1["losses"] if k != "step"]
    report[name] = {
        "steps": rec1["losses"]["step"],
        "max_diff_uint8": int(np.abs(image.to_uint8(single).astype(int) - image.to_uint8(split).astype(int)).max()),
        "max_abs_diff": float(np.abs(single - split).max()),
        "history_rel": {k: max(relative(a, b) for a, b in zip(rec1["losses"][k], rec8["losses"][k], strict=True))
                        for k in terms},
        "final_rel": {k: relative(rec1["final_losses"][k], rec8["final_losses"][k]) for k in terms},
        "balance_rel": max(relative(rec1["balance"]["factors"][k], rec8["balance"]["factors"][k])
                           for k in rec1["balance"]["factors"]),
        "shard_image": rec8["shard_image"],
    }


# The fusion without the balance (a gradient norm per method would compile a backward pass each); the balance's
# sharded path runs with L-BFGS.
compare("all_methods", kernel=",".join(losses.METHODS), balance="none")
compare("lbfgs", kernel="gram", optimizer="lbfgs", chunk=3)
# The Gaussian's other estimators: the tiled pairwise sums over all samples and the random features.
for estimator in ("full", "unbiased", "rff"):
    compare(f"gaussian_{estimator}", kernel="gaussian", gaussian_estimator=estimator, balance="none")


def resumed_equals_uninterrupted() -> dict:
    """A sharded run stopped after step 2 (checkpoint) and resumed, against the same run without the stop."""
    import tempfile

    config = test_config.get_config()
    config.size, config.steps, config.chunk, config.init, config.kernel = 40, 4, 1, "noise", "gram"
    config.shard_image, config.checkpoint_every = True, 0
    whole, _ = runner.stylize(content, style, config, weights=loaded)
    with tempfile.TemporaryDirectory() as folder:
        ckpt = os.path.join(folder, "x.ckpt")
        calls = []
        try:
            runner.stylize(content, style, config, weights=loaded, checkpoint_path=ckpt,
                           should_stop=lambda: calls.append(1) or len(calls) >= 2)
            raise AssertionError("the run did not stop")
        except runner.Interrupted as e:
            stopped_at = e.record["steps_run"]
        config.resume = True
        resumed, record = runner.stylize(content, style, config, weights=loaded, checkpoint_path=ckpt)
    return {"stopped_at": stopped_at, "resumed_from": record["resumed_from"],
            "max_abs_diff": float(np.abs(whole - resumed).max()), "steps": record["losses"]["step"]}


report["resume"] = resumed_equals_uninterrupted()


def conv_outputs(hlo: str) -> list[list[int]]:
    """The output shapes of the compiled program's convolutions (per device: XLA's partitioned module)."""
    return [[int(d) for d in s.split(",")] for s in re.findall(r"= f32\[([0-9,]+)\][^ ]* convolution\(", hlo)]


# The compiled chunk of the Gram method, single and sharded: what each device computes.
config = test_config.get_config()
config.size = 40
problem = cfg_lib.problem(config)
settings = cfg_lib.step_settings(config, loaded.source)
x0 = jnp.asarray(image.preprocess(jnp.asarray(content), loaded.source))
tgt = transfer.targets(problem, loaded.params, x0, [x0])
base = transfer.paper_scales(problem, loaded.params, x0)
scales = jax.tree.map(lambda a: a[0], job.multipliers(1.0, 1.0, [[1.0]], base))
key = jax.random.key(0)
single = jax.jit(transfer.chunk_report, static_argnums=(0, 1, 2)).lower(
    problem, settings, 1, transfer.init_state(problem, settings, x0), loaded.params, tgt, scales, key).compile()
rows = shard.over(jax.local_devices(), problem, x0.shape)
problem8 = rows.problem(problem)
stack = functools.partial(jax.tree.map, lambda a: a[None])  # the run's functions take a job axis of one
state8 = rows.put(stack(transfer.init_state(problem8, settings, x0)))
split = rows.compile_chunk(problem8, settings, 1, state8, rows.replicated(loaded.params), rows.put(stack(tgt)),
                           rows.put(stack(scales)), rows.replicated(key))
report["layout"] = {"rows": rows.rows, "padded": rows.padded, "devices": rows.devices}
report["state_shards"] = {"x": rows.shard_shapes(state8.x), "adam_mu": rows.shard_shapes(state8.opt_state[0].mu)}
report["convs_single"] = conv_outputs(single.as_text())
report["convs_sharded"] = conv_outputs(split.as_text())
print(json.dumps(report))
