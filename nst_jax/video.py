"""Command line: ``python -m nst_jax.video --input=clip.mp4 --style=painting.jpg --output=out.mp4``.

Stylises every frame of a video file (mp4, mov, webm, gif, ...) or a folder of frames, keeping the result stable
from frame to frame as Ruder, Dosovitskiy and Brox 2016 do (:mod:`nst_jax.clip`: optical flow, the previous
stylised frame warped as the start, a temporal term on the pixels where the flow holds). Writes:

    out.mp4          H.264, the input's frame rate and frame count (or --output=FOLDER: PNG frames there)
    out_frames/      each finished frame (frame_00000.png) and its record (frame_00000.json); --resume
                     continues after the last one, and out.mp4 is assembled from them
    out.json         the record: settings, weights, per frame the steps, time, final energy and warping error,
                     the clip's mean warping error (written last: it marks a finished clip)
    out_compare.png  with --compare_with=OTHER.json: a few frames of that run above this run's

The run flags are the main program's (``--kernel``, ``--size``, ``--steps``, ``--style``, ...) and every config
field is set with ``--config.FIELD=VALUE``; each frame is one run of :func:`nst_jax.runner.stylize`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import sys
import time
from fractions import Fraction
from typing import Any

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from configs import default as default_config
from nst_jax import (
    cli,
    clip,
    compile_cache,
    demo,
    fast,
    flow,
    image,
    loop,
    report,
    runner,
    sheet,
    video_io,
)
from nst_jax import config as cfg_lib
from nst_jax import record as record_lib
from nst_jax import weights as weights_lib
from nst_jax.atomic import check_writable, write_json
from nst_jax.errors import ConfigError, UserError

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# The main program's run flags, less those that name one image's files or split one image: a clip's frames are
# --input, its checkpoints are its finished frames, and masks fit one picture.
EXCLUDED_RUN_FLAGS = ("content", "save_every", "checkpoint_every", "shard_image", "content_mask", "style_mask",
                      "mask_fallback")
VIDEO_RUN_FLAGS = tuple(f.name for f in cli.RUN_FLAGS if f.name not in EXCLUDED_RUN_FLAGS)
SHEET_FRAMES = 4

# Command line: the flags are defined only when this module runs as a program (:func:`run_main`), so importing
# nst_jax.video (its :func:`run`, from Python or the tests) leaves absl's flags alone.


def define_flags() -> None:
    """The command line's flags: the main program's run flags (less :data:`EXCLUDED_RUN_FLAGS`) and the video's."""
    defaults = default_config.get_config()
    defaults.output = "out.mp4"  # a video's default output (main sets it when --output is not given)
    config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "default.py"), "Run configuration file.",
                                    lock_config=True)
    cli.define_run_flags(VIDEO_RUN_FLAGS, defaults=defaults, helps={
        "output": "Output video (.mp4, H.264) or a folder for PNG frames; the record goes beside it as .json.",
        "resume": "Continue an interrupted clip after its last finished frame (kept in OUTPUT_frames/).",
        "size": "Long edge of the output frames in pixels (an .mp4's sides rounded down to even numbers).",
        "steps": "Optimisation steps per frame.",
    })
    flags.adopt_module_key_flags(cli)
    flags.DEFINE_string("input", None, "Input video file (mp4, mov, webm, gif, ...) or a folder of frames "
                        "(PNG/JPEG, in natural order of their names).")
    flags.DEFINE_string("frames", "", "Part of the clip: START:END, 0-based frame numbers, END excluded (e.g. 0:48); "
                        "empty: every frame.")
    flags.DEFINE_float("temporal_weight", clip.TEMPORAL_WEIGHT, "Temporal term's weight relative to the content's, "
                       "gamma/alpha of Ruder et al. 2016 (docs/video.md says how it scales); 0: independent frames.")
    flags.DEFINE_enum("flow", "dis", list(flow.METHODS), "Optical flow (OpenCV): dis (dense inverse search) or "
                      "farneback.")
    flags.DEFINE_float("cut_kept", flow.CUT_MIN_KEPT, "A frame whose flow keeps fewer than this fraction of its pixels "
                       "starts afresh (a scene cut).")
    flags.DEFINE_float("cut_histogram", flow.CUT_MAX_HISTOGRAM, "A frame whose colour histogram is further than this "
                       "(Hellinger distance, 0-1) from the previous frame's starts afresh (a scene cut).")
    flags.DEFINE_float("fps", None, "Frame rate of a folder-of-frames input (default 25); a video keeps its own.")
    flags.DEFINE_string("compare_with", None, "The record (.json) of another run of the same clip, e.g. with "
                        "--temporal_weight=0: writes OUTPUT_compare.png, a few of its frames above this run's.")
    flags.DEFINE_string("model", None, "A trained feed-forward network (python -m nst_jax.train's model.msgpack) "
                        "applied to each frame instead of the optimisation (adain: with --style); the flow-based "
                        "consistency is then a post-process (--consistency).")
    flags.DEFINE_float("consistency", 1.0, "With --model: the weight lambda of the warped previous stylised frame "
                       "against the network's output, per kept pixel y = (f(x) + lambda w) / (1 + lambda); 0: "
                       "independent frames.")
    flags.DEFINE_string("compile_cache", None, f"Folder of JAX's persistent compilation cache, or 'off' (default: "
                        f"${compile_cache.ENV}, else {compile_cache.default_dir()}).")


