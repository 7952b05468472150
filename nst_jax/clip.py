"""Stylising a clip frame by frame without flicker (Ruder, Dosovitskiy and Brox 2016): the frame loop.

For each frame i > 0 the loop computes the optical flow back to frame i-1 and where it holds
(:func:`nst_jax.flow.motion`), warps the previous stylised frame onto frame i, and hands the frame and that
:class:`Prior` to a *frame function* ``(content RGB, Prior | None) -> (stylised RGB, info)``. The optimisation
path (:func:`optimisation_frames`) starts from the warped frame and adds the temporal term
(:func:`nst_jax.transfer.temporal_loss`) on the kept pixels; a trained feed-forward network can replace it by
any callable of that signature (it may ignore the prior). A frame whose flow fails (a scene cut: most pixels
fail the consistency check, or the colours change) gets no prior and starts afresh.

Each finished frame is written to the frames folder as ``frame_NNNNN.png`` and then its record
``frame_NNNNN.json`` (atomically, in that order), so the folder always holds whole frames: an interrupted clip
continues from the last one (:func:`frames_done`), and the frame a run continues from is read back from its PNG,
the same 8-bit image an uninterrupted run warps (every run warps the frames as written).

Temporal weight. ``--temporal_weight`` is the paper's gamma/alpha, the temporal term's weight relative to the
content term's (reference code: temporal 1e3, content 5, so 200). Ruder et al.'s content term is a mean over
the D_c = h*w*C elements of relu4_2 and their temporal term a mean over the D = H*W*3 pixel values; this
project's content term is a sum (content_weight * sum ||F - P||^2). Dividing the project's energy by
content_weight * D_c gives Ruder's form, so the energy's multiplier is

    Problem.temporal_weight = gamma/alpha * content_weight * D_c                      (:func:`energy_weight`)

assuming, as for any ReLU network fed inputs of another scale, that the features scale with the pixels: the
ratio of the content and temporal terms is then the same in the Caffe 0-255 space of the reference code and in
the torchvision space used here. Style is balanced against content (``--balance=auto``), so the temporal term
keeps its relation to both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import config as cfg_lib
from nst_jax import flow, image, job, loop, runner, transfer
from nst_jax.atomic import write_json

TEMPORAL_WEIGHT = 200.0
"""gamma/alpha of Ruder et al. 2016 (their reference code: temporal weight 1e3, content weight 5)."""


@dataclasses.dataclass(frozen=True)
class Prior:
    """What frame i gets from frame i-1: the previous stylised frame warped onto it ((H, W, 3) RGB in [0, 1])
    and where the flow holds ((H, W) float32, 1 kept)."""

    warped: np.ndarray
    mask: np.ndarray


FrameFn = Callable[[np.ndarray, Prior | None], tuple[np.ndarray, dict[str, Any]]]
"""A frame function: (content frame, prior or None) -> (stylised frame, info for the frame's record); frames
are (H, W, 3) float32 RGB in [0, 1] of one size."""


def content_elements(problem: transfer.Problem, params: Any, hw: tuple[int, int]) -> float:
    """D_c: the content layers' element count h*w*C at an (H, W) image, averaged over the layers."""
    shapes = jax.eval_shape(lambda x: transfer.features(problem, params, x),
                            jax.ShapeDtypeStruct((*hw, 3), jnp.float32))
    return float(np.mean([np.prod(shapes[name].shape) for name in problem.content_layers]))


def energy_weight(gamma_over_alpha: float, content_weight: float, elements: float) -> float:
    """The temporal term's multiplier in this project's energy for the paper's gamma/alpha (module docstring)."""
    return float(gamma_over_alpha) * float(content_weight) * float(elements)


def optimisation_frames(spec: cfg_lib.RunSpec, styles: list[np.ndarray], weights: Any, temporal_weight: float,
                        hw: tuple[int, int], *, progress: Callable[[loop.Progress], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> tuple[FrameFn, float]:
    """The optimisation path's frame function for frames of (H, W) ``hw`` (:func:`nst_jax.runner.stylize` per
    frame; given a prior and ``temporal_weight`` > 0 it starts from the warped frame and adds the temporal term)
    and the energy's temporal multiplier (0 without the term). ``spec``: the run's parsed config, whose size
    must be max(``hw``). Raises
    :class:`nst_jax.runner.Interrupted` when ``should_stop`` stops a frame."""
    config = spec.config
    multiplier = 0.0
    if temporal_weight > 0:
        elements = content_elements(spec.problem(), weights.params, hw)
        multiplier = energy_weight(temporal_weight, config.content_weight, elements)

    def run(rgb: np.ndarray, prior: Prior | None) -> tuple[np.ndarray, dict[str, Any]]:
        extra: dict[str, Any] = {}
        if prior is not None and multiplier > 0:
            extra = {"init": start_image(rgb, prior),
                     "temporal": job.TemporalTarget(prior.warped, prior.mask, multiplier)}
        result, record = runner.stylize(rgb, styles, spec, weights=weights, progress=progress,
                                        should_stop=should_stop, **extra)
        final = record["final_losses"] or {}
        return result, {"status": record["status"], "steps": record["steps_run"], "run_s": record["run_s"],
                        "compile_s": record["compile_s"], "final_energy": final.get("total"),
                        "final_losses": final, "start": "warped previous frame" if extra else config.init}

    return run, multiplier


def network_frames(stylize: Callable[..., np.ndarray], styles: list[np.ndarray] | None = None,
                   consistency: float = 1.0) -> FrameFn:
    """A trained feed-forward network's frame function (``stylize``: :func:`nst_jax.fast.load`'s callable; adain
    also takes ``styles``), with the flow's consistency as a post-process.

    Given a prior, each pixel becomes the minimiser of ||y - f(x)||^2 + lambda c ||y - w||^2: the network's output
    f(x) held against Ruder et al.'s temporal term (w the previous stylised frame warped, c its kept mask),
    y = (f(x) + lambda c w) / (1 + lambda c), lambda = ``consistency``; 0, no prior or a cut: f(x) itself."""
    def run(rgb: np.ndarray, prior: Prior | None) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.time()
        out = stylize(rgb) if styles is None else stylize(rgb, styles)
        run_s = time.time() - t0
        if prior is not None and consistency > 0:
            c = consistency * prior.mask[..., None]
            out = (out + c * prior.warped) / (1.0 + c)
        return out.astype(np.float32), {"status": "done", "steps": 0, "run_s": run_s, "compile_s": 0.0,
                                        "final_energy": None, "final_losses": {},
                                        "start": "network output, blended with the warped previous frame"
                                        if prior is not None and consistency > 0 else "network output"}

    return run


def start_image(rgb: np.ndarray, prior: Prior) -> np.ndarray:
    """Where frame i's optimisation starts: the warped previous stylised frame where the flow holds, the frame
    itself where it does not (disocclusions, motion boundaries), so newly revealed regions start as a first
    frame does rather than from the warp's repeated border pixels, which few steps do not undo."""
    c = prior.mask[..., None]
    return (c * prior.warped + (1.0 - c) * rgb).astype(np.float32)


def frame_path(folder: str, index: int, ext: str = ".png") -> str:
    return os.path.join(folder, f"frame_{index:05d}{ext}")


def frames_done(folder: str) -> int:
    """How many frames from the first have both their image and their record in ``folder``."""
    k = 0
    while os.path.exists(frame_path(folder, k)) and os.path.exists(frame_path(folder, k, ".json")):
        k += 1
    return k


def frame_records(folder: str, count: int) -> list[dict[str, Any]]:
    """The records of the first ``count`` frames of ``folder``."""
    out = []
    for k in range(count):
        with open(frame_path(folder, k, ".json")) as f:
            out.append(json.load(f))
    return out


def run_frames(frames: Iterable[np.ndarray], count: int, frame_fn: FrameFn, folder: str, *, done: int = 0,
               temporal: bool = True, method: str = "dis", min_kept: float = flow.CUT_MIN_KEPT,
               max_histogram: float = flow.CUT_MAX_HISTOGRAM, should_stop: Callable[[], bool] | None = None,
               on_frame: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Stylises ``count`` frames (an iterable of (H, W, 3) RGB in [0, 1], all at the run's size) into
    ``folder``, continuing after the first ``done`` frames already there. ``temporal``: hand each frame its
    :class:`Prior` (else every frame is independent; the flow is still computed, to measure the warping error).
    ``on_frame`` is called with each finished frame's record. Returns False when ``should_stop`` stopped the
    loop between frames (a frame stopped inside raises :class:`nst_jax.runner.Interrupted`)."""
    prev_in = prev_out = None
    for i, rgb in enumerate(frames):
        if i >= count:
            break
        if i < done - 1:
            continue
        if i == done - 1:  # the frame the run continues from, as written
            prev_in, prev_out = rgb, image.load_image(frame_path(folder, i))
            continue
        if should_stop is not None and should_stop():
            return False
        t0 = time.time()
        m = warped = None
        if prev_in is not None:
            m = flow.motion(prev_in, rgb, method, min_kept, max_histogram)
            warped = flow.warp_frame(prev_out, m.backward)
        prior = Prior(warped, m.mask) if temporal and m is not None and not m.cut else None
        out, info = frame_fn(rgb, prior)
        out = image.to_uint8(out).astype(np.float32) / 255.0  # what the PNG holds: the next frame warps that
        record = {"index": i, **info, "time_s": time.time() - t0,
                  "kept_fraction": None if m is None else m.kept_fraction,
                  "histogram_distance": None if m is None else m.histogram_distance,
                  "cut": bool(m is not None and m.cut), "prior": prior is not None,
                  "warping_error": None if m is None or m.cut else flow.warping_error(out, warped, m.mask)}
        image.save_image(frame_path(folder, i), out)
        write_json(frame_path(folder, i, ".json"), record, what="frame record")
        if on_frame is not None:
            on_frame(record)
        prev_in, prev_out = rgb, out
    return True


def mean_warping_error(records: list[dict[str, Any]]) -> float | None:
    """The clip's mean warping error over the frames that have one (not the first, not a cut)."""
    values = [r["warping_error"] for r in records if r.get("warping_error") is not None
              and np.isfinite(r["warping_error"])]
    return float(np.mean(values)) if values else None
