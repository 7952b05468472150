"""MMD with the linear kernel: matches the channel means of each layer only (the paper's weakest style).

    python -m nst_jax.main --config=configs/linear.py --content=photo.jpg --style=painting.jpg --output=linear.png

Produces linear.png and linear.json with torchvision VGG-19 weights and automatic balance.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "linear"
    c.output = "linear.png"
    return c
