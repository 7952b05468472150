"""Tiny run for tests: 32 px, a few Adam steps, small chunks, the network cut after relu3_1.

    python -m nst_jax.main --config=configs/test.py --weights=random.msgpack --output=/tmp/t.png

Produces a 32 px image and its run record in seconds; not meant to look like anything.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.size = 32
    c.content_layers = "relu2_2"
    c.style_layers = "relu1_1,relu2_1,relu3_1"
    c.layer_weights = "1,1,1"
    c.steps = 6
    c.chunk = 2
    c.log_every = 1
    c.rff_features = 64
    c.block_size = 64
    c.sgd.stop_tol = 0.0  # random test weights move the image too little for the paper's early stop
    return c
