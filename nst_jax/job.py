"""The run driver: one optimisation of one image, or of a stack of jobs with the same problem, start to end.

What a job needs, in one place for the single run (:func:`nst_jax.runner.stylize`) and batch mode
(:mod:`nst_jax.batch`): its random keys, its initial image, the setup (style targets, the paper's constants,
balance factors, energy multipliers), then the loop (:mod:`nst_jax.loop`) on the run's placement
(:mod:`nst_jax.placement`) and the run record (:mod:`nst_jax.record`). A single run is a batch of one, so a job
of a batch is its single run with the same seed, bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config as cfg_lib
from nst_jax import image, lapack, transfer
from nst_jax import weights as weights_lib
from nst_jax.loop import Chunk, Prepared, Tracker, final_losses, run_chunks
from nst_jax.placement import JobMesh, Placement
from nst_jax.record import run_record, status


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

    ``spec``: the run's parsed config (:class:`nst_jax.config.RunSpec`). ``init_rgb``: the starting image (a
    coarse-to-fine run's previous scale, a video's warped previous frame); ``None``: ``config.init``. ``masks``:
    spatial control at this size (:class:`nst_jax.masks.RunMasks`), or ``None``. ``temporal``: a video frame's
    temporal term at this size (single runs only), or ``None``."""

    spec: cfg_lib.RunSpec
    content: np.ndarray
    styles: list[np.ndarray]
    content_desc: str
    style_descs: list[str]
    init_rgb: np.ndarray | None = None
    masks: Any = None
    temporal: TemporalTarget | None = None

    @property
    def config(self) -> Any:
        """The checked config (``spec.config``)."""
        return self.spec.config

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
    each device computes its jobs one after another with one job's functions (:mod:`nst_jax.placement`), so a job
    of a batch and its single run run the same compiled computation: equal bit for bit on the same device type.
    ``placement``: a :class:`~nst_jax.placement.Placement` (default: the default device alone).
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
    place = placement or JobMesh()
    problem = place.problem(problem)
    s = prepare(problem, settings, jobs, weights, place, resume)
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
    interrupted, stopped = run_chunks(compiled, s, trackers, settings.steps, batched, start_step, before_s, after_chunk)
    run_s = time.time() - run_t0
    finals = [None] * len(jobs) if interrupted else final_losses(problem, s, trackers)

    out = []
    for j, (job, tracker) in enumerate(zip(jobs, trackers, strict=True)):
        ended = status(tracker, settings.steps, interrupted, bool(stopped[j]))
        final = None if ended in ("nonfinite", "interrupted") else finals[j]
        if final is not None:
            tracker.log(tracker.step, final)  # the history ends at the final step
        record = run_record(
            job, problem, weights, s.factors[j], s.base, tracker, ended, final=final,
            resumed_from=None if s.resumed is None else start_step,
            times={"setup_s": s.setup_s, "compile_s": compile_s, "run_s": run_s, "run_s_before": before_s,
                   "scale_s": time.time() - started,
                   "steps_started_at": run_t0},  # Unix time of the first step: benchmarks/end_to_end.py
        )
        out.append((image.denoise(image.to_rgb(tracker.last_finite, weights.source), job.config.sgd.denoise), record))
    return out


def prepare(problem: transfer.Problem, settings: transfer.StepSettings, jobs: Sequence[JobInputs],
           weights: weights_lib.Weights, place: Placement,
           resume: Callable[[transfer.LoopState], Resumed] | None) -> Prepared:
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
    if problem.temporal_weight:  # the temporal term's target, stacked like the others
        if any(j.temporal is None for j in jobs):
            raise ValueError("a temporal term needs each job's TemporalTarget")
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
    scales = place.stacked(multipliers(cfg.content_weight, jobs[0].spec.style_weight, factors, base))
    setup_s = time.time() - t0

    if resumed is not None:
        state = place.stacked(jax.tree.map(lambda a: np.asarray(a)[None], resumed.state))
    else:
        state = place.stacked(jax.vmap(lambda x: transfer.init_state(problem, settings, jnp.copy(x)))(
            np.stack(x0s)))
    return Prepared(params, tgt, base, factors, scales, state, loop_key, place, resumed, setup_s)
