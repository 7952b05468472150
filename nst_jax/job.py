"""The run driver: one optimisation of one image, or of a stack of jobs with the same problem, start to end.

What a job needs, in one place for the single run (:func:`nst_jax.runner.stylize`) and batch mode
(:mod:`nst_jax.batch`): its random keys, its initial image, the setup (style targets, the paper's constants,
balance factors, energy multipliers), the compiled chunk of steps, the per-chunk bookkeeping of the loss terms
with the first non-finite step, the final energy and the run record. A single run is a batch of one: each
device computes its jobs one after another with one job's own functions (:func:`nst_jax.transfer.each_job`
under ``jax.shard_map``), so a job of a batch is its single run with the same seed, bit for bit.

The outcome of every job is the record's ``status``: ``done``, ``stopped_early`` (the paper's SGD stopped on
its tolerance), ``nonfinite`` (the energy became NaN or infinite: the image is the last finite one, the record
says where) or ``interrupted``. The command lines map it to exit codes (:data:`EXIT_CODES`).

The compiled functions are ``jax.jit`` of the pure ones with the :class:`~nst_jax.transfer.Problem` and
:class:`~nst_jax.transfer.StepSettings` static, so runs of the same problem in one process (a notebook, the
comparison, batch rounds, tests) reuse jit's compilations.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import nst_jax
from nst_jax import config as cfg_lib
from nst_jax import image, lapack, losses, transfer
from nst_jax import weights as weights_lib

STATUSES = ("done", "stopped_early", "nonfinite", "interrupted")
EXIT_CODES = {"done": 0, "stopped_early": 0, "nonfinite": 2, "interrupted": 130}
"""Exit status of a command line whose run ended with each record ``status``."""

JOB_AXIS = "jobs"
"""The mesh axis a batch's job axis is split over."""


def chunk_report(problem: transfer.Problem, settings: transfer.StepSettings, length: int, state: transfer.LoopState,
                 params: Any, tgt: Any, scales: Any, key: jax.Array
                 ) -> tuple[transfer.LoopState, dict[str, jax.Array], dict[str, jax.Array]]:
    """:func:`nst_jax.transfer.chunk`, then the energy terms at the image it ends on (with that step's key):
    what the progress bar shows for the step it reports, and after the last chunk the run's final energy.

    Returns (the new state, {term: (length,)} before each step, {"total", term...: scalar} at the new state).
    One forward pass more per chunk (``benchmarks/report_cost.py`` measures its cost)."""
    return transfer.chunk(problem, settings, length, state, params, tgt, scales, key, report=True)


