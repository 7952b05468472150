"""The official run (lyttonhao/Neural-Style-MMD, run.sh) with the Caffe VGG-19 weights, step for step.

    python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth
    pip install -e '.[paper]'   # scikit-image, for the final TV denoising (or add --config.sgd.denoise=0)
    python -m nst_jax.main --config=configs/paper_caffe.py --kernel=gaussian --content=photo.jpg --style=painting.jpg

Produces out.png and out.json as the official code made its figures (run.sh runs linear, poly, gaussian, bn,
bn,poly and linear,gaussian this way):

* Caffe weights on mean-subtracted 0-255 input, average pooling, the net cut after relu5_1, style layers
  relu1_1 ... relu5_1 with weight 1, content layer relu4_2; content long edge 600, style stretched to the
  content's H x W;
* the official per-method constants with balance=none; poly with c = 0 (the official default, so poly is
  the Gram method); the Gaussian's linear-time paired estimator with gamma = 1 / mean squared distance;
* style weight 5, and 1 when --kernel is bn alone (``style_weight`` unset, ``style_weight_by_kernel``
  "bn:1,default:5"; --style_weight=S sets S for every method);
* the official start (``init=official_noise``): uniform(-0.1, 0.1) around the mean pixel, seeded;
* MXNet's momentum SGD as the official code ran it (``sgd.update_rule=mxnet``): lr 0.001 inside the momentum
  buffer (momentum 0.9, weight decay 5e-4), times 0.9 from step 81 and every 80 steps after; the VGG gradient
  clipped to L2 norm 3 H W, then 0.01 * conv(x, Laplacian / 8) with zero padding added
  (``sgd.tv_gradient=official``); no projection onto the pixel range while optimising (``sgd.project=False``),
  the image is clipped only when saved; up to 1000 steps, early stop when the relative change < 0.005;
* the saved image TV-denoised (Chambolle, weight 0.02: ``sgd.denoise``; needs scikit-image).

What still differs from the official run (docs/paper.md lists the same):

* random numbers: the initial noise and the Gaussian's random pairs are drawn from JAX keys of --seed, not
  from MXNet's and Python's generators: the same distributions, other draws;
* resampling: the content and style are resized with Pillow (Lanczos down, bicubic up, antialiased), the
  official code used scikit-image's ``transform.resize``;
* input scale: RGB times 255 here, times 256 in the official code (its inputs are 0.4 % brighter before the
  mean is subtracted);
* the denoising runs on the float result, the official code on the image already cut to 8 bits; snapshots
  (--save_every) are not denoised;
* the official code's defects are not reproduced: its fusion weights (only the first method's factor
  multiplied by all fusion weights; here each method's by its own), BN's NaN at a constant channel, and the
  case-sensitive kernel name.
"""

from ml_collections import config_dict

from configs import default


def get_config():
    c = default.get_config()
    c.source = "caffe"
    c.pooling = "avg"
    c.size = 600
    c.style_resize = "match_content"
    c.balance = "none"
    c.poly_c = 0.0
    c.gaussian_estimator = "linear"
    # Unset: the weight comes from style_weight_by_kernel (run.sh: 1 for bn alone, 5 otherwise).
    c.style_weight = config_dict.placeholder(float)
    c.style_weight_by_kernel = "bn:1,default:5"
    c.optimizer = "sgd_paper"
    c.steps = 1000
    c.init = "official_noise"
    c.sgd.update_rule = "mxnet"
    c.sgd.tv_gradient = "official"
    c.sgd.project = False
    c.sgd.denoise = 0.02
    return c
