"""Default run: Gram (Gatys) style loss, torchvision VGG-19 weights, Adam, automatic balance.

    python -m nst_jax.main --config=configs/default.py --content=photo.jpg --style=painting.jpg --output=out.png

Produces out.png (long edge 512 px on a GPU or TPU, 256 px on a CPU unless --size is given) and out.json, the
run record. Every field can be overridden on the command line, e.g. ``--config.steps=300``.
"""

from ml_collections import config_dict

STYLE_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"


def get_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()

    # Inputs and output. Empty content/style: the demo images of nst_jax.demo.
    c.content = ""  # content image file; empty: the demo image (nst_jax.demo)
    c.style = ""  # style image file(s), comma-separated for a blend; empty: the demo painting
    c.output = "out.png"  # output image (.png or .jpg); the run record goes beside it as .json
    c.size = config_dict.placeholder(int)  # long edge in px; None: 512 on an accelerator, 256 on a CPU
    c.style_size = config_dict.placeholder(int)  # long edge of the style image; None: content's long edge
    c.style_scale = 1.0  # style long edge = style_scale * (style_size or content long edge)
    c.style_resize = "keep_aspect"  # or "match_content": stretched to the content's H x W (official code)
    c.style_blend = ""  # several styles (--style=a.jpg,b.jpg): mixture weights, e.g. "0.3,0.7"; empty: equal
    c.preserve_colors = "none"  # "luminance" (content's chroma kept) or "histogram" (style recoloured)
    c.scales = 1  # coarse to fine: this many sizes, each twice the last, ending at `size`
    # Spatial control (nst_jax.masks): label images, each colour a region aligned with the same colour's style.
    c.content_mask = ""  # the content's label image; empty: no masks
    c.style_mask = ""  # one label image per style, comma-separated in the order of `style`
    c.mask_fallback = "none"  # content colours with no style region: "none" (no style loss) or "whole" (whole style)

    # Network.
    c.weights = ""  # a file from `python -m weights_converter`; empty: the cached torchvision file
    c.source = "torchvision"  # which cached file to use when `weights` is empty
    c.pooling = "max"  # "max" (torchvision), "avg" (the paper)
    c.content_layers = "relu4_2"  # VGG-19 layers of the content loss
    c.style_layers = STYLE_LAYERS  # VGG-19 layers of the style loss
    c.layer_weights = "1,1,1,1,1"  # one weight per style layer
    c.remat = False  # rematerialise VGG blocks in the backward pass: less activation memory, one more forward pass
    c.dtype = "float32"  # VGG compute dtype, "float32" or "bfloat16" (parameters and losses stay float32)
    c.strips = 1  # > 1: VGG blocks 1-2 in this many horizontal strips: far less memory for large images
    c.shard_image = False  # one image's rows split over all local devices (nst_jax.shard); not with strips

    # Losses. `kernel`: one method (the registry nst_jax.losses.REGISTRY; `python -m nst_jax.main --help` lists
    # them), or a fusion "linear+gaussian" weighted by `kernel_weights`. The method fields below are read by the
    # methods that name them (their `config_fields`).
    c.kernel = "gram"  # style method, or a fusion joined by + (e.g. linear+gaussian)
    c.kernel_weights = ""  # empty: 1 for each method
    c.poly_c = 1.0  # poly: k(x, y) = (x.y + c)^d
    c.poly_d = 2  # poly: the degree d
    c.gaussian_gamma = config_dict.placeholder(float)  # None: the paper's rule, 1 / mean squared distance
    c.gaussian_estimator = "linear"  # "linear" (the paper), "full", "unbiased", "rff"
    c.rff_features = 1024  # random Fourier features of the rff estimator
    c.block_size = 512  # rows per tile of the pairwise MMD estimators
    c.swd_projections = config_dict.placeholder(int)  # swd: random directions per layer and step; None: channels
    c.mkmmd_scales = "0.25,0.5,1,2,4"  # mkmmd: bandwidths as multiples of the paper's rule
    c.content_weight = 1.0  # alpha: the content energy's weight
    c.style_weight = 5.0  # the paper's s; with balance=auto: style/content gradient-norm ratio at the start
    c.tv_weight = 0.0  # total-variation weight
    c.balance = "auto"  # "auto": equalise gradient norms at the start; "none": the paper's raw constants

    # Optimisation.
    c.optimizer = "adam"  # "adam", "lbfgs", "sgd_paper"
    c.steps = config_dict.placeholder(int)  # None: 500 on a GPU or TPU, 200 on a CPU (a few minutes)
    c.lr = 0.05  # Adam step in preprocessed-input units (torchvision: 1 unit = about 0.23 of the [0, 1] range)
    c.init = "content"  # "content", "noise", "official_noise" (the official code's start), or an image file
    c.seed = 0  # noise start and the stochastic estimators' draws
    c.chunk = 25  # optimisation steps per device dispatch
    c.save_every = 0  # intermediate images every N steps (0: none)
    c.log_every = 10  # loss terms in the run record every N steps
    c.checkpoint_every = 100  # checkpoint (out.ckpt) every N steps and on Ctrl-C (0: only on Ctrl-C)
    c.resume = False  # continue from out.ckpt

    # The official code's SGD (optimizer=sgd_paper).
    c.sgd = config_dict.ConfigDict()
    c.sgd.lr = 0.001  # learning rate
    c.sgd.momentum = 0.9  # momentum
    c.sgd.weight_decay = 5e-4  # weight decay on the image
    c.sgd.decay = 0.9  # learning-rate factor every decay_every steps
    c.sgd.decay_every = 80  # steps between learning-rate decays
    c.sgd.clip_per_pixel = 3.0  # VGG gradient clipped to L2 norm clip_per_pixel * H * W
    c.sgd.tv_weight = 0.01  # TV gradient added after clipping
    c.sgd.stop_tol = 0.005  # early stop when ||x_t - x_t-1|| / ||x_t|| < stop_tol (0: never)
    c.sgd.update_rule = "optax"  # "optax": lr outside the momentum buffer; "mxnet": inside it, as the official code
    c.sgd.tv_gradient = "free"  # "free": grad of TV, free border; "official": conv(x, Laplacian / 8), zero padding
    c.sgd.project = True  # clip to the pixel range after each step; False: only the saved image (official code)
    c.sgd.denoise = 0.0  # Chambolle TV denoising of the result with this weight (official 0.02; needs scikit-image)
    c.style_weight_by_kernel = ""  # with style_weight unset, a run's by its kernel: "bn:1,default:5"
    return c
