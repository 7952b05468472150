"""The style-transfer run: one image optimised so its VGG-19 features keep the content and align the style.

The only variable is the image, held in the weights' preprocessed space (see :mod:`nst_jax.image`) and kept
in the valid pixel range by projection: after every update it is clipped to the per-channel values of RGB
0 and 1. Content and style features are computed once; a step computes only the generated image's side.
Steps run ``config.chunk`` at a time inside one jit-compiled ``lax.scan``; the host is touched only between
chunks (progress, snapshots). Every step's random key is ``fold_in(key, step)``, so results do not depend on
the chunk size.

Energy (per step, x the image, F its features, P the content's, S the style's):

    content_weight * sum_l ||F_l - P_l||^2                                (content layers, the paper's alpha)
  + sum_t kernel_weight_t * style_weight * b_t * sum_l w_l * c_t(M_l, N_l) * L_t(F_l, S_l)   (style)
  + tv_weight * TV(x)

with L_t the method's loss (:mod:`nst_jax.losses`), c_t the official code's per-layer constant
(:func:`nst_jax.losses.paper_scale`) and b_t the balance factor: 1 with ``balance="none"``; with
``balance="auto"`` the factor that makes method t's style-gradient norm equal the content-gradient norm at a
fixed reference image (seeded uniform noise, where neither gradient vanishes), so ``style_weight`` is the
style/content gradient ratio whatever the weights' feature scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import color, image, losses, optimizers, strips, vgg
from nst_jax.errors import ConfigError, ImageError

BALANCES = ("auto", "none")
STYLE_RESIZES = ("keep_aspect", "match_content")
CPU_DEFAULT_SIZE = 256
ACCELERATOR_DEFAULT_SIZE = 512


# ---------------------------------------------------------------------------------------------------------
# Configuration checks and parsing (user errors -> ConfigError, one line each).


def _csv(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in _csv(text)]
    except ValueError:
        raise ConfigError(f"--{what}={text!r}: expected comma-separated numbers") from None
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"--{what}={text!r}: weights must be finite and non-negative")
    return values


def parse_terms(config: Any) -> list[losses.StyleTerm]:
    """The style terms of ``config.kernel`` (one method or a comma-separated fusion) with their weights."""
    methods = [m.lower() for m in _csv(config.kernel)]
    if not methods:
        raise ConfigError("--kernel is empty; expected one of " + "|".join(losses.METHODS) + " or a fusion")
    for m in methods:
        if m not in losses.METHODS:
            raise ConfigError(f"--kernel={config.kernel}: unknown method {m!r}; expected "
                              + "|".join(losses.METHODS) + " or a comma-separated fusion of them")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--kernel={config.kernel}: a method appears twice")
    weights = _floats(config.kernel_weights, "kernel_weights") if _csv(config.kernel_weights) else [1.0] * len(methods)
    if len(weights) != len(methods):
        raise ConfigError(f"--kernel_weights={config.kernel_weights}: {len(weights)} weight(s) for "
                          f"{len(methods)} method(s) in --kernel={config.kernel}")
    return [losses.StyleTerm(m, w, method_params(m, config)) for m, w in zip(methods, weights, strict=True)]


def method_params(method: str, config: Any) -> dict[str, Any]:
    """Keyword parameters of :func:`nst_jax.losses.style_loss` for ``method``."""
    if method == "poly":
        return {"c": float(config.poly_c), "d": int(config.poly_d)}
    if method == "gaussian":
        return {
            "gamma": None if config.gaussian_gamma is None else float(config.gaussian_gamma),
            "estimator": config.gaussian_estimator,
            "block_size": int(config.block_size),
            "num_features": int(config.rff_features),
        }
    return {}


def check_config(config: Any) -> None:
    """Raises :class:`ConfigError` for values no run can use."""
    def positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
        if value is None or not isinstance(value, int) or value < (0 if allow_zero else 1):
            raise ConfigError(f"--{name}={value}: must be an integer {'>= 0' if allow_zero else '>= 1'}")

    def finite(name: str, value: float, low: float = 0.0) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise ConfigError(f"--{name}={value}: must be a finite number >= {low:g}")

    positive_int("steps", config.steps, allow_zero=True)
    if config.size is not None:
        positive_int("size", config.size)
    if config.style_size is not None:
        positive_int("style_size", config.style_size)
    positive_int("chunk", config.chunk)
    positive_int("save_every", config.save_every, allow_zero=True)
    positive_int("log_every", config.log_every)
    positive_int("checkpoint_every", config.checkpoint_every, allow_zero=True)
    positive_int("scales", config.scales)
    if config.dtype not in vgg.DTYPES:
        raise ConfigError(f"--dtype={config.dtype}: expected one of {', '.join(vgg.DTYPES)}")
    if config.preserve_colors not in color.PRESERVE_COLORS:
        raise ConfigError(f"--preserve_colors={config.preserve_colors}: expected one of "
                          f"{', '.join(color.PRESERVE_COLORS)}")
    _floats(config.style_blend, "style_blend")  # the count is checked against the styles given (blend_weights)
    positive_int("block_size", config.block_size)
    positive_int("rff_features", config.rff_features)
    for name in ("content_weight", "style_weight", "tv_weight", "poly_c"):
        finite(name, config[name])
    finite("lr", config.lr)
    if config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be > 0")
    finite("style_scale", config.style_scale)
    if config.style_scale <= 0:
        raise ConfigError(f"--style_scale={config.style_scale}: must be > 0")
    if config.gaussian_gamma is not None:
        finite("gaussian_gamma", config.gaussian_gamma)
    if config.optimizer not in optimizers.OPTIMIZERS:
        raise ConfigError(f"--optimizer={config.optimizer}: expected one of {', '.join(optimizers.OPTIMIZERS)}")
    if config.balance not in BALANCES:
        raise ConfigError(f"--balance={config.balance}: expected one of {', '.join(BALANCES)}")
    if config.style_resize not in STYLE_RESIZES:
        raise ConfigError(f"--style_resize={config.style_resize}: expected one of {', '.join(STYLE_RESIZES)}")
    if config.pooling not in vgg.POOLINGS:
        raise ConfigError(f"--pooling={config.pooling}: expected max or avg")
    if config.gaussian_estimator not in losses.ESTIMATORS:
        raise ConfigError(f"--gaussian_estimator={config.gaussian_estimator}: expected one of "
                          f"{', '.join(losses.ESTIMATORS)}")
    if not isinstance(config.poly_d, int) or config.poly_d < 1:
        raise ConfigError(f"--poly_d={config.poly_d}: must be an integer >= 1")
    for field in ("content_layers", "style_layers"):
        names = _csv(config[field])
        try:
            vgg.check_layers(names)
        except ValueError as e:
            raise ConfigError(f"--{field}={config[field]}: {e}") from None
    layer_weights = _floats(config.layer_weights, "layer_weights")
    if len(layer_weights) != len(_csv(config.style_layers)):
        raise ConfigError(f"--layer_weights={config.layer_weights}: {len(layer_weights)} weight(s) for "
                          f"{len(_csv(config.style_layers))} style layer(s)")
    terms = parse_terms(config)
    positive_int("strips", config.strips)
    if config.strips > 1:
        head = strips.head(_csv(config.style_layers))
        for t in terms:
            if head and not losses.streamable(t.method, **t.params):
                raise ConfigError(
                    f"--strips={config.strips}: the {t.method} method ({_describe_params(t)}) needs all of "
                    f"{head[0]}'s samples at once; strips work with gram, linear, bn and poly (d=2, full or "
                    f"unbiased) at the layers up to {strips.HEAD_END}: use --strips=1 or deeper style layers")


def _describe_params(term: losses.StyleTerm) -> str:
    return ", ".join(f"{k}={v}" for k, v in term.params.items() if k != "block_size") or "no parameters"


def default_size(config: Any) -> tuple[int, str | None]:
    """The content's long edge, and a note to print when it was chosen for a CPU-only machine."""
    if config.size is not None:
        return int(config.size), None
    if jax.default_backend() == "cpu":
        return CPU_DEFAULT_SIZE, (f"no accelerator found: using --size={CPU_DEFAULT_SIZE} "
                                  f"(pass --size to choose; {ACCELERATOR_DEFAULT_SIZE} on a GPU or TPU)")
    return ACCELERATOR_DEFAULT_SIZE, None


