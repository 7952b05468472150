"""The style-transfer optimisation as pure functions: targets, energy, balance norms and a chunk of steps.

The only variable is the image, held in the weights' preprocessed space (see :mod:`nst_jax.image`) and kept
in the valid pixel range by projection: after every update it is clipped to the per-channel values of RGB
0 and 1 (unless ``StepSettings.project`` is False, as in the official code, which never clips while
optimising). Content and style features are computed once; a step computes only the generated image's side.
A chunk of steps is one compiled function (:func:`chunk`); the host is touched only between chunks. Every
step's random key is ``fold_in(key, step)``, so results do not depend on the chunk size.

Energy (per step, x the image, F its features, P the content's, S the style's):

    content_weight * sum_l ||F_l - P_l||^2                                (content layers, the paper's alpha)
  + sum_t kernel_weight_t * style_weight * b_t * sum_l w_l * c_t(M_l, N_l) * L_t(F_l, S_l)   (style)
  + tv_weight * TV(x)
  + temporal_weight * (1/D) sum_i c_i (x_i - w_i)^2                     (videos only, see temporal_loss)

with L_t the method's loss and c_t the official code's per-layer constant (both from the method object, see
:mod:`nst_jax.losses.methods`) and b_t the balance factor: 1 with ``balance="none"``; with ``balance="auto"``
the factor that makes method t's style-gradient norm equal the content-gradient norm at a fixed reference
image (seeded uniform noise, where neither gradient vanishes), so ``style_weight`` is the style/content
gradient ratio whatever the weights' feature scale.

:class:`Problem` and :class:`StepSettings` are hashable: the compiled functions take them as static arguments
(``jax.jit(..., static_argnames=...)`` at the call site, :mod:`nst_jax.job`), so jit's own cache keys them.
Reading a run config into them is :mod:`nst_jax.config`'s work; nothing here reads files or images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nst_jax import losses, optimizers, strips, vgg
from nst_jax.losses import draws


@dataclasses.dataclass(frozen=True)
class Problem:
    """Static description of a run: hashable, a static argument of the compiled functions (never traced)."""

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
    shard_rows: int = 0  # > 1: the image's rows are sharded over this many devices (nst_jax.shard)
    # Spatial control (nst_jax.masks): the colours of the content regions with a style loss; () is no masks.
    regions: tuple[str, ...] = ()
    # > 0: the temporal term (Ruder et al. 2016) with this multiplier; its target is ``tgt["temporal"]``.
    temporal_weight: float = 0.0

    def extract(self, params: Any, images: jax.Array, layers: Sequence[str], **options: Any
                ) -> dict[str, jax.Array]:
        """:func:`nst_jax.vgg.extract` with this problem's pooling, remat and compute dtype; ``options`` are
        further keyword arguments of it (``start``, a slab's rows) or override ``remat``."""
        return vgg.extract(params, images, layers, self.pooling,
                           **{"remat": self.remat, "dtype": jnp.dtype(self.dtype), **options})

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.content_layers) | set(self.style_layers), key=vgg.LAYERS.index))


def features(problem: Problem, params: Any, x: jax.Array) -> dict[str, jax.Array]:
    """(H, W, 3) preprocessed image -> {layer: (h, w, C)} at the problem's layers.

    With ``shard_rows`` > 1 the network runs on the image padded with zero rows to :func:`aligned_rows`, the
    padding set to 0 after every layer (``image_rows``, as :mod:`nst_jax.strips` does), and each activation is
    cut back to the image's rows: the same values, but every device's share of rows stays whole at every
    pooling, so the SPMD partitioner splits every convolution by rows (a 35-row image over 8 devices would
    otherwise leave blocks 2-5 replicated on every device)."""
    if problem.shard_rows > 1:
        rows = x.shape[0]
        x = jnp.pad(x, ((0, aligned_rows(problem, rows) - rows), (0, 0), (0, 0)))
        feats = problem.extract(params, x[None], problem.layers, image_rows=rows)
        return {k: v[0, : rows >> vgg.level(k)] for k, v in feats.items()}
    return {k: v[0] for k, v in problem.extract(params, x[None], problem.layers).items()}


