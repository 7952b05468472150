"""MMD with the Gaussian kernel, the paper's linear-time paired estimator and bandwidth rule.

    python -m nst_jax.main --config=configs/gaussian.py --content=photo.jpg --style=painting.jpg --output=gaussian.png

Produces gaussian.png and gaussian.json with torchvision VGG-19 weights and automatic balance. The
estimator is fresh noise every step; ``--config.gaussian_estimator=full`` uses all pairs (tiled, slower).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.kernel = "gaussian"
    c.gaussian_estimator = "linear"
    c.output = "gaussian.png"
    return c
