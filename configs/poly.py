"""MMD with the polynomial kernel (x.y + c)^2, c = 1: second moments plus means.

    python -m nst_jax.main --config=configs/poly.py --content=photo.jpg --style=painting.jpg --output=poly.png

Produces poly.png and poly.json with torchvision VGG-19 weights and automatic balance.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "poly"
    c.poly_c = 1.0
    c.poly_d = 2
    c.output = "poly.png"
    return c
