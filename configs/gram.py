"""Gram-matrix style loss (Gatys et al.), which the paper shows is MMD with the kernel (x.y)^2.

    python -m nst_jax.main --config=configs/gram.py --content=photo.jpg --style=painting.jpg --output=gram.png

Produces gram.png and gram.json with torchvision VGG-19 weights and automatic balance.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "gram"
    c.output = "gram.png"
    return c
