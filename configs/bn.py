"""BatchNorm-statistics matching: per-channel means and standard deviations of each layer.

    python -m nst_jax.main --config=configs/bn.py --content=photo.jpg --style=painting.jpg --output=bn.png

Produces bn.png and bn.json with torchvision VGG-19 weights and automatic balance (the paper used s = 1 for BN).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "bn"
    c.style_weight = 1.0
    c.output = "bn.png"
    return c
