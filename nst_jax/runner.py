"""Running a style transfer end to end: inputs, sizes, colours and checkpoints around the run driver.

``stylize`` is the Python API (also what ``python -m nst_jax.main`` calls): the inputs, the sizes of a
coarse-to-fine run, colour preservation and checkpoints around :func:`nst_jax.job.run`, which runs the
optimisation (:mod:`nst_jax.transfer`). Nothing here prints: progress goes to an optional callback.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import checkpoint, color, demo, image, job, loop, masks, shard, transfer
from nst_jax import config as cfg_lib
from nst_jax import record as record_lib
from nst_jax import weights as weights_lib
from nst_jax.errors import ImageError, UserError

ImageLike = str | np.ndarray | None


class NonFiniteLoss(UserError):
    """The energy became NaN or infinite; ``.image`` holds the last finite image, ``.record`` the record."""


class Interrupted(Exception):
    """``should_stop`` asked to stop; a checkpoint was written. ``.image`` and ``.record`` as above."""


def _input(value: ImageLike, which: str) -> tuple[np.ndarray, str]:
    """(H, W, 3) RGB in [0, 1] and a description, from a path, an array or ``None`` (the demo image)."""
    if value is None or (isinstance(value, str) and not value):
        drawn = demo.content_image(1024) if which == "content" else demo.style_image(1024)
        return drawn, f"demo {which} image (nst_jax.demo)"
    if isinstance(value, str):
        return image.load_image(value, min_side=image.MIN_INPUT_SIDE), value
    arr = np.asarray(value, np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ImageError(f"{which} array: expected (H, W, 3) RGB, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0), f"{which} array {arr.shape[0]}x{arr.shape[1]}"


def style_inputs(style: ImageLike | list[ImageLike]) -> list[ImageLike]:
    """The style argument as a list: a comma-separated string of paths, a list, or one image / ``None``."""
    if isinstance(style, (list, tuple)):
        return list(style) or [None]
    if isinstance(style, str) and "," in style:
        return [part.strip() for part in style.split(",")]
    return [style]


def prepare_images(content: ImageLike, style: ImageLike | list[ImageLike], config: Any
                   ) -> tuple[tuple[np.ndarray, str], list[tuple[np.ndarray, str]]]:
    """The content at the run's size and each style at its size (see ``style_resize``), with a description
    of where each came from."""
    content_rgb, content_desc = _input(content, "content")
    styles = [_input(one, "style") for one in style_inputs(style)]
    content_rgb, style_rgbs = resized_inputs(content_rgb, [rgb for rgb, _ in styles], cfg_lib.default_size(config)[0],
                                             config)
    return (content_rgb, content_desc), list(zip(style_rgbs, [desc for _, desc in styles], strict=True))


def resized_inputs(content_rgb: np.ndarray, style_rgbs: list[np.ndarray], long_edge: int, config: Any,
                   factor: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content at ``long_edge`` px and each style at its size for it (``cfg_lib.style_shape``; ``factor``
    scales an explicit style size, for the coarse scales of a coarse-to-fine run)."""
    content_rgb = image.resize_long_edge(content_rgb, long_edge)
    return content_rgb, [image.resize(rgb, cfg_lib.style_shape(content_rgb.shape[:2], rgb.shape[:2], config,
                                                                factor=factor)) for rgb in style_rgbs]


def scale_sizes(size: int, scales: int) -> list[int]:
    """Long edges of a coarse-to-fine run: each twice the last, ending at ``size``."""
    return [max(1, round(size / 2 ** (scales - 1 - k))) for k in range(scales)]


