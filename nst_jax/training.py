"""Training the feed-forward networks as pure functions: the static problem, the state, :func:`init` and
:func:`train_step`.

The loss of a batch is the mean over its images of (per image, ``out`` the network's output)::

    content_weight * sum_l ||F_l(out) - P_l||^2 / n_c
  + style_weight * sum_t kernel_weight_t * sum_l w_l * L_t(F_l(out), S_l) / n_{t,l}     (any style method/fusion)
  + tv_weight * TV(out) / (H W)

with F the VGG-19 features (:mod:`nst_jax.vgg`) and L_t the style method's loss through the same code as the
iterative runs (:func:`nst_jax.losses.fused_style_targets`, :func:`nst_jax.losses.fused_style_loss`). The content
target P is the content image's features (johnson) or the AdaIN output t at relu4_1 (adain, Huang & Belongie's
eq. 8); the style target S is the one style image's (johnson) or each image's own style crop's (adain: the
target and the loss are ``vmap``-ped over the batch). The normalisers n are fixed at :func:`init` from the first
batch: n_{t,l} is method t's distance at layer l of the content photos themselves to the style, and n_c the
content loss of the untrained network's output, so that every term starts near 1 whatever the scale of the VGG
weights' features (random weights differ from pretrained ones by orders of magnitude) and ``style_weight`` reads
as "how much of a photo's distance to the style to remove per unit of content".

Names a benchmark imports: :class:`TrainProblem`, :class:`TrainState`, :func:`init`, :func:`train_step` (pure;
jit it at the call site with ``static_argnums=0``), :func:`batch_loss`; the networks are
:class:`nst_jax.nets.johnson.TransformerNet` and :class:`nst_jax.nets.adain.Decoder`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nst_jax import image, losses, vgg
from nst_jax.nets import adain, johnson

NORM_FLOOR = 1e-12  # a normaliser below this (a degenerate reference) is raised to it


@dataclasses.dataclass(frozen=True)
class TrainProblem:
    """What a training run computes: hashable, a static argument of the compiled step.

    ``content_layers`` is ignored by adain (its content loss is at relu4_1 against the AdaIN output t).
    """

    net: str  # "johnson" or "adain"
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    layer_weights: tuple[float, ...]
    terms: tuple[losses.StyleTerm, ...]
    source: str = "torchvision"  # the VGG weights' preprocessing
    pooling: str = "max"
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    lr: float = 1e-3
    johnson_channels: tuple[int, int, int] = (32, 64, 128)
    johnson_residual_blocks: int = 5

    @property
    def loss_content_layers(self) -> tuple[str, ...]:
        return (adain.ADAIN_LAYER,) if self.net == "adain" else self.content_layers

    @property
    def layers(self) -> tuple[str, ...]:
        """Every VGG layer the loss reads, in forward order."""
        return tuple(sorted(set(self.loss_content_layers) | set(self.style_layers), key=vgg.LAYERS.index))

    @property
    def johnson_net(self) -> johnson.TransformerNet:
        return johnson.TransformerNet(channels=self.johnson_channels, residual_blocks=self.johnson_residual_blocks)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam (Kingma & Ba), as both papers."""
        return optax.adam(self.lr)

    def scale_keys(self) -> list[str]:
        """The style normalisers' names, ``"<term index>/<layer>"``."""
        return [f"{ti}/{layer}" for ti in range(len(self.terms)) for layer in self.style_layers]


class TrainState(NamedTuple):
    """Everything a step changes or reads that a checkpoint holds.

    params: the network's parameters (johnson: the TransformerNet; adain: the decoder).
    opt_state: Adam's state. step: int32 scalar, steps done. key: uint32 (2,) raw PRNG key of the stochastic
    estimators (each step uses ``fold_in(key, step)``). norms: {"content": scalar, "style": {"<t>/<layer>":
    scalar}} fixed at :func:`init`.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    norms: dict[str, Any]


def features(problem: TrainProblem, vgg_params: Any, rgb: jax.Array, layers: tuple[str, ...]
             ) -> dict[str, jax.Array]:
    """{layer: (B, h, w, C)} of (B, H, W, 3) RGB in [0, 1]."""
    return vgg.extract(vgg_params, image.preprocess(rgb, problem.source), layers, problem.pooling)


def style_targets(problem: TrainProblem, vgg_params: Any, style_rgb: jax.Array) -> dict[str, list[Any]]:
    """The style target of one (H, W, 3) style image: {layer: [target per term]}
    (:func:`nst_jax.losses.fused_style_targets`)."""
    feats = features(problem, vgg_params, style_rgb[None], problem.style_layers)
    return losses.fused_style_targets({k: v[0] for k, v in feats.items()}, problem.terms)


def generate(problem: TrainProblem, params: Any, vgg_params: Any, batch: Mapping[str, jax.Array]
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The network's output (B, H, W, 3) for the batch and the content targets {layer: (B, h, w, C)}."""
    content = batch["content"]
    if problem.net == "johnson":
        out = johnson.stylize(params, content, problem.johnson_net)
        return out, features(problem, vgg_params, content, problem.loss_content_layers)
    f_c = features(problem, vgg_params, content, (adain.ADAIN_LAYER,))[adain.ADAIN_LAYER]
    f_s = features(problem, vgg_params, batch["style"], (adain.ADAIN_LAYER,))[adain.ADAIN_LAYER]
    t = adain.adain(f_c, f_s)
    return adain.decode(params, t), {adain.ADAIN_LAYER: t}


