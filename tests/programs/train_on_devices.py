"""Trains a small johnson network with every visible device (run with 1 or with 8 forced CPU devices) and prints
a JSON line: the device count and the loss of every logged step. The model file lands in WORKDIR.

    python tests/programs/train_on_devices.py DATA STYLE WEIGHTS WORKDIR
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from configs import train_johnson  # noqa: E402
from nst_jax import trainer  # noqa: E402


def main() -> None:
    data, style, weights, workdir = sys.argv[1:5]
    c = train_johnson.get_config()
    c.update(dict(data=data, style=style, weights=weights, workdir=workdir, size=32, style_size=32, batch=8,
                  steps=3, log_every=1, sample_every=0, checkpoint_every=0, holdout=0, workers=2,
                  johnson_channels=(8, 16, 32), johnson_residual_blocks=1))
    assert trainer.run(c) == 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"]["total"] for line in f]
    print(json.dumps({"devices": jax.device_count(), "losses": losses}))


if __name__ == "__main__":
    main()
