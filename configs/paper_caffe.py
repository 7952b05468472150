"""The official code's settings with the Caffe VGG-19 weights (lyttonhao/Neural-Style-MMD).

    python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth
    python -m nst_jax.main --config=configs/paper_caffe.py --kernel=gaussian --content=photo.jpg --style=painting.jpg

Produces out.png and out.json as the paper's figures were made: Caffe weights on BGR 0-255 mean-subtracted
input, average pooling, long edge 600, style stretched to the content's H x W, the per-method constants of the
official code (balance=none), style weight 5 (set 1 for bn), momentum SGD with its learning-rate schedule,
gradient clipping, TV term and early stop, initialised with the content image. Not reproduced: the official
code's fusion-weight defect and the final TV denoising of the saved image.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.source = "caffe"
    c.pooling = "avg"
    c.size = 600
    c.style_resize = "match_content"
    c.balance = "none"
    c.style_weight = 5.0
    c.optimizer = "sgd_paper"
    c.steps = 1000
    c.gaussian_estimator = "linear"
    c.init = "content"
    return c