def _image_loss(problem: TrainProblem, norms: Mapping[str, Any], feats: Mapping[str, jax.Array],
                content_tgt: Mapping[str, jax.Array], style_tgt: Mapping[str, Any], out: jax.Array, key: jax.Array
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One image's weighted loss terms (features (h, w, C), out (H, W, 3))."""
    content = sum(losses.content_loss(feats[name], content_tgt[name]) for name in problem.loss_content_layers)
    scales = {(ti, layer): 1.0 / norms["style"][f"{ti}/{layer}"]
              for ti in range(len(problem.terms)) for layer in problem.style_layers}
    style, per_term = losses.fused_style_loss(
        {name: feats[name] for name in problem.style_layers}, style_tgt, problem.terms,
        dict(zip(problem.style_layers, problem.layer_weights, strict=True)), key=key, scales=scales)
    terms = {"content": problem.content_weight * content / norms["content"],
             "style": problem.style_weight * style,
             "tv": problem.tv_weight * losses.total_variation(out) / (out.shape[0] * out.shape[1])}
    if len(problem.terms) > 1:
        terms.update({f"style:{n}": problem.style_weight * v for n, v in per_term.items()})
    return terms["content"] + terms["style"] + terms["tv"], terms


def _style_targets_of(problem: TrainProblem, vgg_params: Any, batch: Mapping[str, jax.Array],
                      fixed: Any) -> tuple[Any, Any]:
    """(targets, vmap axis): johnson's one fixed target (axis None), or adain's per image of ``batch["style"]``
    (axis 0, the target built per image under vmap)."""
    if problem.net == "johnson":
        return fixed, None
    feats = features(problem, vgg_params, batch["style"], problem.style_layers)
    return jax.vmap(lambda f: losses.fused_style_targets(f, problem.terms))(feats), 0  # feats: (B, h, w, C)


def batch_loss(problem: TrainProblem, params: Any, vgg_params: Any, norms: Mapping[str, Any],
               batch: Mapping[str, jax.Array], key: jax.Array, style_target: Any = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's mean loss and mean terms ({"total", "content", "style", "tv", "style:<method>" ...}).

    Args:
      batch: {"content": (B, H, W, 3)} RGB in [0, 1], and for adain {"style": (B, H, W, 3)}.
      key: this step's key; image b's is ``fold_in(key, b)`` (b its index in the global batch).
      style_target: johnson's :func:`style_targets`; None for adain.
    """
    out, content_tgt = generate(problem, params, vgg_params, batch)
    feats = features(problem, vgg_params, out, problem.layers)
    style_tgt, axis = _style_targets_of(problem, vgg_params, batch, style_target)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(out.shape[0]))
    totals, terms = jax.vmap(lambda f, c, s, o, k: _image_loss(problem, norms, f, c, s, o, k),
                             in_axes=(0, 0, axis, 0, 0))(feats, content_tgt, style_tgt, out, keys)
    terms = {k: jnp.mean(v) for k, v in terms.items()}
    total = jnp.mean(totals)
    return total, {"total": total, **terms}


def reference_norms(problem: TrainProblem, params: Any, vgg_params: Any, batch: Mapping[str, jax.Array],
                    key: jax.Array, style_target: Any = None) -> dict[str, Any]:
    """The normalisers of the loss (see the module's docstring) from one batch and the untrained ``params``."""
    out, content_tgt = generate(problem, params, vgg_params, batch)
    out_feats = features(problem, vgg_params, out, problem.loss_content_layers)
    content = jnp.mean(jax.vmap(lambda f, c: sum(losses.content_loss(f[n], c[n]) for n in f))(out_feats, content_tgt))
    photo = features(problem, vgg_params, batch["content"], problem.style_layers)
    style_tgt, axis = _style_targets_of(problem, vgg_params, batch, style_target)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(out.shape[0]))

    def per_image(f: Mapping[str, jax.Array], s: Any, k: jax.Array) -> dict[str, jax.Array]:
        values = {}
        for li, layer in enumerate(problem.style_layers):
            for ti, term in enumerate(problem.terms):
                if not term.method.runs_at(layer):  # no loss there (e.g. mrf's layers): a neutral normaliser
                    values[f"{ti}/{layer}"] = jnp.ones(())
                    continue
                tk = jax.random.fold_in(jax.random.fold_in(k, li), ti)
                values[f"{ti}/{layer}"] = losses.layer_loss(term.method, f[layer], s[layer][ti], key=tk)
        return values

    style = jax.vmap(per_image, in_axes=(0, axis, 0))(photo, style_tgt, keys)
    floor = lambda v: jnp.maximum(jnp.abs(jnp.mean(v)), NORM_FLOOR)  # noqa: E731
    return {"content": floor(content), "style": {k: floor(v) for k, v in style.items()}}


def init_params(problem: TrainProblem, key: jax.Array) -> Any:
    """Freshly initialised parameters of the network trained (johnson's TransformerNet or adain's decoder)."""
    if problem.net == "johnson":
        return johnson.init_params(key, problem.johnson_net)
    return adain.init_params(key)


def init(problem: TrainProblem, seed: int, vgg_params: Any, batch: Mapping[str, jax.Array],
         style_target: Any = None) -> TrainState:
    """The state before the first step: parameters from ``seed``, Adam's zero moments, the normalisers from
    ``batch`` (the first one the run draws)."""
    key = jax.random.PRNGKey(seed)
    params = init_params(problem, jax.random.fold_in(key, 0))
    norms = reference_norms(problem, params, vgg_params, batch, jax.random.fold_in(key, 1), style_target)
    return TrainState(params=params, opt_state=problem.optimizer().init(params), step=jnp.zeros((), jnp.int32),
                      key=jax.random.fold_in(key, 2), norms=norms)


def train_step(problem: TrainProblem, vgg_params: Any, style_target: Any, state: TrainState,
               batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on the batch's mean loss (:func:`batch_loss`). Pure: jit it with ``static_argnums=0``; with the
    batch sharded over a mesh and everything else replicated, the partitioner splits the work by images and
    averages the gradients (the mean over the global batch).

    Returns:
      (the next state, {"total", "content", "style", "tv", ...} of this step's batch, before the update).
    """
    key = jax.random.fold_in(state.key, state.step)
    grad_fn = jax.value_and_grad(
        lambda p: batch_loss(problem, p, vgg_params, state.norms, batch, key, style_target), has_aux=True)
    (_, terms), grads = grad_fn(state.params)
    updates, opt_state = problem.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), terms


def apply(problem: TrainProblem, params: Any, vgg_params: Any, content: jax.Array, style: jax.Array | None = None
          ) -> jax.Array:
    """The network's output (B, H, W, 3), any H and W (padded and cropped), clipped to [0, 1]: what the held-out
    samples and the tests look at. adain takes one ``style`` (B, H', W', 3) per content image."""
    if problem.net == "johnson":
        out = johnson.stylize(params, content, problem.johnson_net)
    else:
        out = adain.stylize(params, vgg_params, content, [style], (1.0,), 1.0, source=problem.source,
                            pooling=problem.pooling)
    return jnp.clip(out, 0.0, 1.0)


def style_distance(problem: TrainProblem, vgg_params: Any, images: jax.Array, style_target: Any,
                   key: jax.Array | None = None) -> jax.Array:
    """The problem's style loss (its terms and layer weights, no normalisers) of each of (B, H, W, 3) images to a
    :func:`style_targets`: (B,). What the tests and the demonstration compare before and after training."""
    feats = features(problem, vgg_params, images, problem.style_layers)
    key = jax.random.PRNGKey(0) if key is None else key
    weights = dict(zip(problem.style_layers, problem.layer_weights, strict=True))

    def one(f: Mapping[str, jax.Array]) -> jax.Array:
        return losses.fused_style_loss(dict(f), style_target, problem.terms,
                                       weights, key=key)[0]

    return jax.vmap(one)(feats)