def style_shape(content_hw: tuple[int, int], style_hw: tuple[int, int], config: Any, factor: float = 1.0
                ) -> tuple[int, int]:
    """(H, W) the style image is resized to (see ``style_resize``, ``style_size``, ``style_scale``).

    ``factor`` scales an explicit ``style_size`` (the coarse scales of a coarse-to-fine run)."""
    if config.style_resize == "match_content":
        return content_hw
    long_edge = config.style_size * factor if config.style_size is not None else max(content_hw)
    return image.resized_shape(style_hw, max(1, round(long_edge * config.style_scale)))


def blend_weights(config: Any, n_styles: int) -> tuple[float, ...]:
    """``config.style_blend`` for ``n_styles`` styles, normalised to sum 1 (empty: equal weights)."""
    if not _csv(config.style_blend):
        return tuple([1.0 / n_styles] * n_styles)
    weights = _floats(config.style_blend, "style_blend")
    if len(weights) != n_styles:
        raise ConfigError(f"--style_blend={config.style_blend}: {len(weights)} weight(s) for {n_styles} style(s)")
    if sum(weights) <= 0:
        raise ConfigError(f"--style_blend={config.style_blend}: the weights sum to 0")
    return tuple(w / sum(weights) for w in weights)


def min_side(layers: list[str]) -> int:
    """Smallest image side for which every layer has at least one position."""
    return 2 ** max(vgg.downsampling(name) for name in layers)


