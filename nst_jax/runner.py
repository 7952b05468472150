"""Running a style transfer end to end: inputs, weights, the chunked optimisation loop, the run record.

``stylize`` is the Python API (also what ``python -m nst_jax.main`` calls); the numerics live in
:mod:`nst_jax.transfer`. Nothing here prints: progress goes to an optional callback.
"""

from __future__ import annotations

import datetime
import functools
import math
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nst_jax
from nst_jax import checkpoint, color, demo, image, optimizers, transfer
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


def _init_image(config: Any, content: np.ndarray, key: jax.Array, source: str) -> jax.Array:
    init = config.init
    if init == "content":
        return image.preprocess(jnp.asarray(content), source)
    if init == "noise":
        return image.preprocess(jax.random.uniform(key, content.shape, jnp.float32), source)
    rgb = image.resize(image.load_image(init, min_side=image.MIN_INPUT_SIDE), content.shape[:2])
    return image.preprocess(jnp.asarray(rgb), source)


def versions() -> dict[str, str]:
    import flax
    import jaxlib
    import optax

    return {
        "nst_jax": nst_jax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
    }


def device_info() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count(),
            "host": platform.node()}


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
    content_rgb, style_rgbs = resized_inputs(content_rgb, [rgb for rgb, _ in styles], transfer.default_size(config)[0],
                                             config)
    return (content_rgb, content_desc), list(zip(style_rgbs, [desc for _, desc in styles], strict=True))