def aligned_rows(problem: Problem, rows: int) -> int:
    """``rows`` rounded up to a multiple of ``shard_rows * 2**p``, p the poolings up to the problem's deepest
    layer: the padded image's rows split into equal shares that stay whole down to that layer."""
    unit = max(problem.shard_rows, 1) * 2 ** max(vgg.level(name) for name in problem.layers)
    return -(-rows // unit) * unit


def targets(problem: Problem, params: Any, content: jax.Array, styles: Sequence[jax.Array],
            masks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Content features and per-term style statistics, computed once per run.

    Several styles are blended as the mixture of their feature distributions with weights ``problem.blend``
    (:func:`nst_jax.losses.mixture_style_target`). With ``problem.regions`` (spatial control), ``masks`` is
    :meth:`nst_jax.masks.RunMasks.arrays`: each style target is stacked per region
    (:func:`nst_jax.losses.region_targets`, the blend is in the masks' style weights) and the content regions'
    weights are kept as ``"regions"``.
    """
    content_feats = problem.extract(params, content[None], problem.content_layers)
    style_feats = [problem.extract(params, s[None], problem.style_layers) for s in styles]
    if problem.regions:
        style = {
            name: [losses.region_targets(t.method, [f[name][0] for f in style_feats], masks["style"][name])
                   if t.method.runs_at(name) else {} for t in problem.terms]
            for name in problem.style_layers
        }
        return {"content": {name: content_feats[name][0] for name in problem.content_layers}, "style": style,
                "regions": dict(masks["content"])}
    style = {
        name: [
            losses.mixture_style_target(t.method, [f[name][0] for f in style_feats], problem.blend)
            if t.method.runs_at(name) else {}
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
        samples = {name: feats[name] for name in problem.style_layers}  # each method takes its form (layout)
    content = scales["content"] * content
    style, parts = style_energy(problem, tgt, samples, key, scales["style"])
    tv = problem.tv_weight * losses.total_variation(x) if include_tv else jnp.zeros(())
    total, terms = content + style + tv, {"content": content, "style": style, "tv": tv, **parts}
    if problem.temporal_weight:  # a video frame (nst_jax.clip)
        terms["temporal"] = problem.temporal_weight * temporal_loss(x, tgt["temporal"]["warped"],
                                                                    tgt["temporal"]["weight"])
        total = total + terms["temporal"]
    return total, terms


def style_energy(problem: Problem, tgt: Mapping[str, Any], samples: Mapping[str, Any], key: jax.Array | None,
                 scales: Mapping[tuple[int, str], Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The style energy of the layers' ``samples`` (or their sums) and its named parts: ``style:<method>`` per
    term of a fusion, ``style@<colour>`` per region of a masked problem (:func:`nst_jax.losses.fused_region_loss`).

    ``scales``: {(term_index, layer): multiplier}. Returns (scalar, {name: scalar})."""
    layer_weights = dict(zip(problem.style_layers, problem.layer_weights, strict=True))
    if problem.regions:
        style, per_term, per_region = losses.fused_region_loss(
            samples, tgt["style"], problem.terms, layer_weights, tgt["regions"], key=key, scales=scales)
        regions = {f"style@{name}": per_region[r] for r, name in enumerate(problem.regions)}
    else:
        style, per_term = losses.fused_style_loss(samples, tgt["style"], problem.terms, layer_weights, key=key,
                                                  scales=scales)
        regions = {}
    fused = {f"style:{name}": per_term[name] for name in losses.term_names(problem.terms)} if len(problem.terms) > 1 \
        else {}
    return style, {**fused, **regions}


def temporal_loss(x: jax.Array, warped: jax.Array, weight: jax.Array) -> jax.Array:
    """The short-term temporal loss of Ruder, Dosovitskiy and Brox 2016: (1/D) sum_i c_i (x_i - w_i)^2, D = H * W * 3.

    Args:
      x: (H, W, 3) the image being optimised (preprocessed).
      warped: (H, W, 3) the previous stylised frame warped into this one by the optical flow (preprocessed).
      weight: (H, W) per-pixel c in [0, 1]: 0 at disocclusions and motion boundaries, 1 where the flow holds.
    Returns:
      scalar float32.
    """
    return jnp.mean(weight[..., None] * jnp.square(x - warped))


def single_term(problem: Problem, tgt: Mapping[str, Any], i: int) -> tuple[Problem, dict[str, Any]]:
    """The problem with its style term ``i`` alone at weight 1, and the targets of that term."""
    term = dataclasses.replace(problem.terms[i], weight=1.0)
    single_tgt = {**tgt, "style": {n: [tgt["style"][n][i]] for n in problem.style_layers}}
    return dataclasses.replace(problem, terms=(term,)), single_tgt


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
        region_weights={name: tgt["regions"][name] for name in head_style} if problem.regions else None,
    )
    feats = {}
    if tail:
        feats = {name: v[0] for name, v in problem.extract(params, end[None], tail, start=strips.TAIL_START).items()}
    content = sum(content_sums[name] if name in content_sums else losses.content_loss(feats[name], tgt["content"][name])
                  for name in problem.content_layers)
    samples = {name: style_sums[name] if name in style_sums else feats[name]
               for name in problem.style_layers}
    return content, samples


def paper_scales(problem: Problem, params: Any, x: jax.Array) -> dict[tuple[int, str], float]:
    """The official code's per-layer constants c_t(M_l, N_l) at the generated image's layer shapes."""
    shapes = jax.eval_shape(lambda y: features(problem, params, y), x)
    out = {}
    for name in problem.style_layers:
        h, w, n = shapes[name].shape
        for i, term in enumerate(problem.terms):
            out[(i, name)] = float(losses.paper_scale(term.method, h * w, n))
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
    singles = [single_term(problem, tgt, i) for i in range(len(problem.terms))]
    if problem.strips > 1:
        zero = jnp.zeros((), jnp.float32)
        parts = [(problem, tgt, {"content": jnp.ones((), jnp.float32), "style": {k: zero for k in base}})]
        parts += [(single, single_tgt, {"content": zero, "style": {(0, n): base[(i, n)] for n in problem.style_layers}})
                  for i, (single, single_tgt) in enumerate(singles)]
        grads = [jax.grad(lambda x, p=p, t=t, s=s: energy(p, params, t, s, x, key, include_tv=False)[0])(x_ref)
                 for p, t, s in parts]
        return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(g))) for g in grads])
    feats, pullback = jax.vjp(lambda x: features(problem, params, x), x_ref)

    def content_of(f):
        return sum(losses.content_loss(f[n], tgt["content"][n]) for n in problem.content_layers)

    def style_of(i):
        def fn(f):
            samples = {n: f[n] for n in problem.style_layers}  # each method takes its form (layout)
            single, single_tgt = singles[i]
            multipliers = {(0, n): base[(i, n)] for n in problem.style_layers}
            return style_energy(single, single_tgt, samples, key, multipliers)[0]
        return fn

    norms = []
    for fn in [content_of, *(style_of(i) for i in range(len(problem.terms)))]:
        (g_x,) = pullback(jax.grad(fn)(feats))
        norms.append(jnp.sqrt(jnp.sum(jnp.square(g_x))))
    return jnp.stack(norms)