FLAGS = flags.FLAGS


def output_paths(output: str) -> tuple[str, str, str]:
    """(kind ``"mp4"`` or ``"folder"``, the frames folder, the record): ``out.mp4`` -> ``out_frames/`` and
    ``out.json``; a folder (no extension, or ending in /) -> itself and ``FOLDER.json``."""
    if not output:
        raise UserError("--output is empty")
    ext = os.path.splitext(output.rstrip("/"))[1].lower()
    if ext == ".mp4" and not output.endswith("/") and not os.path.isdir(output):
        stem = os.path.splitext(output)[0]
        return "mp4", stem + "_frames", stem + ".json"
    if ext and not os.path.isdir(output):
        raise UserError(f"--output={output}: unsupported extension {ext}; use .mp4, or a folder for PNG frames")
    folder = os.path.normpath(output)
    return "folder", folder, folder + ".json"


def _fingerprint(config: Any, source: video_io.Source, start: int, end: int, hw: tuple[int, int],
                 made_by: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What decides a clip's frames: a resumed clip must match it."""
    free = ("output", "resume", "log_every", "save_every", "checkpoint_every")
    return {"config": {k: v for k, v in config.to_dict().items() if k not in free},
            "input": os.path.abspath(source.path), "frames": [start, end], "size": list(hw),
            "weights": made_by["sha256"], **settings}


def _made_by(config: Any, model: Any) -> tuple[Any, dict[str, Any]]:
    """(the VGG-19 weights of an optimisation, or None with a model; what made the frames, for the record:
    path, sha256 and ``described``, the line every output names)."""
    if model is not None:
        return None, {"model": model.model.path, "sha256": model.model.params_sha256, "net": model.net,
                      "described": "model " + fast.describe(model.model)}
    weights = weights_lib.load(weights_lib.resolve(config.weights or None, config.source))
    return weights, {"path": weights.path, "source": weights.source, "sha256": weights.sha256,
                     "origin": weights.origin, "described": weights_lib.describe(weights)}


def _frame_function(spec: Any, model: Any, weights: Any, temporal_weight: float, consistency: float,
                    hw: tuple[int, int], progress: Any, stop: Any) -> tuple[clip.FrameFn, float]:
    """The frame function and the temporal term's energy multiplier (0 for a network)."""
    config = spec.config
    if model is None:
        return clip.optimisation_frames(spec, _style_images(config), weights, temporal_weight, hw,
                                        progress=progress, should_stop=stop)
    styles = _style_images(config) if model.net == "adain" else None
    return clip.network_frames(model, styles, consistency), 0.0


def _check_model_styles(config: Any, model: Any) -> None:
    """A network's styles: built into a johnson network, given (--style) to an adain one."""
    if model is not None and model.net == "johnson" and config.style:
        raise ConfigError("--style: a johnson network has its style built in; give no --style with it")
    if model is not None and model.net == "adain" and not config.style:
        raise ConfigError("--style: an adain network needs a style image (--style=painting.jpg)")


def _prepare_folder(folder: str, fingerprint: dict[str, Any], resume: bool, count: int) -> int:
    """Creates or checks the frames folder; returns the frames already done (0 unless ``resume``)."""
    state = os.path.join(folder, "run.json")
    canonical = json.loads(json.dumps(fingerprint, default=str))
    if resume:
        try:
            with open(state) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            raise UserError(f"--resume: no frames of an earlier run in {folder} (run without --resume to start "
                            f"afresh)") from None
        if saved != canonical:
            differ = sorted(k for k in set(saved) | set(canonical) if saved.get(k) != canonical.get(k))
            if "config" in differ:
                c1, c2 = saved.get("config", {}), canonical["config"]
                differ += sorted(f"config.{k}" for k in set(c1) | set(c2) if c1.get(k) != c2.get(k))
            raise UserError(f"--resume: the frames in {folder} are of another run (it differs in "
                            f"{', '.join(differ)}); run without --resume to start afresh")
        return min(clip.frames_done(folder), count)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output: cannot create folder {folder} ({e.strerror or e})") from None
    for old in glob.glob(os.path.join(folder, "frame_[0-9]*.*")):
        os.remove(old)  # an earlier clip's frames: this run starts afresh
    write_json(state, canonical, what="frames folder state")
    return 0


def _style_images(config: Any) -> list[np.ndarray]:
    """The style images, loaded once for every frame (the demo painting without --style)."""
    return [demo.style_image(1024) if not s else image.load_image(s, min_side=image.MIN_INPUT_SIDE)
            for s in runner.style_inputs(config.style or None)]


def _check_settings(temporal_weight: float, cut_kept: float, cut_histogram: float) -> None:
    if not math.isfinite(temporal_weight) or temporal_weight < 0:
        raise ConfigError(f"--temporal_weight={temporal_weight}: must be a finite number >= 0")
    if not 0 <= cut_kept <= 1:
        raise ConfigError(f"--cut_kept={cut_kept}: must be between 0 and 1")
    if not 0 <= cut_histogram <= 1:
        raise ConfigError(f"--cut_histogram={cut_histogram}: must be between 0 and 1")


def run(config: Any, *, input_path: str, frames: str = "", temporal_weight: float = clip.TEMPORAL_WEIGHT,
        flow_method: str = "dis", cut_kept: float = flow.CUT_MIN_KEPT,
        cut_histogram: float = flow.CUT_MAX_HISTOGRAM, fps: float | None = None,
        compare_with: str | None = None, model: str | None = None, consistency: float = 1.0) -> int:
    """Stylises a clip and writes its outputs (module docstring). Returns the exit status: 0 done, 130
    interrupted (the finished frames kept); raises UserError before writing anything for bad inputs.
    ``model``: a trained network's file (:mod:`nst_jax.fast`) instead of the optimisation, its frames held
    to the warped previous ones with weight ``consistency`` (:func:`nst_jax.clip.network_frames`)."""
    started = time.time()
    _check_settings(temporal_weight, cut_kept, cut_histogram)
    if not math.isfinite(consistency) or consistency < 0:
        raise ConfigError(f"--consistency={consistency}: must be a finite number >= 0")
    network = fast.load(model) if model else None  # a bad or damaged model file: one line, before any output
    spec = cfg_lib.parse(config)  # the run's one parse
    if int(config.scales) > 1 and config.sgd.denoise:
        raise ConfigError("--config.sgd.denoise: not with --scales > 1")
    kind, folder, record_path = output_paths(config.output)
    source = video_io.open_source(input_path)
    start, end = video_io.parse_range(frames, source.frame_count)
    count = end - start
    if fps is not None and source.kind == "video":
        raise ConfigError("--fps is the frame rate of a folder of frames; a video keeps its own")
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ConfigError(f"--fps={fps}: must be > 0")
    rate = source.fps or (Fraction(fps).limit_denominator(1001) if fps else video_io.DEFAULT_FPS)
    size, _ = cfg_lib.default_size(config)
    hw = image.resized_shape(source.size, size)
    if kind == "mp4":
        hw = video_io.even_shape(hw)
    config = spec.config.copy_and_resolve_references()
    with config.unlocked():
        config.size = max(hw)
    spec = dataclasses.replace(spec, config=config)  # the size changes neither the terms nor the style weight
    if network is None:  # the optimisation's VGG layers need frames of some size; a network takes any
        cfg_lib.check_sizes(spec.problem(), [("content", np.zeros((*hw, 3)), f"frames of {input_path}")])
    written = {os.path.realpath(p) for p in (config.output, folder, record_path)}
    if os.path.realpath(input_path) in written:
        raise UserError(f"--output={config.output}: would overwrite the input {input_path}")
    check_writable(record_path, "out.mp4")
    if compare_with and not os.path.isfile(compare_with):
        raise UserError(f"--compare_with={compare_with}: no such record")
    weights, made_by = _made_by(config, network)
    settings = {"temporal_weight": temporal_weight, "flow": flow_method, "cut_kept": cut_kept,
                "cut_histogram": cut_histogram}
    if network is not None:
        settings = {**settings, "temporal_weight": 0.0, "model": made_by["model"], "consistency": consistency}
    _check_model_styles(config, network)
    done = _prepare_folder(folder, _fingerprint(config, source, start, end, hw, made_by, settings),
                           bool(config.resume), count)
    for note in cfg_lib.machine_notes(config):
        print(note, file=sys.stderr, flush=True)
    print(f"{input_path}: {count} frame(s) at {float(rate):g} fps, {hw[1]}x{hw[0]} px"
          + (f"; {done} done, continuing" if done else ""), file=sys.stderr, flush=True)

    bar = report.ProgressBar()
    current = {"frame": done}

    def progress(p: loop.Progress) -> None:
        label = f"frame {current['frame'] + 1}/{count}" + (f", {p.label}" if p.label else "")
        bar(dataclasses.replace(p, label=label))

    def on_frame(r: dict[str, Any]) -> None:
        current["frame"] = r["index"] + 1
        bar.close()
        error = "" if r["warping_error"] is None else f", warping error {r['warping_error']:.3g} " \
                                                      f"(kept {r['kept_fraction']:.0%})"
        cut = "; scene cut: starts afresh" if r["cut"] else ""
        print(f"frame {r['index'] + 1}/{count}: {r['steps']} steps in {r['time_s']:.1f} s{error}{cut}",
              file=sys.stderr, flush=True)

    with cli.StopOnInterrupt() as stop:
        frame_fn, multiplier = _frame_function(spec, network, weights, temporal_weight, consistency, hw, progress,
                                               stop)
        frames_in = (image.resize(rgb, hw) for rgb in video_io.read_frames(source, start, end))
        prior = consistency > 0 if network is not None else temporal_weight > 0
        try:
            finished = clip.run_frames(frames_in, count, frame_fn, folder, done=done, temporal=prior,
                                       method=flow_method, min_kept=cut_kept, max_histogram=cut_histogram,
                                       should_stop=stop, on_frame=on_frame)
        except runner.Interrupted:
            finished = False
        if not finished:
            bar.close()
            n = clip.frames_done(folder)
            print(f"interrupted: {n} of {count} frame(s) done in {folder}; continue with --resume",
                  file=sys.stderr, flush=True)
            return record_lib.EXIT_CODES["interrupted"]
    records = clip.frame_records(folder, count)
    if kind == "mp4":
        video_io.write_mp4(config.output, (image.load_image(clip.frame_path(folder, k)) for k in range(count)), rate)
    record = _record(config, input_path, source, start, end, rate, hw, kind, folder, made_by, settings, multiplier,
                     records, time.time() - started)
    write_json(record_path, record, what="record")
    mean = record["mean_warping_error"]
    print(f"wrote {config.output if kind == 'mp4' else folder + '/'} and {record_path} ({count} frames, "
          f"{sum(r['steps'] for r in records)} steps in {sum(r['time_s'] for r in records):.1f} s; mean warping "
          f"error {'n/a' if mean is None else f'{mean:.4g}'}; {len(record['cuts'])} scene cut(s); "
          f"{made_by['described']})", file=sys.stderr)
    if compare_with:
        path = compare_path(config.output)
        write_compare(path, compare_with, record_path)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _record(config: Any, input_path: str, source: video_io.Source, start: int, end: int, rate: Fraction,
            hw: tuple[int, int], kind: str, folder: str, made_by: dict[str, Any], settings: dict[str, Any],
            multiplier: float, records: list[dict[str, Any]], total_s: float) -> dict[str, Any]:
    """The clip's record (``out.json``)."""
    import nst_jax

    mean = clip.mean_warping_error(records)
    return {
        "nst_jax": nst_jax.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "done",
        "config": config.to_dict(),
        "input": {"path": input_path, "kind": source.kind, "frame_count": source.frame_count,
                  "fps": None if source.fps is None else str(source.fps), "size": list(source.size),
                  "frames": [start, end]},
        "output": {"path": os.path.abspath(config.output), "kind": kind, "frames": os.path.abspath(folder),
                   "frame_count": end - start, "fps": str(rate), "size": list(hw)},
        "weights": made_by,
        "device": record_lib.device_info(),
        "versions": record_lib.versions(),
        "temporal": {**settings, "energy_weight": multiplier,
                     "check": {"occlusion": [flow.OCCLUSION_RELATIVE, flow.OCCLUSION_ABSOLUTE],
                               "motion_boundary": [flow.BOUNDARY_RELATIVE, flow.BOUNDARY_ABSOLUTE]}},
        "frames": records,
        "mean_warping_error": mean,
        "cuts": [r["index"] for r in records if r["cut"]],
        "steps_run": sum(r["steps"] for r in records),
        "run_s": sum(r["run_s"] for r in records),
        "compile_s": sum(r["compile_s"] for r in records),
        "frame_s_mean": float(np.mean([r["time_s"] for r in records])),
        "total_s": total_s,
    }


def _setting(record: dict[str, Any]) -> str:
    """What a run's temporal setting was, for the sheet: its temporal weight, or a network's consistency."""
    t = record["temporal"]
    return f"consistency {t['consistency']:g}" if "model" in t else f"temporal_weight {t['temporal_weight']:g}"


def compare_path(output: str) -> str:
    """``out.mp4`` -> ``out_compare.png``; a folder ``out`` -> ``out_compare.png`` beside it."""
    return os.path.splitext(os.path.normpath(output))[0] + "_compare.png"


def write_compare(path: str, other_record: str, this_record: str, frames: int = SHEET_FRAMES) -> None:
    """A sheet of a few frames: the other run's row above this run's, each labelled with its temporal weight
    (or a network's consistency), the frame and its warping error, the footer naming what made each run's
    frames (weights or model: :func:`nst_jax.sheet.contact_sheet`)."""
    runs = []
    for path_ in (other_record, this_record):
        try:
            with open(path_) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            raise UserError(f"--compare_with: cannot read the record {path_} ({e})") from None
    count = min(len(r["frames"]) for r in runs)
    picks = sorted({int(round(v)) for v in np.linspace(1 if count > 1 else 0, count - 1, min(frames, count))})
    tiles = []
    for r in runs:
        for k in picks:
            f = r["frames"][k]
            error = "" if f["warping_error"] is None else f" error {f['warping_error']:.3g}"
            tiles.append((image.load_image(clip.frame_path(r["output"]["frames"], k)),
                          f"{_setting(r)}\nframe {k}{error}"))
    means = "; ".join(f"{_setting(r)}: mean warping error "
                      f"{'n/a' if r['mean_warping_error'] is None else format(r['mean_warping_error'], '.4g')}"
                      for r in runs)
    made = sorted({r["weights"].get("described", "") for r in runs})
    grid = sheet.contact_sheet(tiles, columns=len(picks), tile=160, footer=f"{means}. {'; '.join(made)}")
    image.save_image(path, grid)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])} (flags take the form --name=value)")
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    if config.output == default_config.get_config().output:
        with config.unlocked():
            config.output = "out.mp4"  # the video's default output; --output (or --config.output) sets another
    cli.apply_run_flags(config)
    try:
        compile_cache.enable(FLAGS.compile_cache)
        status = run(config, input_path=FLAGS.input or "", frames=FLAGS.frames,
                     temporal_weight=FLAGS.temporal_weight, flow_method=FLAGS.flow, cut_kept=FLAGS.cut_kept,
                     cut_histogram=FLAGS.cut_histogram, fps=FLAGS.fps, compare_with=FLAGS.compare_with,
                     model=FLAGS.model, consistency=FLAGS.consistency)
    except UserError as e:
        cli.fail(str(e))
    sys.exit(status)


def run_main() -> None:
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run_main()
