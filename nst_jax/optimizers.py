"""The optimisers of a run, built from optax.

* ``adam``: Adam on the preprocessed image, followed by projection onto the valid pixel range.
* ``lbfgs``: ``optax.lbfgs`` with its zoom line search (the loss is re-evaluated inside a step, with that step's
  random key, so the stochastic Gaussian estimator is a fixed function within one line search).
* ``sgd_paper``: the official code's optimiser (Li et al. 2017, lyttonhao/Neural-Style-MMD): momentum 0.9,
  weight decay 5e-4, learning rate 0.001 times 0.9 every 80 steps; the VGG gradient is clipped to L2 norm
  3 * H * W and a total-variation gradient is added after clipping (see :func:`paper_gradient`).

MXNet's momentum SGD applies the learning rate inside the momentum buffer, optax's ``sgd`` outside it; the two
agree while the learning rate is constant and differ only in the step after each x0.9 decay.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nst_jax import losses

OPTIMIZERS = ("adam", "lbfgs", "sgd_paper")


@dataclasses.dataclass(frozen=True)
class SGDSettings:
    """The official code's momentum SGD: learning rate ``lr`` times ``decay`` every ``decay_every`` steps."""

    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay: float = 0.9
    decay_every: int = 80


def make(name: str, settings: Any) -> optax.GradientTransformation:
    """The optax transformation for ``name``; ``settings`` has ``lr`` (Adam) and ``sgd`` (an
    :class:`SGDSettings` or a config with its fields), e.g. :class:`nst_jax.transfer.StepSettings`."""
    config = settings
    if name == "adam":
        return optax.adam(config.lr)
    if name == "lbfgs":
        return optax.lbfgs()
    if name == "sgd_paper":
        sgd = config.sgd
        schedule = optax.exponential_decay(
            sgd.lr, transition_steps=sgd.decay_every, decay_rate=sgd.decay, staircase=True
        )
        return optax.chain(optax.add_decayed_weights(sgd.weight_decay), optax.sgd(schedule, momentum=sgd.momentum))
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def paper_gradient(grad: jax.Array, x: jax.Array, clip_per_pixel: float, tv_weight: float) -> jax.Array:
    """The official code's gradient: VGG gradient clipped to L2 norm ``clip_per_pixel * H * W``, plus the
    gradient of ``tv_weight * total_variation(x)`` added after clipping.

    Args:
      grad: (H, W, 3) gradient of the content and style energies.
      x: (H, W, 3) current image (preprocessed).
    """
    h, w = x.shape[:2]
    max_norm = clip_per_pixel * h * w
    norm = jnp.sqrt(jnp.sum(grad**2))
    clipped = grad * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))
    return clipped + tv_weight * jax.grad(losses.total_variation)(x)