def balance_factors(norms: Any) -> list[float]:
    """b_t = ||grad content|| / ||grad style_t||: each method's style gradient then equals the content's.

    In float64 on the host (Python floats), so the multipliers built from them round once, to float32."""
    norms = [float(v) for v in norms]
    return [norms[0] / max(g, 1e-30) for g in norms[1:]]


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Everything compiled into a step besides the :class:`Problem` (hashable).

    Attributes:
      steps: the run's step count (the driver's; the compiled chunk reads it from :attr:`LoopState.end`, so a
        program does not depend on it and runs of other lengths share it).
      low, high: the valid range of each preprocessed channel (RGB 0 and 1), the projection after each update.
      lr: Adam's learning rate.
      sgd: the paper's SGD settings (used with ``optimizer="sgd_paper"``).
      clip_per_pixel, sgd_tv_weight: the paper's gradient clipping and added TV gradient (``sgd_paper``).
      sgd_tv: that TV gradient's form, ``"free"`` or ``"official"`` (:func:`nst_jax.optimizers.tv_gradient`).
      stop_tol: early stop when the image's relative change falls below it (0: never).
      project: clip the image to [low, high] after every update; False: never while optimising (the official
        code, which clips only the saved image; :func:`nst_jax.image.to_rgb` does that here).
    """

    steps: int
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    lr: float = 0.05
    sgd: optimizers.SGDSettings = optimizers.SGDSettings()
    clip_per_pixel: float = 0.0
    sgd_tv_weight: float = 0.0
    stop_tol: float = 0.0
    sgd_tv: str = "free"
    project: bool = True


class LoopState(NamedTuple):
    """What one step carries to the next: the image, the optimiser state, the step count, the early stop, and
    the run's step count ``end`` (steps at or past it leave the state unchanged): an argument of the compiled
    chunk rather than a constant in it, so runs that differ only in ``--steps`` share their programs."""

    x: jax.Array
    opt_state: Any
    step: jax.Array
    stopped: jax.Array
    end: jax.Array


def init_state(problem: Problem, settings: StepSettings, x0: jax.Array) -> LoopState:
    """The state before step 0 (copies: an optimiser state may alias x0, and the state is donated)."""
    opt = optimizers.make(problem.optimizer, settings)
    return LoopState(x0, jax.tree.map(jnp.copy, opt.init(x0)), jnp.int32(0), jnp.bool_(False),
                     jnp.int32(settings.steps))


def chunk(problem: Problem, settings: StepSettings, length: int, state: LoopState, params: Any,
          tgt: Mapping[str, Any], scales: Mapping[str, Any], base_key: jax.Array,
          unroll: bool | None = None, report: bool = False) -> tuple[Any, ...]:
    """Runs ``length`` steps from ``state``; steps at or past ``state.end`` (or after an early stop) leave
    the state unchanged and report NaN losses. Pure; jit it at the call site with the first three arguments
    static (and ``unroll``, ``report``).

    ``unroll``: ``False``: a ``lax.scan`` whose body branches (``lax.cond``) past the last step; ``True``: the
    steps unrolled into straight-line code, steps past the last one computed and discarded (``jnp.where``);
    ``None``: unrolled on CPU only, where XLA runs a loop body's convolutions far slower than the same ops
    unrolled (docs/performance.md; ``benchmarks/loop_and_load.py`` measures it), while on GPU and TPU the scan
    is as fast and compiles once whatever ``length``.

    Unrolled, the steps' random permutations are drawn in one loop ahead of them (:mod:`nst_jax.losses.draws`):
    the same draws as each step's own, compiled once instead of once per step.

    Returns:
      (the new state, {term: (length,) float32} the energy terms before each step, NaN for skipped steps);
      with ``report``, also {"total", term...: scalar}: the energy terms at the image the chunk ends on, with
      that step's key (what a progress report shows for it; one forward pass more).
    """
    if unroll is None:
        unroll = jax.default_backend() == "cpu"
    opt = optimizers.make(problem.optimizer, settings)
    low = jnp.asarray(settings.low, jnp.float32)
    high = jnp.asarray(settings.high, jnp.float32)

    def loss_fn(x, key, drawn, include_tv=problem.optimizer != "sgd_paper"):
        with draws.replaying(drawn):
            return energy(problem, params, tgt, scales, x, key, include_tv=include_tv)

    def step_draws(step: jax.Array) -> list[jax.Array]:
        # The step's energy, traced only to record its draws: nothing else of it is returned, so XLA drops
        # the rest (the forward pass) from the loop.
        with draws.recording() as drawn:
            loss_fn(state.x, jax.random.fold_in(base_key, step), None)
        return drawn

    def do_step(s: LoopState, drawn: list[jax.Array] | None) -> tuple[LoopState, dict[str, jax.Array]]:
        key = jax.random.fold_in(base_key, s.step)
        (value, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(s.x, key, drawn)
        if problem.optimizer == "lbfgs":
            updates, opt_state = opt.update(
                grad, s.opt_state, s.x, value=value, grad=grad, value_fn=lambda y: loss_fn(y, key, drawn)[0]
            )
        else:
            if problem.optimizer == "sgd_paper":
                grad = optimizers.paper_gradient(grad, s.x, settings.clip_per_pixel, settings.sgd_tv_weight,
                                                 settings.sgd_tv)
            updates, opt_state = opt.update(grad, s.opt_state, s.x)
        new_x = optax.apply_updates(s.x, updates)
        if settings.project:
            new_x = jnp.clip(new_x, low, high)
        stopped = s.stopped
        if settings.stop_tol > 0:
            change = jnp.sqrt(jnp.sum((new_x - s.x) ** 2)) / jnp.maximum(jnp.sqrt(jnp.sum(new_x**2)), 1e-30)
            stopped = change < settings.stop_tol
        return LoopState(new_x, opt_state, s.step + 1, stopped, s.end), {"total": value, **terms}

    def skip(s: LoopState) -> tuple[LoopState, dict[str, jax.Array]]:
        nan = jnp.full((), jnp.nan, jnp.float32)
        return s, {"total": nan, **{k: nan for k in term_names(problem)}}

    def body(s: LoopState, drawn: list[jax.Array] | None):
        active = (s.step < s.end) & ~s.stopped
        if not unroll:
            return jax.lax.cond(active, lambda s: do_step(s, None), skip, s)
        new_state, terms = do_step(s, drawn)
        keep = lambda a, b: jnp.where(active, a, b)  # noqa: E731
        skipped_state, skipped_terms = skip(s)
        return jax.tree.map(keep, new_state, skipped_state), jax.tree.map(keep, terms, skipped_terms)

    # Row i of the table is step state.step + i's draws (a step past the last is computed with its row and
    # discarded); row ``length`` is the report's when every step ran.
    table = None
    if unroll and any(term.method.needs_key for term in problem.terms):
        rows = length + 1 if report else length
        table = jax.lax.map(step_draws, state.step + jnp.arange(rows, dtype=state.step.dtype)) or None
    start = state.step
    state, terms = jax.lax.scan(body, state, None if table is None else [t[:length] for t in table],
                                length=length, unroll=bool(unroll))
    if not report:
        return state, terms
    drawn = None if table is None else [t[state.step - start] for t in table]
    value, now = loss_fn(state.x, jax.random.fold_in(base_key, state.step), drawn, include_tv=True)
    return state, terms, {"total": value, **now}


def term_names(problem: Problem) -> list[str]:
    """The energy terms a step reports besides ``total``: content, style, tv, per method of a fusion, per region,
    and the temporal term of a video frame."""
    names = ["content", "style", "tv"]
    if len(problem.terms) > 1:
        names += [f"style:{name}" for name in losses.term_names(problem.terms)]
    names += [f"style@{name}" for name in problem.regions]
    if problem.temporal_weight:
        names.append("temporal")
    return names


# ---------------------------------------------------------------------------------------------------------
# A stack of jobs (batch mode): each job computed on its own, one after another, never vmapped. Stacking jobs
# into one computation (vmap) changes the order of the float operations (batched convolutions and reductions),
# and Adam amplifies the last-bit differences into visible ones over a few dozen steps; computing each job with
# the single run's own function keeps a batch job equal to its single run bit for bit.


def each_job(fn: Callable[..., Any], in_axes: Sequence[int | None], unroll: bool | None = None
             ) -> Callable[..., Any]:
    """``fn`` applied to each job of a stack in turn: arguments with ``in_axes`` 0 have a leading job axis,
    those with ``None`` are shared; every output gets the job axis.

    Unlike ``jax.vmap(fn, in_axes)``, each job runs ``fn``'s own computation (a stack of one is ``fn`` itself),
    so its floats are those of the unstacked call. ``unroll``: the jobs as straight-line code (``True``; the
    default on CPU, where XLA runs a loop body's convolutions slowly) or a ``lax.map`` (one copy of ``fn``
    whatever the stack's size).
    """
    if unroll is None:
        unroll = jax.default_backend() == "cpu"

    def mapped(*args: Any) -> Any:
        stacked = [a for a, axis in zip(args, in_axes, strict=True) if axis == 0]
        n = jax.tree.leaves(stacked)[0].shape[0]

        def one(job_args: Sequence[Any]) -> Any:
            it = iter(job_args)
            return fn(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes, strict=True)])

        if n == 1 or unroll:
            outs = [one(jax.tree.map(lambda a, j=j: a[j], stacked)) for j in range(n)]
            return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)
        return jax.lax.map(one, stacked)

    return mapped


def chunk_report(problem: Problem, settings: StepSettings, length: int, state: LoopState,
                 params: Any, tgt: Any, scales: Any, key: jax.Array
                 ) -> tuple[LoopState, dict[str, jax.Array], dict[str, jax.Array]]:
    """:func:`chunk`, then the energy terms at the image it ends on (with that step's key):
    what the progress bar shows for the step it reports, and after the last chunk the run's final energy.

    Returns (the new state, {term: (length,)} before each step, {"total", term...: scalar} at the new state).
    One forward pass more per chunk (``benchmarks/report_cost.py`` measures its cost)."""
    return chunk(problem, settings, length, state, params, tgt, scales, key, report=True)
