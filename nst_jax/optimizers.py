"""The optimisers of a run, built from optax.

* ``adam``: Adam on the preprocessed image, followed by projection onto the valid pixel range.
* ``lbfgs``: ``optax.lbfgs`` with its zoom line search (the loss is re-evaluated inside a step, with that step's
  random key, so the stochastic Gaussian estimator is a fixed function within one line search).
* ``sgd_paper``: the official code's optimiser (Li et al. 2017, lyttonhao/Neural-Style-MMD): momentum 0.9,
  weight decay 5e-4, learning rate 0.001 times 0.9 every 80 steps; the VGG gradient is clipped to L2 norm
  3 * H * W and a total-variation gradient is added after clipping (see :func:`paper_gradient`).

Two update rules for ``sgd_paper`` (:class:`SGDSettings` ``update_rule``):

* ``"optax"`` (the default config): ``optax.sgd`` with momentum, the learning rate outside the momentum buffer
  (v = g + 0.9 v, x -= lr_t v), decayed at steps 80, 160, ... (0-based);
* ``"mxnet"`` (``configs/paper_caffe.py``): MXNet's momentum SGD as the official code ran it, the learning rate
  inside the buffer (v = 0.9 v - lr_t (g + wd x), x += v), with ``FactorScheduler``'s timing: the scheduler
  sees the number of updates done before the current one and decays once that number exceeds 80, 160, ...,
  so the first decayed step is step 81 (0-based). The two rules agree while the learning rate is constant;
  after a decay the optax rule rescales the whole buffer at once, where MXNet's old contributions keep their
  old rate and fade as 0.9^j.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nst_jax import losses

OPTIMIZERS = ("adam", "lbfgs", "sgd_paper")
SGD_RULES = ("optax", "mxnet")
"""``SGDSettings.update_rule`` values (see the module docstring)."""
TV_GRADIENTS = ("free", "official")
"""How :func:`paper_gradient` forms its TV gradient (see :func:`tv_gradient`)."""


@dataclasses.dataclass(frozen=True)
class SGDSettings:
    """The official code's momentum SGD: learning rate ``lr`` times ``decay`` every ``decay_every`` steps,
    with ``update_rule`` ``"optax"`` or ``"mxnet"`` (see the module docstring)."""

    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay: float = 0.9
    decay_every: int = 80
    update_rule: str = "optax"


def mxnet_schedule(sgd: SGDSettings) -> optax.Schedule:
    """The learning rate of 0-based step t under MXNet's ``FactorScheduler``, as the official SGD reads it:
    lr * decay^floor(max(t - 1, 0) / decay_every), so steps 0-80 use lr, 81-160 lr * decay, and so on.

    (MXNet's SGD of the time asked the scheduler for its rate before counting the current update, and the
    scheduler decays when that count exceeds the next multiple of ``decay_every``.)"""
    def schedule(count: jax.Array) -> jax.Array:
        return sgd.lr * sgd.decay ** (jnp.maximum(count - 1, 0) // sgd.decay_every)

    return schedule


def make(name: str, settings: Any) -> optax.GradientTransformation:
    """The optax transformation for ``name``; ``settings`` is a :class:`nst_jax.transfer.StepSettings` (its
    ``lr`` for Adam, its :class:`SGDSettings` ``sgd`` for ``sgd_paper``)."""
    if name == "adam":
        return optax.adam(settings.lr)
    if name == "lbfgs":
        return optax.lbfgs()
    if name == "sgd_paper":
        sgd = settings.sgd
        rule = sgd.update_rule
        if rule == "mxnet":
            # v = momentum * v - lr_t * (g + wd * x); x += v: the rate is applied before the momentum trace.
            return optax.chain(optax.add_decayed_weights(sgd.weight_decay),
                               optax.scale_by_learning_rate(mxnet_schedule(sgd)),
                               optax.trace(decay=sgd.momentum))
        if rule != "optax":
            raise ValueError(f"unknown SGD update rule {rule!r}; expected one of {', '.join(SGD_RULES)}")
        schedule = optax.exponential_decay(
            sgd.lr, transition_steps=sgd.decay_every, decay_rate=sgd.decay, staircase=True
        )
        return optax.chain(optax.add_decayed_weights(sgd.weight_decay), optax.sgd(schedule, momentum=sgd.momentum))
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def official_tv_gradient(x: jax.Array) -> jax.Array:
    """The official code's TV gradient without its weight: conv(x, [[0,-1,0],[-1,4,-1],[0,-1,0]] / 8) on each
    channel with zero padding, i.e. (4 x - the four neighbours, 0 outside the image) / 8.

    That is 1/16 of the gradient of ``losses.total_variation(x, boundary="zero")`` (whose gradient is
    2 (4 x - neighbours)). With x in mean-subtracted units the zero outside is the mean colour.

    Args:
      x: (H, W, C) image (preprocessed).
    Returns:
      (H, W, C), in the units of x.
    """
    p = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
    neighbours = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    return (4.0 * x - neighbours) / 8.0


def tv_gradient(x: jax.Array, kind: str = "free") -> jax.Array:
    """The TV gradient :func:`paper_gradient` adds, before its weight: ``"free"``, the gradient of
    ``losses.total_variation(x)`` (free border; the default config's rule, 16 times the official one inside
    the image); ``"official"``, :func:`official_tv_gradient`. x: (H, W, C) -> (H, W, C)."""
    if kind == "free":
        return jax.grad(losses.total_variation)(x)
    if kind == "official":
        return official_tv_gradient(x)
    raise ValueError(f"unknown TV gradient {kind!r}; expected one of {', '.join(TV_GRADIENTS)}")


def paper_gradient(grad: jax.Array, x: jax.Array, clip_per_pixel: float, tv_weight: float,
                   tv: str = "free") -> jax.Array:
    """The official code's gradient: VGG gradient clipped to L2 norm ``clip_per_pixel * H * W``, plus
    ``tv_weight`` times the TV gradient ``tv`` (:func:`tv_gradient`) added after clipping.

    With ``tv="official"`` and ``tv_weight`` 0.01 this is the official code's step direction exactly: its
    clip norm is the image's element count 3 H W (``clip_per_pixel`` 3) and its TV term
    0.01 * conv(x, Laplacian / 8).

    Args:
      grad: (H, W, 3) gradient of the content and style energies.
      x: (H, W, 3) current image (preprocessed).
      clip_per_pixel: the clip norm per pixel (3: one per element of an RGB image).
      tv_weight: the TV gradient's weight.
      tv: ``"free"`` or ``"official"``.
    """
    h, w = x.shape[:2]
    max_norm = clip_per_pixel * h * w
    norm = jnp.sqrt(jnp.sum(grad**2))
    clipped = grad * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))
    return clipped + tv_weight * tv_gradient(x, tv)