def resized_inputs(content_rgb: np.ndarray, style_rgbs: list[np.ndarray], long_edge: int, config: Any,
                   factor: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """The content at ``long_edge`` px and each style at its size for it (``transfer.style_shape``; ``factor``
    scales an explicit style size, for the coarse scales of a coarse-to-fine run)."""
    content_rgb = image.resize_long_edge(content_rgb, long_edge)
    return content_rgb, [image.resize(rgb, transfer.style_shape(content_rgb.shape[:2], rgb.shape[:2], config,
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


ProgressFn = Callable[[int, int, dict[str, float], float], None]
SnapshotFn = Callable[[int, np.ndarray], None]


def stylize(
    content: ImageLike,
    style: ImageLike | list[ImageLike],
    config: Any,
    *,
    weights: weights_lib.Weights | None = None,
    progress: ProgressFn | None = None,
    snapshot: SnapshotFn | None = None,
    checkpoint_path: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stylises ``content`` with ``style``.

    Args:
      content: image file path, (H, W, 3) RGB array in [0, 1], or ``None``/``""`` for the demo image.
      style: likewise, or several (a list, or comma-separated paths) blended with ``config.style_blend``.
      config: a ``ConfigDict`` as in ``configs/default.py``.
      weights: loaded VGG-19 weights; default: ``config.weights`` or the cached file.
      progress: called between chunks with (step, steps, latest loss terms, iterations per second).
      snapshot: called with (step, RGB image) every ``config.save_every`` steps (of the last scale).
      checkpoint_path: where to write a checkpoint every ``config.checkpoint_every`` steps and on
        interruption (and read it from with ``config.resume``); ``None``: no checkpoints.
      should_stop: polled between chunks; when it returns True the run checkpoints and raises Interrupted.

    With ``config.scales`` = K > 1 the run is coarse to fine: K sizes, each twice the last, ending at the
    content size; each scale runs ``config.steps`` steps and starts from the previous result upsampled.

    Returns:
      (the result, (H, W, 3) float32 RGB in [0, 1]; the run record, a JSON-serialisable dict).

    Raises:
      UserError: bad inputs or config (one-line message); NonFiniteLoss carries the last finite image in
        ``.image`` and the partial record in ``.record``.
    """
    transfer.check_config(config)
    started = time.time()
    if weights is None:
        weights = weights_lib.load(weights_lib.resolve(config.weights or None, config.source))
    size, size_note = transfer.default_size(config)
    content_full, content_desc = _input(content, "content")
    styles_full = [_input(one, "style") for one in style_inputs(style)]
    blend = transfer.blend_weights(config, len(styles_full))
    sizes = scale_sizes(size, int(config.scales))
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
        init_rgb = None if result is None else image.resize(result, content_rgb.shape[:2])
        last = k == len(sizes) - 1
        try:
            result, record = _run_scale(
                run_content, run_styles, [d for _, d in styles_full], content_desc, blend, init_rgb, config,
                weights, scale=k, progress=progress, snapshot=snapshot if last else None,
                # On resume, the scales before the checkpoint's are replayed (deterministically) without
                # touching it; the checkpoint's own scale continues from it.
                checkpoint_path=checkpoint_path if resume_scale is None or k >= resume_scale else None,
                resume=resume_scale == k, should_stop=should_stop,
            )
        except (NonFiniteLoss, Interrupted) as e:
            e.image = _finish_colour(config, e.image, content_full, size)
            raise
        per_scale.append({"size": list(content_rgb.shape[:2]), "steps_run": record["steps_run"],
                          "compile_s": record["compile_s"], "run_s": record["run_s"],
                          "final_losses": record["final_losses"]})
    result = _finish_colour(config, result, content_full, size)
    record.update(
        size_note=size_note, scales=per_scale, total_s=time.time() - started,
        preserve_colors=config.preserve_colors,
        style={"inputs": [d for _, d in styles_full], "blend": blend, "size": record["style"]["size"]},
    )
    return result, record


def _finish_colour(config: Any, rgb: np.ndarray, content_full: np.ndarray, size: int) -> np.ndarray:
    """Under ``preserve_colors=luminance``: the result's luminance with the content's chroma."""
    if config.preserve_colors != "luminance":
        return rgb
    content_rgb = image.resize(image.resize_long_edge(content_full, size), rgb.shape[:2])
    return color.recombine_luminance(rgb, content_rgb).astype(np.float32)


def _run_scale(
    content_rgb: np.ndarray,
    style_rgbs: list[np.ndarray],
    style_descs: list[str],
    content_desc: str,
    blend: tuple[float, ...],
    init_rgb: np.ndarray | None,
    config: Any,
    weights: weights_lib.Weights,
    *,
    scale: int,
    progress: ProgressFn | None,
    snapshot: SnapshotFn | None,
    checkpoint_path: str | None,
    resume: bool,
    should_stop: Callable[[], bool] | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One optimisation at one size: the chunked loop, checkpoints, the record."""
    started = time.time()
    source = weights.source
    problem = transfer.problem_from_config(config, blend)
    transfer.check_sizes(problem, [("content", content_rgb, content_desc),
                                   *(("style", r, d) for r, d in zip(style_rgbs, style_descs, strict=True))])

    key = jax.random.key(config.seed)
    init_key, loop_key, balance_key, ref_key = jax.random.split(key, 4)
    params = jax.device_put(weights.params)
    c = image.preprocess(jnp.asarray(content_rgb), source)
    styles = [image.preprocess(jnp.asarray(rgb), source) for rgb in style_rgbs]
    if init_rgb is None:
        x0 = _init_image(config, content_rgb, init_key, source)
    else:
        x0 = image.preprocess(jnp.asarray(init_rgb), source)

    fp = checkpoint.fingerprint(
        dict(config.to_dict(), scale=scale), weights.sha256, content_rgb.shape[:2],
        [rgb.shape[:2] for rgb in style_rgbs], checkpoint.array_sha256(content_rgb),
        [checkpoint.array_sha256(rgb) for rgb in style_rgbs],
    )
    opt = optimizers.make(config.optimizer, config)
    # Copies: an optimiser state may alias x0 (L-BFGS keeps the last iterate), and the carry is donated.
    carry = (x0, jax.tree.map(jnp.copy, opt.init(x0)), jnp.int32(0), jnp.bool_(False))
    names = ["total", *transfer.term_names(problem)]
    history: dict[str, list[float]] = {"step": [], **{n: [] for n in names}}
    resumed_from = None
    factors = None
    if checkpoint_path and resume:
        carry, key_data, factors, history = checkpoint.load(checkpoint_path, template_carry=carry, fingerprint=fp)
        carry = jax.tree.map(jnp.asarray, carry)
        loop_key = jax.random.wrap_key_data(jnp.asarray(key_data))
        resumed_from = int(carry[2])

    t0 = time.time()
    tgt = jitted(("targets", problem), lambda: functools.partial(transfer.targets, problem))(params, c, styles)
    base = transfer.paper_scales(problem, params, x0)
    if factors is not None:
        pass  # from the checkpoint: the resumed run continues with exactly the same energy
    elif config.balance == "auto":
        x_ref = image.preprocess(jax.random.uniform(ref_key, content_rgb.shape, jnp.float32), source)
        norms_fn = jitted(("norms", problem), lambda: functools.partial(transfer.gradient_norms, problem))
        base_arrays = {k: jnp.float32(v) for k, v in base.items()}
        factors = transfer.balance_factors(norms_fn(params, tgt, base_arrays, x_ref, balance_key))
    else:
        factors = [1.0] * len(problem.terms)
    scales = {
        "content": jnp.float32(config.content_weight),
        "style": {k: jnp.float32(config.style_weight * factors[k[0]] * v) for k, v in base.items()},
    }
    setup_s = time.time() - t0

    settings = transfer.step_settings(config, source)
    length = transfer.chunk_length(config, (config.save_every, config.checkpoint_every if checkpoint_path else 0))
    opt_key = (config.optimizer, config.lr, tuple(sorted(config.sgd.to_dict().items())))
    chunk_fn = jitted(("chunk", problem, settings, length, opt_key),
                       lambda: transfer.make_chunk(problem, opt, settings, length), donate_argnums=0)

    t0 = time.time()
    compiled = chunk_fn.lower(carry, params, tgt, scales, loop_key).compile()
    compile_s = time.time() - t0

    step = int(carry[2])
    last_finite = np.asarray(carry[0])
    run_t0 = time.time()
    start_step = step
    nonfinite = None
    interrupted = False
    while step < config.steps and not bool(carry[3]):
        carry, terms = compiled(carry, params, tgt, scales, loop_key)
        terms = jax.device_get(terms)
        x_host = np.asarray(carry[0])
        new_step = int(carry[2])
        for i in range(new_step - step):
            t = step + i
            row = {n: float(terms[n][i]) for n in names}
            if not all(math.isfinite(v) for v in row.values()):
                nonfinite = (t, row)
                break
            if t % config.log_every == 0:
                history["step"].append(t)
                for n in names:
                    history[n].append(row[n])
        if nonfinite is not None:
            break
        if not np.all(np.isfinite(x_host)):
            nonfinite = (new_step, {})
            break
        last_finite = x_host
        step = new_step
        elapsed = time.time() - run_t0
        if progress is not None:
            latest = {n: history[n][-1] for n in names} if history["step"] else {}
            progress(step, int(config.steps), latest, (step - start_step) / max(elapsed, 1e-9))
        if snapshot is not None and config.save_every and step % config.save_every == 0 and step < config.steps:
            snapshot(step, _to_rgb(last_finite, source))
        stop_now = should_stop is not None and should_stop()
        if checkpoint_path and step < config.steps and not bool(carry[3]) and (
            stop_now or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            checkpoint.save(checkpoint_path, carry=carry, key=loop_key, fingerprint=fp, factors=factors,
                            history=history, scale=scale)
        if stop_now:
            interrupted = step < config.steps and not bool(carry[3])
            break
    run_s = time.time() - run_t0

    final_terms = None
    if nonfinite is None and not interrupted:
        value, final = jitted(("energy", problem), lambda: functools.partial(transfer.energy, problem))(
            params, tgt, scales, jnp.asarray(last_finite), jax.random.fold_in(loop_key, step)
        )
        final_terms = {"total": float(value), **{k: float(v) for k, v in final.items()}}

    result = _to_rgb(last_finite, source)
    record = {
        "nst_jax": nst_jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "content": {"input": content_desc, "size": list(content_rgb.shape[:2])},
        "style": {"inputs": style_descs, "size": [list(rgb.shape[:2]) for rgb in style_rgbs]},
        "weights": {"path": weights.path, "source": source, "sha256": weights.sha256, "origin": weights.origin},
        "device": device_info(),
        "versions": versions(),
        "terms": [{"method": t.method, "weight": t.weight, "params": t.params} for t in problem.terms],
        "balance": {"mode": config.balance,
                    "factors": {t.method: f for t, f in zip(problem.terms, factors, strict=True)}},
        "paper_scales": {f"{problem.terms[i].method}/{layer}": v for (i, layer), v in base.items()},
        "steps_run": step,
        "resumed_from": resumed_from,
        "stopped_early": step < config.steps and nonfinite is None and not interrupted,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "iterations_per_s": step / run_s if run_s > 0 else None,
        "scale_s": time.time() - started,
        "losses": history,
        "final_losses": final_terms,
    }
    if interrupted:
        err = Interrupted(f"interrupted at step {step}; checkpoint {checkpoint_path}; continue with --resume")
        err.image, err.record = result, record
        raise err
    if nonfinite is not None:
        t, row = nonfinite
        record["nonfinite"] = {"step": t, "terms": row}
        err = NonFiniteLoss(f"the energy became non-finite at step {t}; kept the last finite image "
                            f"(try a smaller --lr or other weights)")
        err.image, err.record = result, record
        raise err
    return result, record


_JITTED: dict[str, Any] = {}


def jitted(key: Any, build: Callable[[], Callable[..., Any]], **jit_kwargs: Any) -> Callable[..., Any]:
    """One jitted function per key, kept for the process: runs of the same problem (a notebook, the
    comparison, batch rounds, tests) reuse its compilations instead of tracing a fresh closure each time.
    The key is compared by ``repr``: a Problem holds dicts (method parameters), so it is not hashable."""
    cache_key = repr((key, sorted(jit_kwargs.items())))
    if cache_key not in _JITTED:
        _JITTED[cache_key] = jax.jit(build(), **jit_kwargs)
    return _JITTED[cache_key]


def _to_rgb(x: np.ndarray, source: str) -> np.ndarray:
    return np.clip(np.asarray(image.deprocess(jnp.asarray(x), source)), 0.0, 1.0).astype(np.float32)