def colour_inputs(mode: str, content_rgb: np.ndarray, style_rgbs: list[np.ndarray]
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """What the run optimises against under ``--preserve_colors`` (Gatys et al. 2017):

    * ``none``: the images as they are;
    * ``luminance``: the content's luminance and each style's luminance matched to the content's mean and
      deviation (grey images); the result's luminance later gets the content's chroma back;
    * ``histogram``: each style recoloured to the content's colour mean and covariance.
    """
    if mode == "luminance":
        return (np.asarray(color.luminance_only(content_rgb), np.float32),
                [color.match_luminance(s, content_rgb).astype(np.float32) for s in style_rgbs])
    if mode == "histogram":
        return content_rgb, [color.match_color_histogram(s, content_rgb).astype(np.float32) for s in style_rgbs]
    return content_rgb, style_rgbs


ProgressFn = Callable[[loop.Progress], None]
SnapshotFn = Callable[[int, np.ndarray], None]


SUMMED = ("steps_run", "steps_this_process", "setup_s", "compile_s", "run_s", "run_s_before", "run_s_whole",
          "scale_s")
"""The run record's step counts and times that add up over the scales of a coarse-to-fine run: the record's
top level has their sums, ``scales`` each scale's own."""

def stylize(
    content: ImageLike,
    style: ImageLike | list[ImageLike],
    config: Any,
    *,
    weights: weights_lib.Weights | None = None,
    progress: ProgressFn | bool | None = None,
    snapshot: SnapshotFn | None = None,
    checkpoint_path: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
    on_image: SnapshotFn | None = None,
    content_mask: str | None = None,
    style_mask: str | list[str] | None = None,
    init: np.ndarray | None = None,
    temporal: job.TemporalTarget | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stylises ``content`` with ``style``.

    Args:
      content: image file path, (H, W, 3) RGB array in [0, 1], or ``None``/``""`` for the demo image.
      style: likewise, or several (a list, or comma-separated paths) blended with ``config.style_blend``.
      config: a ``ConfigDict`` as in ``configs/default.py``, or one already parsed
        (:class:`nst_jax.config.RunSpec`, :func:`nst_jax.config.parse`).
      weights: loaded VGG-19 weights; default: ``config.weights`` or the cached file.
      progress: called after every chunk with a :class:`nst_jax.loop.Progress` (the step, the loss terms at
        it, the rate, the scale); ``True``: a progress bar on stderr (:class:`nst_jax.report.ProgressBar`);
        ``None``/``False``: silent.
      snapshot: called with (step, RGB image) every ``config.save_every`` steps (of the last scale).
      checkpoint_path: where to write a checkpoint every ``config.checkpoint_every`` steps and on
        interruption (and read it from with ``config.resume``); ``None``: no checkpoints.
      should_stop: polled between chunks; when it returns True the run checkpoints and raises Interrupted.
      on_ready: called once, after the config, weights, images and their sizes have been checked and before
        the first step: where a caller creates its output folder, so a bad input leaves nothing behind.
      on_image: called after every chunk of every scale with (step within the scale, the current image,
        (H, W, 3) float32 RGB in [0, 1], as optimised: before colour preservation's recombination and the
        final denoising), for live previews (:mod:`nst_jax.preview`).
      content_mask, style_mask: spatial control (:mod:`nst_jax.masks`): label-image paths (the style masks a
        list or comma-separated, one per style); default ``config.content_mask`` and ``config.style_mask``.
      init: the starting image, (H, W, 3) RGB in [0, 1] (resized to the first scale), instead of
        ``config.init``: a video's warped previous frame (:mod:`nst_jax.video`).
      temporal: a video frame's temporal term (:class:`nst_jax.job.TemporalTarget`) at the content's full size:
        each scale gets it resized, its weight scaled by the scale's pixel count over the full size's (as the
        content energy's element count scales).

    With ``config.scales`` = K > 1 the run is coarse to fine: K sizes, each twice the last, ending at the
    content size; each scale runs ``config.steps`` steps and starts from the previous result upsampled.

    Returns:
      (the result, (H, W, 3) float32 RGB in [0, 1]; the run record, a JSON-serialisable dict).

    Raises:
      UserError: bad inputs or config (one-line message); NonFiniteLoss carries the last finite image in
        ``.image`` and the partial record in ``.record``.
    """
    spec = _spec(config, content_mask, style_mask)
    config = spec.config
    started = time.time()
    if progress is True:
        from nst_jax import report  # the display, only for callers that ask for it

        progress = report.ProgressBar()
    progress = progress or None
    if weights is None:
        weights = weights_lib.load(weights_lib.resolve(config.weights or None, config.source))
    size, size_note = cfg_lib.default_size(config)
    content_full, content_desc = _input(content, "content")
    styles_full = [_input(one, "style") for one in style_inputs(style)]
    blend = cfg_lib.blend_weights(config, len(styles_full))
    sizes = scale_sizes(size, int(config.scales))
    run_masks = _masks_per_scale(config, content_full, [rgb for rgb, _ in styles_full], sizes, size, blend)
    resume_scale = None
    if checkpoint_path and config.resume:
        resume_scale = checkpoint.scale_of(checkpoint_path)
    result = None
    per_scale = []
    for k, size_k in enumerate(sizes):
        # Style sizes follow the content's scale, so texture size relative to the content stays the same.
        content_rgb, style_rgbs = resized_inputs(content_full, [rgb for rgb, _ in styles_full], size_k, config,
                                                 factor=size_k / size)
        run_content, run_styles = colour_inputs(config.preserve_colors, content_rgb, style_rgbs)
        start = init if result is None else result
        init_rgb = None if start is None else image.resize(np.asarray(start, np.float32), content_rgb.shape[:2])
        last = k == len(sizes) - 1
        inputs = job.JobInputs(spec, run_content, run_styles, content_desc, [d for _, d in styles_full], init_rgb,
                               run_masks[k], _temporal_at(temporal, content_rgb.shape[:2]))
        try:
            result, record = _run_scale(
                inputs, weights, blend, scale=k, scales=len(sizes), progress=progress,
                snapshot=snapshot if last else None,
                # On resume, the scales before the checkpoint's are replayed (deterministically) without
                # touching it; the checkpoint's own scale continues from it.
                checkpoint_path=checkpoint_path if resume_scale is None or k >= resume_scale else None,
                resume=resume_scale == k, should_stop=should_stop, on_ready=on_ready if k == 0 else None,
                on_image=on_image,
            )
        except (NonFiniteLoss, Interrupted) as e:
            e.image = _finish_colour(config, e.image, content_full, size)
            raise
        per_scale.append({"size": list(content_rgb.shape[:2]), "resumed_from": record["resumed_from"],
                          "steps_started_at": record["steps_started_at"],
                          **{k: record[k] for k in (*SUMMED, "final_losses", "losses")}})
    result = _finish_colour(config, result, content_full, size)
    record.update(size_note=size_note, total_s=time.time() - started, preserve_colors=config.preserve_colors,
                  style={"inputs": [d for _, d in styles_full], "blend": blend, "size": record["style"]["size"]})
    if config.get("content_mask"):
        record["masks"] = {"content": config.content_mask, "style": cfg_lib.csv(config.style_mask),
                           "fallback": config.mask_fallback, "regions_used": run_masks[-1] is not None}
    return result, _whole_run(record, per_scale)


def _spec(config: Any, content_mask: str | None, style_mask: str | list[str] | None) -> cfg_lib.RunSpec:
    """The run's parsed config (its one parse), with the masks given to :func:`stylize` in place of the
    config's."""
    if content_mask is None and style_mask is None:
        return config if isinstance(config, cfg_lib.RunSpec) else cfg_lib.parse(config)
    config = (config.config if isinstance(config, cfg_lib.RunSpec) else config).copy_and_resolve_references()
    with config.unlocked():
        if content_mask is not None:
            config.content_mask = content_mask
        if style_mask is not None:
            config.style_mask = style_mask if isinstance(style_mask, str) else ",".join(style_mask)
    return cfg_lib.parse(config)


def _whole_run(record: dict[str, Any], per_scale: list[dict[str, Any]]) -> dict[str, Any]:
    """The last scale's record made the whole run's: the top level counts every scale (as the command line's
    last line says); each scale's own figures stay under ``scales``, the losses at the top are the last
    scale's (the result's)."""
    whole = {k: sum(s[k] for s in per_scale) for k in SUMMED}
    record.update(
        whole, steps_started_at=per_scale[0]["steps_started_at"],
        iterations_per_s=whole["steps_this_process"] / whole["run_s"] if whole["run_s"] > 0 else None,
        scales=per_scale,
    )
    return record


def _temporal_at(temporal: job.TemporalTarget | None, hw: tuple[int, int]) -> job.TemporalTarget | None:
    """``temporal`` resized to a scale's (H, W), its weight scaled by the pixel-count ratio."""
    if temporal is None or tuple(temporal.mask.shape) == tuple(hw):
        return temporal
    mask = image.resize(np.repeat(np.asarray(temporal.mask, np.float32)[..., None], 3, axis=-1), hw)[..., 0]
    ratio = hw[0] * hw[1] / (temporal.mask.shape[0] * temporal.mask.shape[1])
    return job.TemporalTarget(image.resize(temporal.warped, hw), mask, temporal.weight * ratio)


def _masks_per_scale(config: Any, content_full: np.ndarray, styles_full: list[np.ndarray], sizes: list[int],
                     size: int, blend: tuple[float, ...]) -> list[masks.RunMasks | None]:
    """Each scale's masks (:mod:`nst_jax.masks`), all checked before the first step; ``None`` per scale without
    masks, or when the masks are one region covering everything with every whole style as its style (the
    unmasked problem, run by the unmasked code)."""
    if not config.get("content_mask"):
        return [None] * len(sizes)
    read = masks.load(config.content_mask, cfg_lib.csv(config.style_mask), content_full.shape[:2],
                      [rgb.shape[:2] for rgb in styles_full], config.mask_fallback)
    if read.trivial:
        return [None] * len(sizes)
    layers = cfg_lib.csv(config.style_layers)
    out = []
    for size_k in sizes:
        content_rgb, style_rgbs = resized_inputs(content_full, styles_full, size_k, config, factor=size_k / size)
        out.append(read.at(content_rgb.shape[:2], [s.shape[:2] for s in style_rgbs], layers, blend))
    return out


def _finish_colour(config: Any, rgb: np.ndarray, content_full: np.ndarray, size: int) -> np.ndarray:
    """Under ``preserve_colors=luminance``: the result's luminance with the content's chroma."""
    if config.preserve_colors != "luminance":
        return rgb
    content_rgb = image.resize(image.resize_long_edge(content_full, size), rgb.shape[:2])
    return color.recombine_luminance(rgb, content_rgb).astype(np.float32)


def _start_digest(job_inputs: job.JobInputs) -> dict[str, Any]:
    """What a checkpoint's fingerprint adds for a video frame: its temporal target and start (nothing else)."""
    t = job_inputs.temporal
    if t is None:
        return {}
    return {"temporal": [checkpoint.array_sha256(t.warped), checkpoint.array_sha256(t.mask), t.weight,
                         None if job_inputs.init_rgb is None else checkpoint.array_sha256(job_inputs.init_rgb)]}


def _run_scale(
    job_inputs: job.JobInputs,
    weights: weights_lib.Weights,
    blend: tuple[float, ...],
    *,
    scale: int,
    scales: int,
    progress: ProgressFn | None,
    snapshot: SnapshotFn | None,
    checkpoint_path: str | None,
    resume: bool,
    should_stop: Callable[[], bool] | None,
    on_ready: Callable[[], None] | None = None,
    on_image: SnapshotFn | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One optimisation at one size (:func:`nst_jax.job.run`) with progress, snapshots and checkpoints."""
    spec, config = job_inputs.spec, job_inputs.config
    problem = spec.problem(blend)
    if job_inputs.masks is not None:
        problem = dataclasses.replace(problem, regions=job_inputs.masks.names)
    if job_inputs.temporal is not None:
        problem = dataclasses.replace(problem, temporal_weight=float(job_inputs.temporal.weight))
    content_rgb, style_rgbs = job_inputs.content, job_inputs.styles
    job_inputs.check_sizes(problem)
    if on_ready is not None:
        on_ready()
    settings = spec.settings(weights.source)
    length = spec.chunk_length((config.save_every, config.checkpoint_every if checkpoint_path else 0))
    fp = checkpoint.fingerprint(
        dict(config.to_dict(), scale=scale, **({} if job_inputs.masks is None else {"masks": job_inputs.masks.digest}),
             **_start_digest(job_inputs)),
        weights.sha256, content_rgb.shape[:2],
        [rgb.shape[:2] for rgb in style_rgbs], checkpoint.array_sha256(content_rgb),
        [checkpoint.array_sha256(rgb) for rgb in style_rgbs],
    )

    rows = None
    if config.shard_image:  # one image's rows over all devices of the run (nst_jax.shard)
        rows = shard.over(shard.run_devices(), problem, content_rgb.shape)

    def resume_from(template: transfer.LoopState) -> job.Resumed:
        try:
            saved = checkpoint.load(checkpoint_path, template_carry=template, fingerprint=fp)
        except UserError:
            if rows is not None:  # the other processes learn of it (-1) and stop too
                rows.same_everywhere(-1)
            raise
        if rows is not None:  # over several processes every one must continue from the same step
            steps = rows.same_everywhere(int(saved.carry.step))
            if len(set(steps)) > 1:
                raise UserError(f"--resume: the processes' checkpoints are at steps {steps} (-1: none or "
                                f"unreadable); every process needs the same {checkpoint_path}")
        return job.Resumed(saved.carry, jax.random.wrap_key_data(jnp.asarray(saved.key)),
                           saved.factors, saved.history, saved.run_s)

    estimates = record_lib.estimated_terms(problem)  # the same for every chunk of the run

    def after_chunk(c: loop.Chunk) -> bool:
        tracker, state, steps = c.trackers[0], c.state, int(config.steps)
        step, stopped = tracker.step, bool(state.stopped)
        if progress is not None:
            hw = tuple(content_rgb.shape[:2])
            progress(loop.Progress(step, steps, tracker.latest(), (step - c.start_step) / max(c.elapsed_s, 1e-9),
                                  c.start_step, scale, scales, hw,
                                  f"scale {scale + 1}/{scales}, {hw[1]}x{hw[0]}" if scales > 1 else "",
                                  estimates))
        if snapshot is not None and config.save_every and step % config.save_every == 0 and step < steps:
            snapshot(step, image.to_rgb(tracker.last_finite, weights.source))
        if on_image is not None:
            on_image(step, image.to_rgb(tracker.last_finite, weights.source))
        stop_now = should_stop is not None and should_stop()
        if rows is not None:  # over several processes: all stop (and checkpoint) at the same step
            stop_now = rows.agree(stop_now)
        if checkpoint_path and step < steps and not stopped and (
            stop_now or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            checkpoint.save(checkpoint_path, carry=state, key=c.loop_key, fingerprint=fp, factors=c.factors[0],
                            history=tracker.history, scale=scale, run_s=c.before_s + c.elapsed_s)
        return stop_now

    ((result, record),) = job.run(problem, settings, length, [job_inputs], weights, placement=rows,
                                  resume=resume_from if checkpoint_path and resume else None,
                                  after_chunk=after_chunk)
    if rows is not None:
        record["shard_image"] = {"devices": rows.devices, "processes": rows.processes, "rows": rows.rows,
                                 "padded_rows": rows.padded, "rows_per_device": rows.padded // rows.devices}
    if record["status"] == "interrupted":
        err = Interrupted(f"interrupted at step {record['steps_run']}; checkpoint {checkpoint_path}; continue "
                          f"with --resume")
        err.image, err.record = result, record
        raise err
    if record["status"] == "nonfinite":
        err = NonFiniteLoss(f"the energy became non-finite at step {record['nonfinite']['step']}; kept the last "
                            f"finite image (try a smaller --lr or other weights)")
        err.image, err.record = result, record
        raise err
    return result, record
