"""Training a Johnson et al. (2016) network for one style, with any style method of nst_jax (``kernel``).

    python -m nst_jax.train --net=johnson --data=COCO/train2014 --style=painting.jpg --kernel=gram --workdir=w

Produces w/model.msgpack (apply it with ``python -m nst_jax.fast --model=w/model.msgpack``), checkpoints,
metrics.jsonl, TensorBoard events and held-out samples (docs/feedforward.md). The papers' scale: COCO 2014
(about 83k images), 2 epochs at batch 4, about 40k steps of 256 px crops.
"""

from ml_collections import config_dict

from configs import default

METHOD_FIELDS = ("kernel_weights", "poly_c", "poly_d", "gaussian_gamma", "gaussian_estimator", "rff_features",
                 "block_size", "swd_projections", "mkmmd_scales")
"""The style methods' config fields (their ``config_fields``), as configs/default.py sets them."""


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.net = "johnson"  # "johnson" (one style per network) or "adain" (any style)
    c.data = ""  # folder of content images (searched recursively)
    c.style = ""  # johnson: the style image
    c.style_data = ""  # adain: folder of style images
    c.workdir = ""  # where model.msgpack, checkpoints, metrics and samples go
    c.weights = ""  # VGG-19 weights file; empty: the cached torchvision file
    c.source = "torchvision"  # which cached VGG-19 file to use when `weights` is empty

    c.size = 256  # crop side in px (images resized so their short side is this, then a random crop)
    c.style_size = 256  # johnson: long edge of the style image
    c.batch = 4  # global batch (split over all devices)
    c.steps = 40000  # optimisation steps
    c.lr = 1e-3  # Adam learning rate
    c.seed = 0  # network initialisation, data order and crops, stochastic estimators

    c.kernel = "gram"  # style method or fusion (gram, gaussian, bn, swd, ..., gram+bn)
    defaults = default.get_config()
    for name in METHOD_FIELDS:
        c[name] = defaults[name]
    c.pooling = "max"
    c.content_layers = "relu2_2"  # johnson: pytorch/examples fast_neural_style's content layer
    c.style_layers = "relu1_1,relu2_1,relu3_1,relu4_1"
    c.layer_weights = "1,1,1,1"
    c.content_weight = 1.0  # the content term, 1 at the untrained network's output
    c.style_weight = 1.0  # each style layer's term is 1 at the content photos themselves
    c.tv_weight = 1.0  # mean squared difference of neighbouring pixels, [0, 1] units

    c.johnson_channels = (32, 64, 128)  # widths of the three down-sampling convolutions
    c.johnson_residual_blocks = 5

    c.holdout = 2  # the last N files of `data` are not trained on: the samples stylise them
    c.log_every = 10  # metrics.jsonl and TensorBoard every N steps
    c.sample_every = 500  # held-out stylisations (PNG) every N steps (0: only at the end)
    c.checkpoint_every = 1000  # orbax checkpoint every N steps (and on Ctrl-C; 0: only then and at the end)
    c.workers = 4  # background decoding threads
    return c