# ---------------------------------------------------------------------------------------------------------
# The pure parts: targets, energy, one optimisation step, a chunk of steps.


@dataclasses.dataclass(frozen=True)
class Problem:
    """Static description of a run: it parametrises the compiled functions (closed over, not traced)."""

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    layer_weights: tuple[float, ...]
    terms: tuple[losses.StyleTerm, ...]
    pooling: str
    content_weight: float
    tv_weight: float
    optimizer: str
    blend: tuple[float, ...] = (1.0,)
    remat: bool = False  # rematerialise VGG blocks in the backward pass (memory for compute)
    dtype: str = "float32"  # VGG compute dtype, "float32" or "bfloat16"; losses stay float32
    strips: int = 1  # > 1: VGG blocks 1-2 in this many horizontal strips (nst_jax.strips), for memory

    def extract(self, params: Any, images: jax.Array, layers: Sequence[str], **options: Any
                ) -> dict[str, jax.Array]:
        """:func:`nst_jax.vgg.extract` with this problem's pooling, remat and compute dtype; ``options`` are
        further keyword arguments of it (``start``, a slab's rows) or override ``remat``."""
        return vgg.extract(params, images, layers, self.pooling,
                           **{"remat": self.remat, "dtype": jnp.dtype(self.dtype), **options})

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.content_layers) | set(self.style_layers), key=vgg.LAYERS.index))


def problem_from_config(config: Any, blend: tuple[float, ...] = (1.0,)) -> Problem:
    """The :class:`Problem` a (checked) config describes, with the styles' blend weights."""
    return Problem(
        content_layers=tuple(_csv(config.content_layers)),
        style_layers=tuple(_csv(config.style_layers)),
        layer_weights=tuple(_floats(config.layer_weights, "layer_weights")),
        terms=tuple(parse_terms(config)),
        pooling=config.pooling,
        content_weight=float(config.content_weight),
        tv_weight=float(config.tv_weight),
        optimizer=config.optimizer,
        blend=tuple(blend),
        remat=bool(config.remat),
        dtype=str(config.dtype),
        strips=int(config.strips),
    )


