"""Fusion of linear and Gaussian MMD with equal weights, as in the paper's fusion figure.

    python -m nst_jax.main --config=configs/fusion.py --content=photo.jpg --style=painting.jpg --output=fusion.png

Produces fusion.png and fusion.json. Each method is balanced on its own, then weighted by kernel_weights
(weight_i multiplies method i only; the official code's rule multiplied only the first).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "linear,gaussian"
    c.kernel_weights = "0.5,0.5"
    c.output = "fusion.png"
    return c