def _energy_at(problem: transfer.Problem, params: Any, tgt: Any, scales: Any, x: jax.Array, key: jax.Array,
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    return transfer.energy(problem, params, tgt, scales, x, jax.random.fold_in(key, step))


def _on_devices(fn: Callable[..., Any], in_axes: tuple[int | None, ...], mesh: Mesh, name: str,
                donate: tuple[int, ...] = ()) -> Callable[..., Any]:
    """``fn`` of one job run for each job of a stack split over ``mesh``'s job axis: each device computes its
    own jobs one by one with ``fn``'s own computation (:func:`nst_jax.transfer.each_job`), so a batch job gets
    its single run's floats; nothing moves between devices. Arguments with ``in_axes`` None are replicated."""
    specs = tuple(P(JOB_AXIS) if axis == 0 else P() for axis in in_axes)
    per_device = jax.shard_map(transfer.each_job(fn, in_axes), mesh=mesh, in_specs=specs, out_specs=P(JOB_AXIS),
                               check_vma=False)

    def named(*args: Any) -> Any:
        return per_device(*args)

    named.__name__ = name  # the compiled program's name (logs, the compilation cache's entries: jit_chunk-...)
    return jax.jit(named, donate_argnums=donate)


@functools.lru_cache(maxsize=64)
def _batched(name: str, problem: transfer.Problem, mesh: Mesh, settings: transfer.StepSettings | None = None,
             length: int = 0) -> Callable[..., Any]:
    """The compiled per-device function ``name`` of a batch (cached per problem, settings and mesh)."""
    if name == "chunk":
        return _on_devices(functools.partial(chunk_report, problem, settings, length), (0, None, 0, 0, None), mesh,
                           name, (0,))
    fn, axes = {
        "targets": (transfer.targets, (None, 0, 0, None)),  # masks (spatial control): single runs only
        "norms": (transfer.gradient_norms, (None, 0, None, None, None)),
        "energy": (_energy_at, (None, 0, 0, 0, None, 0)),
    }[name]
    return _on_devices(functools.partial(fn, problem), axes, mesh, name)


class Keys(NamedTuple):
    """The random keys of a run with a seed: initial noise, the loop (``fold_in(loop, step)`` per step), the
    balance's estimator draws, the balance's reference image."""

    init: jax.Array
    loop: jax.Array
    balance: jax.Array
    ref: jax.Array


def keys(seed: int) -> Keys:
    """The four keys of a run with ``seed``: every job of a batch uses the same ones as its single run."""
    return Keys(*jax.random.split(jax.random.key(seed), 4))


OFFICIAL_NOISE = 0.1
"""Half-width of the official code's initial noise (its default ``--init random``, what run.sh used)."""


def initial_image(init: str, content_rgb: np.ndarray, key: jax.Array, source: str) -> jax.Array:
    """The starting image, preprocessed for ``source``, (H, W, 3) float32 like ``content_rgb``.

    * ``content``: the content image;
    * ``noise``: seeded uniform RGB noise in [0, 1];
    * ``official_noise``: the official code's start, seeded: uniform(-0.1, 0.1) in the preprocessed space, a
      near-flat image of the mean pixel. For ``caffe`` weights that is the official code's space (0-255 minus
      the mean pixel), so 0.1 is 0.1/255 of the RGB range; for ``torchvision`` it is 0.1 ImageNet standard
      deviations around the ImageNet mean;
    * anything else: an image file, resized to the content's shape.
    """
    if init == "content":
        return image.preprocess(jnp.asarray(content_rgb), source)
    if init == "noise":
        return image.preprocess(jax.random.uniform(key, content_rgb.shape, jnp.float32), source)
    if init == "official_noise":
        return jax.random.uniform(key, content_rgb.shape, jnp.float32, -OFFICIAL_NOISE, OFFICIAL_NOISE)
    rgb = image.resize(image.load_image(init, min_side=image.MIN_INPUT_SIDE), content_rgb.shape[:2])
    return image.preprocess(jnp.asarray(rgb), source)


def multipliers(content_weight: float, style_weight: float, factors: Sequence[Sequence[float]],
                base: dict[tuple[int, str], float]) -> dict[str, Any]:
    """The energy's multipliers per job: ``{"content": (J,), "style": {(term, layer): (J,)}}`` float32.

    style_weight * b_t * c_t(layer) is formed in float64 and rounded once to float32, for each job's factors
    b (:func:`nst_jax.transfer.balance_factors`) and the paper's constants ``base``."""
    return {
        "content": np.full((len(factors),), np.float32(content_weight)),
        "style": {k: np.asarray([np.float32(style_weight * f[k[0]] * v) for f in factors]) for k, v in base.items()},
    }


def to_rgb(x: np.ndarray, source: str) -> np.ndarray:
    """A preprocessed image back to (H, W, 3) float32 RGB in [0, 1]."""
    return np.clip(np.asarray(image.deprocess(jnp.asarray(x), source)), 0.0, 1.0).astype(np.float32)


def denoise(rgb: np.ndarray, weight: float) -> np.ndarray:
    """The official code's final TV denoising of a saved image: scikit-image's ``denoise_tv_chambolle`` with
    ``weight`` (the official 0.02) over the colour channels, clipped to [0, 1]; ``weight`` 0: ``rgb`` as is.

    rgb: (H, W, 3) float32 RGB in [0, 1] -> the same shape and type. scikit-image is the optional extra
    ``paper`` (``pip install -e '.[paper]'``); :func:`nst_jax.config.check` says so before a run needs it.
    """
    if not weight:
        return rgb
    from skimage.restoration import denoise_tv_chambolle  # optional: only runs that denoise need it

    out = denoise_tv_chambolle(np.asarray(rgb, np.float64), weight=float(weight), channel_axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class Tracker:
    """One job's bookkeeping between chunks: the loss history every ``log_every`` steps, the steps done, the
    last image whose energy was finite, the energy terms at it (``current``) and the first non-finite step."""

    def __init__(self, names: Sequence[str], log_every: int, x0: np.ndarray, step: int = 0,
                 history: dict[str, list[float]] | None = None):
        self.names = list(names)
        self.log_every = log_every
        self.history = history or {"step": [], **{n: [] for n in self.names}}
        self.step = step
        self.last_finite = x0
        self.current: dict[str, float] = {}
        self.nonfinite: tuple[int, dict[str, float]] | None = None

    def absorb(self, terms: dict[str, np.ndarray], new_step: int, x: np.ndarray,
               now: dict[str, float] | None = None) -> None:
        """Takes one chunk's loss terms ({name: (length,)}, from the step before), the state after it and the
        terms at that state (``now``)."""
        for i in range(new_step - self.step):
            t = self.step + i
            row = {n: float(terms[n][i]) for n in self.names}
            if not all(math.isfinite(v) for v in row.values()):
                self.nonfinite = (t, row)
                return
            if t % self.log_every == 0:
                self.log(t, row)
        if not np.all(np.isfinite(x)):
            self.nonfinite = (new_step, {})
            return
        self.last_finite = x
        self.step = new_step
        self.current = dict(now or {})

    def log(self, step: int, row: dict[str, float]) -> None:
        """Adds ``row`` at ``step`` to the history (once per step)."""
        if self.history["step"] and self.history["step"][-1] >= step:
            return
        self.history["step"].append(step)
        for n in self.names:
            self.history[n].append(row[n])

    def live(self, steps: int, stopped: bool) -> bool:
        """Whether the job has steps left to run."""
        return self.nonfinite is None and self.step < steps and not stopped

    def latest(self) -> dict[str, float]:
        """The energy terms at the current step (empty before the first chunk)."""
        return dict(self.current)


@dataclasses.dataclass(frozen=True)
class TemporalTarget:
    """A video frame's temporal term (Ruder et al. 2016, :func:`nst_jax.transfer.temporal_loss`).

    Attributes:
      warped: (H, W, 3) float32 RGB in [0, 1], the previous stylised frame warped into this frame.
      mask: (H, W) float32 in [0, 1], the per-pixel weight c (0 where the flow fails its consistency check).
      weight: the term's multiplier in the energy (``Problem.temporal_weight``) at this size.
    """

    warped: np.ndarray
    mask: np.ndarray
    weight: float


@dataclasses.dataclass
class JobInputs:
    """One job's images at the run's size (after any colour transform) and what the record says of them.

    ``init_rgb``: the starting image (a coarse-to-fine run's previous scale, a video's warped previous frame);
    ``None``: ``config.init``. ``masks``: spatial control at this size (:class:`nst_jax.masks.RunMasks`), or
    ``None``. ``temporal``: a video frame's temporal term at this size (single runs only), or ``None``."""

    config: Any
    content: np.ndarray
    styles: list[np.ndarray]
    content_desc: str
    style_descs: list[str]
    init_rgb: np.ndarray | None = None
    masks: Any = None
    temporal: TemporalTarget | None = None

    def check_sizes(self, problem: transfer.Problem) -> None:
        """ImageError when the content or a style is too small for the problem's deepest layer."""
        cfg_lib.check_sizes(problem, [("content", self.content, self.content_desc),
                                      *(("style", r, d) for r, d in zip(self.styles, self.style_descs, strict=True))])


@dataclasses.dataclass
class Resumed:
    """A single run's state read back from a checkpoint (:mod:`nst_jax.checkpoint`); ``run_s``: seconds of
    steps the processes before this one spent."""

    state: transfer.LoopState
    loop_key: jax.Array
    factors: list[float]
    history: dict[str, list[float]]
    run_s: float = 0.0


@dataclasses.dataclass
class Chunk:
    """What the ``after_chunk`` hook sees after each chunk: the state, each job's tracker, the loop key, the
    balance factors, the seconds since the loop started in this process, the step it started from and the
    seconds of steps before this process (a resumed run)."""

    state: transfer.LoopState
    trackers: list[Tracker]
    loop_key: jax.Array
    factors: list[list[float]]
    elapsed_s: float
    start_step: int
    before_s: float = 0.0


def estimated_terms(problem: transfer.Problem) -> tuple[str, ...]:
    """The energy terms that are unbiased estimates (a style method's :attr:`unbiased_estimate`): they, and the
    style and total energies that add them, can be negative, which a display and the record say."""
    if not any(t.method.unbiased_estimate for t in problem.terms):
        return ()
    names = losses.term_names(problem.terms)
    fused = [f"style:{n}" for n, t in zip(names, problem.terms, strict=True)
             if len(problem.terms) > 1 and t.method.unbiased_estimate]
    return ("total", "style", *fused, *(f"style@{r}" for r in problem.regions))


def estimate_notes(problem: transfer.Problem) -> list[str]:
    """The run record's words on terms that can be negative (empty when none can)."""
    return [f"style method {t.name} ({t.method.describe()}): its energy is an unbiased estimate of MMD^2, which "
            f"fluctuates around its expected value and is negative when the result's features are as close to "
            f"the style's as the estimate can tell; read its trend over the loss history (or the cross-evaluation "
            f"of python -m nst_jax.compare, which uses exact distances), not its sign"
            for t in problem.terms if t.method.unbiased_estimate]


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a progress display is given after each chunk of a run.

    Attributes:
      step, steps: steps done and the run's (this scale's) step count.
      losses: the energy terms at ``step``'s image ({"total", "content", "style", "tv", ...}).
      rate: steps per second in this process.
      start_step: the step this process started from (a resumed run's checkpoint; else 0).
      scale, scales: which size of a coarse-to-fine run (0-based) of how many; size: its (H, W).
      label: what runs, for a display to name it (e.g. ``"scale 1/2, 64x34"``; empty for a plain run).
      estimates: the terms that are unbiased estimates and can be negative (:func:`estimated_terms`).
    """

    step: int
    steps: int
    losses: dict[str, float]
    rate: float
    start_step: int = 0
    scale: int = 0
    scales: int = 1
    size: tuple[int, int] = (0, 0)
    label: str = ""
    estimates: tuple[str, ...] = ()

    @property
    def eta_s(self) -> float:
        """Seconds left at the current rate (inf before the first chunk)."""
        return (self.steps - self.step) / self.rate if self.rate > 0 else float("inf")


@dataclasses.dataclass
class Placement:
    """Where a run's arrays go: the job axis split over ``mesh``'s ``"jobs"`` axis (default: the default device
    alone), the shared arrays (parameters, keys) replicated; or, with ``image`` (a single run's
    :class:`nst_jax.shard.ImageRows`, ``--shard_image``), the image's rows split over its mesh, the run's
    compiled functions then being that layout's."""

    mesh: Mesh | None = None
    image: Any = None

    def __post_init__(self) -> None:
        if self.mesh is None:
            self.mesh = Mesh(np.asarray(jax.devices()[:1]), (JOB_AXIS,))

    def stacked(self, tree: Any) -> Any:
        if self.image is not None:
            return self.image.put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P(JOB_AXIS)))

    def replicated(self, tree: Any) -> Any:
        if self.image is not None:
            return self.image.replicated(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def host(self, tree: Any) -> Any:
        """Placed arrays on the host (NumPy), an image split by rows cut back to the image's rows."""
        return jax.device_get(tree) if self.image is None else self.image.host(tree)

    def function(self, name: str, problem: transfer.Problem) -> Callable[..., Any]:
        """The compiled per-job function ``name`` (``targets``, ``norms`` or ``energy``) for this placement."""
        if self.image is None:
            return _batched(name, problem, self.mesh)
        rows = self.image
        fn = {"targets": rows.targets, "norms": rows.gradient_norms, "energy": rows.energy}[name]
        return functools.partial(fn, problem)

    def compile_chunk(self, problem: transfer.Problem, settings: transfer.StepSettings, length: int,
                      *args: Any) -> Any:
        """The compiled :func:`chunk_report` of one job per device (or of the image split by rows)."""
        if self.image is not None:
            return self.image.compile_chunk(problem, settings, length, *args)
        return _batched("chunk", problem, self.mesh, settings, length).lower(*args).compile()


@lapack.single_threaded()  # the host's LAPACK on one thread while XLA:CPU's pool runs the steps
def run(
    problem: transfer.Problem,
    settings: transfer.StepSettings,
    length: int,
    jobs: Sequence[JobInputs],
    weights: weights_lib.Weights,
    *,
    batched: bool = False,
    placement: Placement | None = None,
    resume: Callable[[transfer.LoopState], Resumed] | None = None,
    after_chunk: Callable[[Chunk], bool] | None = None,
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Runs ``jobs`` (one, or several with ``batched``) to the end and returns (RGB result, run record) each.

    All jobs share ``problem``, ``settings``, the config's seed and balance mode, and their image shapes. A
    single run is a batch of one: every run stacks its jobs on a job axis split over ``placement``'s mesh, and
    each device computes its jobs one after another with one job's functions (:func:`_on_devices`), so a job
    of a batch and its single run run the same compiled computation: equal bit for bit on the same device type.
    ``after_chunk`` is called after every chunk while a job has steps left (with a single run's state without
    the job axis); returning True stops the loop (a job with steps left is then ``interrupted``). ``resume``
    continues a single run from a checkpoint: it is given the fresh initial state (the template of what the
    checkpoint holds) and returns what it read.
    """
    if not batched and len(jobs) != 1:
        raise ValueError(f"a run that is not batched takes one job, got {len(jobs)}")
    if batched and resume is not None:
        raise ValueError("only a single run resumes from a checkpoint")
    if batched and any(j.masks is not None for j in jobs):
        raise ValueError("masks are for single runs, not batches")
    started = time.time()
    place = placement or Placement()
    if place.image is not None:
        problem = place.image.problem(problem)
    s = _setup(problem, settings, jobs, weights, place, resume)
    t0 = time.time()
    compiled = place.compile_chunk(problem, settings, length, s.state, s.params, s.tgt, s.scales, s.loop_key)
    compile_s = time.time() - t0

    start_step = 0 if s.resumed is None else int(s.resumed.state.step)
    before_s = 0.0 if s.resumed is None else s.resumed.run_s
    names = ["total", *transfer.term_names(problem)]
    x0_host = np.asarray(place.host(s.state.x))
    trackers = [Tracker(names, jobs[0].config.log_every, x0_host[j], start_step,
                        None if s.resumed is None else s.resumed.history) for j in range(len(jobs))]
    run_t0 = time.time()
    interrupted, stopped = _loop(compiled, s, trackers, settings.steps, batched, start_step, before_s, after_chunk)
    run_s = time.time() - run_t0
    finals = [None] * len(jobs) if interrupted else _final_losses(problem, s, trackers)

    out = []
    for j, (job, tracker) in enumerate(zip(jobs, trackers, strict=True)):
        if tracker.nonfinite is not None:
            status = "nonfinite"
        elif interrupted and tracker.step < settings.steps and not stopped[j]:
            status = "interrupted"
        elif stopped[j] and tracker.step < settings.steps:
            status = "stopped_early"
        else:
            status = "done"
        final = None if status in ("nonfinite", "interrupted") else finals[j]
        if final is not None:
            tracker.log(tracker.step, final)  # the history ends at the final step
        record = run_record(
            job, problem, weights, s.factors[j], s.base, tracker, status, final=final,
            resumed_from=None if s.resumed is None else start_step,
            times={"setup_s": s.setup_s, "compile_s": compile_s, "run_s": run_s, "run_s_before": before_s,
                   "scale_s": time.time() - started,
                   "steps_started_at": run_t0},  # Unix time of the first step: benchmarks/end_to_end.py
        )
        out.append((denoise(to_rgb(tracker.last_finite, weights.source), job.config.sgd.denoise), record))
    return out


@dataclasses.dataclass
class _Setup:
    """A run's arrays before its first step, stacked on the job axis."""

    params: Any
    tgt: Any
    base: dict[tuple[int, str], float]
    factors: list[list[float]]
    scales: Any
    state: transfer.LoopState
    loop_key: jax.Array
    place: Placement
    resumed: Resumed | None
    setup_s: float


def _setup(problem: transfer.Problem, settings: transfer.StepSettings, jobs: Sequence[JobInputs],
           weights: weights_lib.Weights, place: Placement,
           resume: Callable[[transfer.LoopState], Resumed] | None) -> _Setup:
    """Keys, images, targets, the paper's constants, balance factors, multipliers and the initial state."""
    cfg, source = jobs[0].config, weights.source
    k = keys(cfg.seed)
    params = place.replicated(weights.params)
    contents = [image.preprocess(jnp.asarray(j.content), source) for j in jobs]
    styles = [[image.preprocess(jnp.asarray(j.styles[i]), source) for j in jobs] for i in range(len(jobs[0].styles))]
    x0s = [initial_image(cfg.init, j.content, k.init, source) if j.init_rgb is None
           else image.preprocess(jnp.asarray(j.init_rgb), source) for j in jobs]
    resumed = None if resume is None else resume(transfer.init_state(problem, settings, x0s[0]))
    loop_key = k.loop if resumed is None else resumed.loop_key
    loop_key, balance_key = place.replicated((loop_key, k.balance))
    c, st = place.stacked(np.stack(contents)), [place.stacked(np.stack(s)) for s in styles]

    t0 = time.time()
    masks = None if jobs[0].masks is None else place.replicated(jobs[0].masks.arrays())
    tgt = place.function("targets", problem)(params, c, st, masks)
    if problem.temporal_weight:  # the temporal term's target, stacked like the others (single runs only)
        if place.image is not None or any(j.temporal is None for j in jobs):
            raise ValueError("a temporal term needs each job's TemporalTarget, and no image sharding")
        tgt = {**tgt, "temporal": place.stacked({
            "warped": np.stack([np.asarray(image.preprocess(jnp.asarray(j.temporal.warped), source)) for j in jobs]),
            "weight": np.stack([np.asarray(j.temporal.mask, np.float32) for j in jobs])})}
    base = transfer.paper_scales(problem, weights.params, x0s[0])
    if resumed is not None:
        factors = [list(resumed.factors)]  # the resumed run continues with exactly the same energy
    elif cfg.balance == "auto":
        x_ref = image.preprocess(jax.random.uniform(k.ref, jobs[0].content.shape, jnp.float32), source)
        base_arrays = {key: jnp.float32(v) for key, v in base.items()}
        norms = place.function("norms", problem)(params, tgt, place.replicated(base_arrays),
                                                 place.replicated(x_ref), balance_key)
        factors = [transfer.balance_factors(row) for row in np.asarray(norms)]
    else:
        factors = [[1.0] * len(problem.terms) for _ in jobs]
    scales = place.stacked(multipliers(cfg.content_weight, cfg_lib.style_weight(cfg), factors, base))
    setup_s = time.time() - t0

    if resumed is not None:
        state = place.stacked(jax.tree.map(lambda a: np.asarray(a)[None], resumed.state))
    else:
        state = place.stacked(jax.vmap(lambda x: transfer.init_state(problem, settings, jnp.copy(x)))(
            np.stack(x0s)))
    return _Setup(params, tgt, base, factors, scales, state, loop_key, place, resumed, setup_s)


def _loop(compiled: Any, s: _Setup, trackers: list[Tracker], steps: int, batched: bool, start_step: int,
          before_s: float, after_chunk: Callable[[Chunk], bool] | None) -> tuple[bool, np.ndarray]:
    """Runs chunks while a job has steps left; updates ``s.state`` and the trackers. Returns (whether
    ``after_chunk`` stopped it with steps left, each job's early-stop flag)."""

    def any_live() -> bool:
        return any(t.live(steps, bool(f)) for t, f in zip(trackers, np.asarray(s.state.stopped), strict=True))

    run_t0 = time.time()
    while any_live():
        s.state, terms, now = compiled(s.state, s.params, s.tgt, s.scales, s.loop_key)
        terms, now, host_steps = jax.device_get((terms, now, s.state.step))
        x_host = s.place.host(s.state.x)
        for j, tracker in enumerate(trackers):
            if tracker.nonfinite is None:
                tracker.absorb({n: v[j] for n, v in terms.items()}, int(host_steps[j]), x_host[j],
                               {n: float(v[j]) for n, v in now.items()})
        if after_chunk is not None and any(t.nonfinite is None for t in trackers):
            state = s.state if s.place.image is None else s.place.host(s.state)
            state = state if batched else jax.tree.map(lambda a: a[0], state)
            if after_chunk(Chunk(state, trackers, s.loop_key, s.factors, time.time() - run_t0, start_step, before_s)):
                return any_live(), np.asarray(s.state.stopped)
    return False, np.asarray(s.state.stopped)


def _final_losses(problem: transfer.Problem, s: _Setup, trackers: list[Tracker]) -> list[dict[str, float] | None]:
    """Each job's energy terms at its last finite image, with that step's key (None where non-finite): the
    last chunk's report, or computed here when no chunk ran (a run resumed at its end)."""
    if all(t.current or t.nonfinite is not None for t in trackers):
        return [None if t.nonfinite is not None else dict(t.current) for t in trackers]
    x_final = s.place.stacked(np.stack([t.last_finite for t in trackers]))
    steps = s.place.stacked(np.asarray([t.step for t in trackers], np.int32))
    value, final = jax.device_get(s.place.function("energy", problem)(
        s.params, s.tgt, s.scales, x_final, s.loop_key, steps))
    out: list[dict[str, float] | None] = []
    for j, t in enumerate(trackers):
        out.append(None if t.nonfinite is not None
                   else {"total": float(value[j]), **{n: float(v[j]) for n, v in final.items()}})
    return out


def run_record(job: JobInputs, problem: transfer.Problem, weights: weights_lib.Weights, factors: Sequence[float],
               base: dict[tuple[int, str], float], tracker: Tracker, status: str, *,
               final: dict[str, float] | None, resumed_from: int | None, times: dict[str, float]) -> dict[str, Any]:
    """The JSON-serialisable record of one job (``out.json``)."""
    step, run_s, start = tracker.step, times["run_s"], resumed_from or 0
    record = {
        "nst_jax": nst_jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": job.config.to_dict(),
        "content": {"input": job.content_desc, "size": list(job.content.shape[:2])},
        "style": {"inputs": job.style_descs, "size": [list(s.shape[:2]) for s in job.styles]},
        "weights": {"path": weights.path, "source": weights.source, "sha256": weights.sha256,
                    "origin": weights.origin},
        "device": device_info(),
        "versions": versions(),
        "terms": [{"method": t.name, "weight": t.weight, "params": t.params} for t in problem.terms],
        "balance": {"mode": job.config.balance,
                    "factors": {t.name: f for t, f in zip(problem.terms, factors, strict=True)}},
        "paper_scales": {f"{problem.terms[i].name}/{layer}": v for (i, layer), v in base.items()},
        "status": status,
        "steps_run": step,
        "resumed_from": resumed_from,
        "steps_this_process": step - start,
        "stopped_early": status == "stopped_early",
        **times,
        "run_s_whole": times.get("run_s_before", 0.0) + run_s,
        "iterations_per_s": (step - start) / run_s if run_s > 0 else None,
        "losses": tracker.history,
        "final_losses": final,
        "notes": estimate_notes(problem),
    }
    if tracker.nonfinite is not None:
        record["nonfinite"] = {"step": tracker.nonfinite[0], "terms": tracker.nonfinite[1]}
    if job.masks is not None:
        record["regions"] = job.masks.record(final)
    if job.temporal is not None:
        record["temporal"] = {"weight": job.temporal.weight, "kept_fraction": float(np.mean(job.temporal.mask))}
    return record


def versions() -> dict[str, str]:
    """Versions of the libraries that made a result."""
    import flax
    import jaxlib
    import optax

    return {
        "nst_jax": nst_jax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
    }


def device_info() -> dict[str, Any]:
    """The device a result was computed on."""
    dev = jax.devices()[0]
    return {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count(),
            "host": platform.node()}