def check_sizes(problem: Problem, images: Sequence[tuple[str, np.ndarray, str]]) -> None:
    """Raises ImageError when an image, (what, (H, W, 3), description), is too small for the deepest layer."""
    need = min_side(list(problem.layers))
    for what, rgb, desc in images:
        if min(rgb.shape[:2]) < need:
            raise ImageError(f"{what} image ({desc}) is {rgb.shape[1]}x{rgb.shape[0]} px after resizing; layer "
                             f"{problem.layers[-1]} needs at least {need} px a side (raise --size)")


def features(problem: Problem, params: Any, x: jax.Array) -> dict[str, jax.Array]:
    """(H, W, 3) preprocessed image -> {layer: (h, w, C)} at the problem's layers."""
    return {k: v[0] for k, v in problem.extract(params, x[None], problem.layers).items()}


def targets(problem: Problem, params: Any, content: jax.Array, styles: Sequence[jax.Array]) -> dict[str, Any]:
    """Content features and per-term style statistics, computed once per run.

    Several styles are blended as the mixture of their feature distributions with weights ``problem.blend``
    (:func:`nst_jax.losses.mixture_style_target`).
    """
    content_feats = problem.extract(params, content[None], problem.content_layers)
    style_feats = [problem.extract(params, s[None], problem.style_layers) for s in styles]
    style = {
        name: [
            losses.mixture_style_target(
                t.method, [losses.to_samples(f[name][0]) for f in style_feats], problem.blend, **t.params
            )
            for t in problem.terms
        ]
        for name in problem.style_layers
    }
    return {"content": {name: content_feats[name][0] for name in problem.content_layers}, "style": style}


