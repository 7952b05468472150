"""Style, content and smoothness losses as pure functions of feature sample matrices.

One VGG layer's activations of an image, (H, W, N), are M = H*W samples of an N-vector (:func:`to_samples`).
Gatys' Gram loss is 1/(4 N^2) times the squared maximum mean discrepancy (MMD) of the generated image's samples
``x`` (M, N) and the style image's samples ``y`` (M', N) under the kernel k(a, b) = (a . b)^2 (Li et al. 2017,
theorem 1), so any distance between the two sample distributions can transfer style. A method that needs the
layer's spatial layout (patches) gets the activations (H, W, N) themselves (:func:`layout`).

By concern:

* :mod:`~nst_jax.losses.stats`: samples, Gram matrices, BN moments, covariances and CORAL, the content loss,
  total variation, the pooled samples of a blend's mixture; every statistic of :mod:`~nst_jax.losses.stats`,
  :mod:`~nst_jax.losses.mmd` and :mod:`~nst_jax.losses.wasserstein` takes optional sample weights (one region of
  an image; none: uniform), so each method has one code path;
* :mod:`~nst_jax.losses.mmd`: MMD^2 under the linear, polynomial and Gaussian kernels (one or several
  bandwidths) with four estimators;
* :mod:`~nst_jax.losses.wasserstein`: sliced Wasserstein, Wasserstein-2 between fitted Gaussians;
* :mod:`~nst_jax.losses.methods`: the style methods as objects, one module per family (moments, Gaussian
  kernels, transport; every module of that package is registered), each with its parameter checks, target,
  loss, strip-wise sums, paper constant and blend rule, and their registry (:data:`METHODS`: the names);
* :mod:`~nst_jax.losses.fusion`: fusions over methods and layers, mixtures of several styles;
* :mod:`~nst_jax.losses.regions`: style losses per region (spatial control with masks);
* :mod:`~nst_jax.losses.draws`: the random permutations of the linear-time estimator, drawn once for a chunk of
  unrolled steps.

Every name below is importable from ``nst_jax.losses`` itself.
"""

from nst_jax.losses.fusion import (
    StyleTerm,
    fused_style_loss,
    fused_style_targets,
    mixture_style_target,
    sample_sums,
    term_names,
)
from nst_jax.losses.methods import (
    BN,
    CORAL,
    METHODS,
    MKMMD,
    REGISTRY,
    SWD,
    W2,
    Gaussian,
    Gram,
    Linear,
    Poly,
    SampleSums,
    StyleMethod,
    layer_loss,
    layout,
    paper_scale,
    register,
    streamable,
    style_loss,
    style_target,
)
from nst_jax.losses.methods import get as get_method
from nst_jax.losses.mmd import ESTIMATORS, KERNELS, linear_time_pairs, mmd2, mmd2_pairwise, pooled_gamma
from nst_jax.losses.regions import fused_region_loss, region_losses, region_targets
from nst_jax.losses.stats import (
    bn_loss,
    bn_stats,
    content_loss,
    coral,
    covariance,
    gram,
    gram_loss,
    mixture_samples,
    to_samples,
    total_variation,
)
from nst_jax.losses.wasserstein import psd_sqrt, sliced_wasserstein, sqrt_trace, w2_gaussian

__all__ = [
    "BN", "CORAL", "MKMMD", "SWD", "W2", "coral", "covariance", "psd_sqrt", "sliced_wasserstein", "sqrt_trace",
    "w2_gaussian", "ESTIMATORS", "KERNELS", "METHODS", "REGISTRY", "Gaussian", "Gram", "Linear", "Poly", "SampleSums",
    "StyleMethod", "StyleTerm", "bn_loss", "bn_stats", "content_loss", "fused_style_loss", "fused_style_targets",
    "get_method", "gram", "gram_loss", "layer_loss", "layout", "linear_time_pairs", "mixture_samples",
    "mixture_style_target", "mmd2", "mmd2_pairwise", "paper_scale", "pooled_gamma", "register", "sample_sums",
    "streamable", "style_loss", "style_target", "term_names", "to_samples", "total_variation", "fused_region_loss",
    "region_losses", "region_targets",
]
