"""Batch mode stacked and sharded over the local devices against single runs of the same jobs.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python tests/programs/batch_on_devices.py WEIGHTS CONTENT_DIR STYLE_A STYLE_B OUT

Run by tests/test_batch.py in a subprocess (the device count is fixed when JAX starts). Prints one JSON line:
the device count and, for 8 jobs and for 5 jobs (one round padded to 8), the jobs written, each job's largest
difference from its single run in 8-bit levels and in the float result, whether its final energy and loss
history equal the single run's, and the round size its record gives. 120 steps: enough for a difference in
the last bit to grow into a visible one (Adam amplifies it), if batch and single runs computed differently.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from configs import test as test_config  # noqa: E402
from nst_jax import batch, image, runner, weights  # noqa: E402

weights_path, content_dir, style_a, style_b, out = sys.argv[1:6]
loaded = weights.load(weights_path)
report = {"devices": jax.local_device_count()}

singles = {}
STEPS = 120

def compare(config, jobs, devices, key):
    summary = batch.run_jobs(config, jobs, weights=loaded, devices=devices, log=lambda m: None)
    diffs, same_energy, same_history, records = [], [], [], []
    for job in jobs:
        if job.name not in singles:
            singles[job.name] = runner.stylize(job.content, job.style, batch.job_config(config, job),
                                               weights=loaded)
        single_rgb, single_record = singles[job.name]
        stacked = np.asarray(Image.open(job.output).convert("RGB")).astype(int)
        diffs.append(int(np.abs(stacked - image.to_uint8(single_rgb).astype(int)).max()))
        record = json.load(open(job.output[:-4] + ".json"))
        records.append(record)
        same_energy.append(record["final_losses"] == single_record["final_losses"])
        same_history.append(record["losses"] == single_record["losses"])
    report[key] = {"written": summary.written, "max_diff_uint8": diffs, "final_energy_equal": same_energy,
                   "history_equal": same_history, "steps": [r["steps_run"] for r in records],
                   "padded_to": [r["batch"]["padded_to"] for r in records]}

# Noise init and the Gaussian's random pairs: the keys of every job must be those of its single run.
config = test_config.get_config()
config.weights, config.steps, config.init, config.chunk = weights_path, STEPS, "noise", 10
config.kernel, config.kernel_weights = "linear,gaussian", "0.5,0.5"
# 8 jobs (4 contents x 2 styles) on 8 devices.
jobs = batch.list_jobs(content_dir, [style_a, style_b], [config.kernel], out + "/eight")
compare(config, jobs, jax.local_devices(), "eight_on_eight")
# 5 jobs on 8 devices: one round padded to 8 (the same compiled program as above).
jobs = batch.list_jobs(content_dir, [style_a, style_b], [config.kernel], out + "/five")[:5]
compare(config, jobs, jax.local_devices(), "five_on_eight")
print(json.dumps(report))