def energy(
    problem: Problem,
    params: Any,
    tgt: Mapping[str, Any],
    scales: Mapping[str, Any],
    x: jax.Array,
    key: jax.Array,
    include_tv: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total energy at image ``x`` and its terms.

    Args:
      scales: ``{"content": scalar, "style": {(term_index, layer): scalar}}`` multipliers.
    Returns:
      (total, {"content", "style", "tv", "style:<method>" ...}), scalars.
    """
    if problem.strips > 1:
        content, samples = _strip_features(problem, params, tgt, x)
    else:
        feats = features(problem, params, x)
        content = sum(losses.content_loss(feats[name], tgt["content"][name]) for name in problem.content_layers)
        samples = {name: losses.to_samples(feats[name]) for name in problem.style_layers}
    content = scales["content"] * content
    style, per_term = losses.fused_style_loss(
        samples, tgt["style"], problem.terms, dict(zip(problem.style_layers, problem.layer_weights, strict=True)),
        key=key, scales=scales["style"],
    )
    tv = problem.tv_weight * losses.total_variation(x) if include_tv else jnp.zeros(())
    terms = {"content": content, "style": style, "tv": tv}
    if len(problem.terms) > 1:
        terms.update({f"style:{t.method}": per_term[t.method] for t in problem.terms})
    return content + style + tv, terms


def _strip_features(problem: Problem, params: Any, tgt: Mapping[str, Any], x: jax.Array
                    ) -> tuple[jax.Array, dict[str, jax.Array | losses.SampleSums]]:
    """The content loss (unweighted) and each style layer's samples or sums, blocks 1-2 in strips."""
    head_content, head_style = strips.head(problem.content_layers), strips.head(problem.style_layers)
    tail = [name for name in problem.layers if name not in strips.head(problem.layers)]
    end, content_sums, style_sums = strips.forward(
        functools.partial(problem.extract, params, remat=False), x, strips.plan(x.shape[0], problem.strips),
        {name: tgt["content"][name] for name in head_content},
        {name: (problem.terms, tgt["style"][name]) for name in head_style},
        keep_end=bool(tail),
    )
    feats = {}
    if tail:
        feats = {name: v[0] for name, v in problem.extract(params, end[None], tail, start=strips.TAIL_START).items()}
    content = sum(content_sums[name] if name in content_sums else losses.content_loss(feats[name], tgt["content"][name])
                  for name in problem.content_layers)
    samples = {name: style_sums[name] if name in style_sums else losses.to_samples(feats[name])
               for name in problem.style_layers}
    return content, samples


def paper_scales(problem: Problem, params: Any, x: jax.Array) -> dict[tuple[int, str], float]:
    """The official code's per-layer constants c_t(M_l, N_l) at the generated image's layer shapes."""
    shapes = jax.eval_shape(lambda y: features(problem, params, y), x)
    out = {}
    for name in problem.style_layers:
        h, w, n = shapes[name].shape
        for i, term in enumerate(problem.terms):
            out[(i, name)] = float(losses.paper_scale(term.method, h * w, n, **term.params))
    return out


def gradient_norms(
    problem: Problem,
    params: Any,
    tgt: Mapping[str, Any],
    base: Mapping[tuple[int, str], Any],
    x_ref: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """L2 norms of d(content energy)/dx and of each method's d(style energy)/dx at ``x_ref``.

    The style energy of method t is sum_l w_l c_t(M_l, N_l) L_t with unit style and kernel weights. One
    forward pass through VGG-19 is shared; each norm costs one backward pass. With strips the features are
    never whole, so each norm is the gradient of :func:`energy` with the other parts' multipliers at 0 (one
    forward and backward pass per norm).

    Returns:
      (1 + number of terms,) float32: [content, term 0, term 1, ...].
    """
    if problem.strips > 1:
        zero = jnp.zeros((), jnp.float32)
        parts = [(problem, tgt, {"content": jnp.ones((), jnp.float32), "style": {k: zero for k in base}})]
        for i, term in enumerate(problem.terms):
            single = dataclasses.replace(problem, terms=(term._replace(weight=1.0),))
            single_tgt = {"content": tgt["content"], "style": {n: [tgt["style"][n][i]] for n in problem.style_layers}}
            parts.append((single, single_tgt,
                          {"content": zero, "style": {(0, n): base[(i, n)] for n in problem.style_layers}}))
        grads = [jax.grad(lambda x, p=p, t=t, s=s: energy(p, params, t, s, x, key, include_tv=False)[0])(x_ref)
                 for p, t, s in parts]
        return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(g))) for g in grads])
    feats, pullback = jax.vjp(lambda x: features(problem, params, x), x_ref)
    layer_weights = dict(zip(problem.style_layers, problem.layer_weights, strict=True))

    def content_of(f):
        return sum(losses.content_loss(f[n], tgt["content"][n]) for n in problem.content_layers)

    def style_of(i):
        def fn(f):
            samples = {n: losses.to_samples(f[n]) for n in problem.style_layers}
            return losses.fused_style_loss(
                samples, {n: [tgt["style"][n][i]] for n in problem.style_layers},
                [problem.terms[i]._replace(weight=1.0)], layer_weights, key=key,
                scales={(0, n): base[(i, n)] for n in problem.style_layers},
            )[0]
        return fn

    norms = []
    for fn in [content_of, *(style_of(i) for i in range(len(problem.terms)))]:
        (g_x,) = pullback(jax.grad(fn)(feats))
        norms.append(jnp.sqrt(jnp.sum(jnp.square(g_x))))
    return jnp.stack(norms)


def balance_factors(norms: Any) -> list[float]:
    """b_t = ||grad content|| / ||grad style_t||: each method's style gradient then equals the content's."""
    norms = [float(v) for v in norms]
    return [norms[0] / max(g, 1e-30) for g in norms[1:]]


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Optimiser constants that are compiled in (hashable)."""

    steps: int
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    clip_per_pixel: float = 0.0
    sgd_tv_weight: float = 0.0
    stop_tol: float = 0.0


CPU_MAX_CHUNK = 5
"""On CPU a chunk's steps are unrolled (see :func:`make_chunk`), so compile time grows with it: the cap."""


def step_settings(config: Any, source: str) -> StepSettings:
    """The compiled-in optimiser constants of a (checked) config for weights of ``source``."""
    low, high = image.pixel_range(source)
    return StepSettings(
        steps=int(config.steps), low=tuple(map(float, low)), high=tuple(map(float, high)),
        clip_per_pixel=float(config.sgd.clip_per_pixel), sgd_tv_weight=float(config.sgd.tv_weight),
        stop_tol=float(config.sgd.stop_tol) if config.optimizer == "sgd_paper" else 0.0,
    )


def chunk_length(config: Any, every: Sequence[int] = ()) -> int:
    """Steps per dispatch: ``config.chunk``, reduced so chunks end on every multiple of each ``every``
    (snapshots, checkpoints: a resumed run then replays the same chunks), capped on CPU, at most ``steps``."""
    length = int(config.chunk)
    for n in every:
        if n:
            length = math.gcd(length, int(n))
    if jax.default_backend() == "cpu":
        # The largest divisor within the cap, so chunks still end on every snapshot and checkpoint step.
        length = max(d for d in range(1, min(length, CPU_MAX_CHUNK) + 1) if length % d == 0)
    return max(1, min(length, max(int(config.steps), 1)))


def make_chunk(problem: Problem, opt: optax.GradientTransformation, settings: StepSettings, length: int,
               unroll: bool | None = None) -> Callable[..., Any]:
    """A function running ``length`` steps from ``carry``; steps at or past ``settings.steps`` (or after an
    early stop) leave the carry unchanged and report NaN losses. Pure; jit it at the call site.

    ``unroll``: ``False``: a ``lax.scan`` whose body branches (``lax.cond``) past the last step; ``True``: the
    steps unrolled into straight-line code, steps past the last one computed and discarded (``jnp.where``);
    ``None``: unrolled on CPU only. XLA:CPU runs a loop body's convolutions far slower than the same ops
    unrolled (128 px, Gram, 2 cores: 627 ms per step in a scan, 213-251 ms unrolled, 219 ms for a bare
    value-and-grad), while on GPU and TPU the scan is as fast and compiles once whatever ``length``.

    ``carry = (x, opt_state, step, stopped)``; returns ``(carry, {term: (length,)})``.
    """
    if unroll is None:
        unroll = jax.default_backend() == "cpu"
    low = jnp.asarray(settings.low, jnp.float32)
    high = jnp.asarray(settings.high, jnp.float32)

    def chunk(carry, params, tgt, scales, base_key):
        def loss_fn(x, key):
            return energy(problem, params, tgt, scales, x, key, include_tv=problem.optimizer != "sgd_paper")

        def do_step(carry):
            x, opt_state, step, stopped = carry
            key = jax.random.fold_in(base_key, step)
            (value, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(x, key)
            if problem.optimizer == "lbfgs":
                updates, opt_state = opt.update(
                    grad, opt_state, x, value=value, grad=grad, value_fn=lambda y: loss_fn(y, key)[0]
                )
            else:
                if problem.optimizer == "sgd_paper":
                    grad = optimizers.paper_gradient(grad, x, settings.clip_per_pixel, settings.sgd_tv_weight)
                updates, opt_state = opt.update(grad, opt_state, x)
            new_x = jnp.clip(optax.apply_updates(x, updates), low, high)
            if settings.stop_tol > 0:
                change = jnp.sqrt(jnp.sum((new_x - x) ** 2)) / jnp.maximum(jnp.sqrt(jnp.sum(new_x**2)), 1e-30)
                stopped = change < settings.stop_tol
            terms = {"total": value, **terms}
            return (new_x, opt_state, step + 1, stopped), terms

        def skip(carry):
            nan = jnp.full((), jnp.nan, jnp.float32)
            return carry, {"total": nan, **{k: nan for k in term_names(problem)}}

        def body(carry, _):
            active = (carry[2] < settings.steps) & ~carry[3]
            if not unroll:
                return jax.lax.cond(active, do_step, skip, carry)
            new_carry, terms = do_step(carry)
            keep = lambda a, b: jnp.where(active, a, b)  # noqa: E731
            skipped_carry, skipped_terms = skip(carry)
            return jax.tree.map(keep, new_carry, skipped_carry), jax.tree.map(keep, terms, skipped_terms)

        return jax.lax.scan(body, carry, None, length=length, unroll=bool(unroll))

    return chunk


def term_names(problem: Problem) -> list[str]:
    names = ["content", "style", "tv"]
    if len(problem.terms) > 1:
        names += [f"style:{t.method}" for t in problem.terms]
    return names
