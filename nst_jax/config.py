"""A run config (``configs/default.py``, an ``ml_collections.ConfigDict``) checked and read into typed values.

Every check of a config value lives here and raises :class:`~nst_jax.errors.ConfigError` with one line that
names the flag, except the style methods' parameters: each method checks its own (``StyleMethod.check``), and
:func:`check_methods` has every registered method read its fields. The comma-separated fields (layers, weights,
methods) are parsed once, into the hashable :class:`~nst_jax.transfer.Problem` and
:class:`~nst_jax.transfer.StepSettings` that parametrise the compiled step, and the sizes of the images follow
from the config here too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from nst_jax import color, demo, image, losses, optimizers, strips, transfer, vgg
from nst_jax.errors import ConfigError, ImageError

BALANCES = ("auto", "none")
STYLE_RESIZES = ("keep_aspect", "match_content")
CPU_DEFAULT_SIZE = 256
ACCELERATOR_DEFAULT_SIZE = 512
# The bare command on a CPU: a few minutes (500 Gaussian steps at 256 px take about 9.5 minutes on 2 cores).
CPU_DEFAULT_STEPS = 200
ACCELERATOR_DEFAULT_STEPS = 500
CPU_MAX_CHUNK = 5
"""On CPU a chunk's steps are unrolled (see :func:`nst_jax.transfer.chunk`), so compile time grows with it."""


def csv(text: Any) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def method_names(kernel: Any) -> list[str]:
    """The methods of ``--kernel``: ``"linear+gaussian"`` -> ``["linear", "gaussian"]``. A fusion is written
    with ``+`` (as in ``compare --methods`` and the output names); ``,`` is read the same way."""
    return [part.strip().lower() for part in str(kernel).replace(",", "+").split("+") if part.strip()]


def floats(text: Any, what: str) -> list[float]:
    """Comma-separated finite, non-negative numbers of the flag ``what``."""
    try:
        values = [float(v) for v in csv(text)]
    except ValueError:
        raise ConfigError(f"--{what}={text!r}: expected comma-separated numbers") from None
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"--{what}={text!r}: weights must be finite and non-negative")
    return values


def parse_terms(config: Any) -> tuple[losses.StyleTerm, ...]:
    """The style terms of ``config.kernel`` (one method or a fusion, ``linear+gaussian``), with their weights and
    the parameters each method reads from the config (``from_config``)."""
    names = method_names(config.kernel)
    known = "|".join(losses.METHODS)
    if not names:
        raise ConfigError(f"--kernel is empty; expected one of {known} or a fusion")
    for m in names:
        if m not in losses.REGISTRY:
            raise ConfigError(f"--kernel={config.kernel}: unknown method {m!r}; expected {known} or a "
                              f"fusion of them joined by + (linear+gaussian)")
    if len(set(names)) != len(names):
        raise ConfigError(f"--kernel={config.kernel}: a method appears twice")
    weights = floats(config.kernel_weights, "kernel_weights") if csv(config.kernel_weights) else [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"--kernel_weights={config.kernel_weights}: {len(weights)} weight(s) for "
                          f"{len(names)} method(s) in --kernel={config.kernel}")
    try:
        return tuple(losses.StyleTerm(losses.REGISTRY[m].from_config(config), w)
                     for m, w in zip(names, weights, strict=True))
    except ValueError as e:
        raise ConfigError(f"--kernel={config.kernel}: {e}") from None


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run's config checked and parsed once, at the boundary (:func:`parse`): what the driver receives.

    ``config`` is the checked config with its step count resolved (what the run record shows and the I/O
    reads); ``terms`` the style terms with their methods; ``style_weight`` the run's resolved style weight.
    """

    config: Any
    terms: tuple[losses.StyleTerm, ...]
    style_weight: float

    def problem(self, blend: tuple[float, ...] = (1.0,)) -> transfer.Problem:
        """The :class:`~nst_jax.transfer.Problem` of the run, with the styles' blend weights."""
        c = self.config
        return transfer.Problem(
            content_layers=tuple(csv(c.content_layers)),
            style_layers=tuple(csv(c.style_layers)),
            layer_weights=tuple(floats(c.layer_weights, "layer_weights")),
            terms=self.terms,
            pooling=c.pooling,
            content_weight=float(c.content_weight),
            tv_weight=float(c.tv_weight),
            optimizer=c.optimizer,
            blend=tuple(blend),
            remat=bool(c.remat),
            dtype=str(c.dtype),
            strips=int(c.strips),
        )

    def settings(self, source: str) -> transfer.StepSettings:
        """The compiled-in step constants for weights of ``source``."""
        return _step_settings(self.config, source)

    def chunk_length(self, every: Sequence[int] = ()) -> int:
        """Steps per dispatch (:func:`chunk_length`)."""
        return chunk_length(self.config, every)


def parse(config: Any) -> RunSpec:
    """The :class:`RunSpec` of ``config``, every value checked (:class:`ConfigError` for one no run can use)."""
    terms = _check(config)
    return RunSpec(with_default_steps(config), terms, style_weight(config))


def check(config: Any) -> None:
    """Raises :class:`ConfigError` for values no run can use (:func:`parse` without its result)."""
    _check(config)


def _check(config: Any) -> tuple[losses.StyleTerm, ...]:
    """Raises :class:`ConfigError` for values no run can use; returns the style terms it parsed."""
    def positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
        if value is None or not isinstance(value, int) or value < (0 if allow_zero else 1):
            raise ConfigError(f"--{name}={value}: must be an integer {'>= 0' if allow_zero else '>= 1'}")

    def finite(name: str, value: float, low: float = 0.0) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise ConfigError(f"--{name}={value}: must be a finite number >= {low:g}")

    def one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
        if value not in allowed:
            raise ConfigError(f"--{name}={value}: expected one of {', '.join(allowed)}")

    if config.steps is not None:  # None: the machine's default (with_default_steps)
        positive_int("steps", config.steps, allow_zero=True)
    if config.size is not None:
        positive_int("size", config.size)
    if config.style_size is not None:
        positive_int("style_size", config.style_size)
    for name in ("chunk", "log_every", "scales"):
        positive_int(name, config[name])
    for name in ("save_every", "checkpoint_every"):
        positive_int(name, config[name], allow_zero=True)
    one_of("dtype", config.dtype, vgg.DTYPES)
    if not isinstance(config.remat, bool):
        raise ConfigError(f"--remat={config.remat}: expected true or false")
    one_of("preserve_colors", config.preserve_colors, color.PRESERVE_COLORS)
    floats(config.style_blend, "style_blend")  # the count is checked against the styles given (blend_weights)
    for name in ("content_weight", "tv_weight"):
        finite(name, config[name])
    style_weight(config)  # a number, or unset with an entry for this --kernel in style_weight_by_kernel
    finite("lr", config.lr)
    if config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be > 0")
    finite("style_scale", config.style_scale)
    if config.style_scale <= 0:
        raise ConfigError(f"--style_scale={config.style_scale}: must be > 0")
    one_of("optimizer", config.optimizer, optimizers.OPTIMIZERS)
    check_official_run(config)
    one_of("balance", config.balance, BALANCES)
    one_of("style_resize", config.style_resize, STYLE_RESIZES)
    if config.pooling not in vgg.POOLINGS:
        raise ConfigError(f"--pooling={config.pooling}: expected max or avg")
    check_methods(config)
    for field in ("content_layers", "style_layers"):
        try:
            vgg.check_layers(csv(config[field]))
        except ValueError as e:
            raise ConfigError(f"--{field}={config[field]}: {e}") from None
    layer_weights = floats(config.layer_weights, "layer_weights")
    if len(layer_weights) != len(csv(config.style_layers)):
        raise ConfigError(f"--layer_weights={config.layer_weights}: {len(layer_weights)} weight(s) for "
                          f"{len(csv(config.style_layers))} style layer(s)")
    terms = parse_terms(config)
    for t in terms:
        if not any(t.method.runs_at(name) for name in csv(config.style_layers)):
            raise ConfigError(f"--style_layers={config.style_layers}: the {t.name} method runs at none of them; it "
                              f"runs at {','.join(n for n in vgg.LAYERS if t.method.runs_at(n))}")
    check_masks(config, terms)
    positive_int("strips", config.strips)
    if not isinstance(config.shard_image, bool):
        raise ConfigError(f"--shard_image={config.shard_image}: expected true or false")
    if config.shard_image and config.strips > 1:
        raise ConfigError(f"--shard_image with --strips={config.strips}: not combined (a strip's rows would cut "
                          f"across the devices' shares); use one of them")
    if config.shard_image and config.get("content_mask", ""):
        raise ConfigError("--shard_image with --content_mask: masked runs are not split over devices yet; drop one")
    head = strips.head(csv(config.style_layers))
    if config.strips > 1 and head:
        for t in terms:
            if not t.method.streamable:
                raise ConfigError(
                    f"--strips={config.strips}: the {t.name} method ({t.method.describe()}) needs all of "
                    f"{head[0]}'s samples at once; strips work with the methods computed from sums ("
                    f"{', '.join(streamable_methods())}; poly with d=2, "
                    f"full or unbiased) at the layers up to {strips.HEAD_END}: use --strips=1 or deeper style layers")
    return terms


def streamable_methods() -> list[str]:
    """The methods computed from sums over positions (so from strips) at their default parameters."""
    return [name for name, cls in losses.REGISTRY.items() if cls().streamable]


def check_methods(config: Any) -> None:
    """Every registered method's parameters as the config sets them (``config_fields``, checked by the method),
    whether or not ``--kernel`` uses it: a bad value is refused before any run, in one line naming its field."""
    for name, cls in losses.REGISTRY.items():
        try:
            cls.from_config(config)
        except ValueError as e:  # a check outside the config's fields (from_config reports those as ConfigError)
            raise ConfigError(f"style method {name!r}: {str(e).splitlines()[0]}") from None


def check_masks(config: Any, terms: Sequence[losses.StyleTerm]) -> None:
    """The spatial-control fields: masks need a style, a style mask needs a content mask, and every method must
    take sample weights (all built-in ones do)."""
    content_mask, style_mask = config.get("content_mask", ""), config.get("style_mask", "")
    fallback = config.get("mask_fallback", "none")
    if fallback not in ("none", "whole"):
        raise ConfigError(f"--mask_fallback={fallback}: expected one of none, whole")
    if not (content_mask or style_mask):
        return
    if content_mask == demo.DEMO and config.content:
        raise ConfigError(f"--content_mask=demo is the demo content's label image: not with --content={config.content}")
    if demo.DEMO in csv(style_mask) and (config.style or style_mask != demo.DEMO):
        raise ConfigError("--style_mask=demo is the demo painting's label image: only without --style (and alone)")
    if not config.style and style_mask != demo.DEMO:
        raise ConfigError("--content_mask/--style_mask need --style: masks split a style image you give into "
                          "regions (or --style_mask=demo, the demo painting's)")
    if style_mask and not content_mask:
        raise ConfigError("--style_mask needs --content_mask: the content's regions say where each style region goes")
    for t in terms:
        if not t.method.takes_weights:
            raise ConfigError(f"--content_mask: the {t.name} method takes no sample weights, so it cannot align "
                              f"regions")


def check_official_run(config: Any) -> None:
    """The fields of ``configs/paper_caffe.py``'s official run: the SGD's update rule, TV gradient,
    projection and the final denoising (``sgd.denoise``, which needs scikit-image)."""
    sgd = config.sgd
    if sgd.update_rule not in optimizers.SGD_RULES:
        raise ConfigError(f"--config.sgd.update_rule={sgd.update_rule}: expected one of "
                          f"{', '.join(optimizers.SGD_RULES)}")
    if sgd.tv_gradient not in optimizers.TV_GRADIENTS:
        raise ConfigError(f"--config.sgd.tv_gradient={sgd.tv_gradient}: expected one of "
                          f"{', '.join(optimizers.TV_GRADIENTS)}")
    if not isinstance(sgd.project, bool):
        raise ConfigError(f"--config.sgd.project={sgd.project}: expected true or false")
    denoise = sgd.denoise
    if not isinstance(denoise, (int, float)) or not math.isfinite(denoise) or denoise < 0:
        raise ConfigError(f"--config.sgd.denoise={denoise}: must be a finite number >= 0")
    if denoise > 0:
        if int(config.scales) != 1:
            raise ConfigError(f"--config.sgd.denoise={denoise}: the final TV denoising is for single-scale runs; "
                              f"use --scales=1 or --config.sgd.denoise=0")
        if importlib.util.find_spec("skimage") is None:
            raise ConfigError(f"--config.sgd.denoise={denoise} needs scikit-image (pip install -e '.[paper]'); "
                              f"or pass --config.sgd.denoise=0")


def style_weight(config: Any) -> float:
    """The run's style weight: ``config.style_weight``, or where that is unset (None, as in
    ``configs/paper_caffe.py``) the entry of ``config.style_weight_by_kernel`` for the run's ``--kernel``.

    ``style_weight_by_kernel`` is ``"method:weight,...,default:weight"``: a run whose ``--kernel`` is exactly
    one listed method uses that method's weight, any other run (another method, a fusion) the ``default``
    one. ``"bn:1,default:5"`` is the official run.sh: style weight 1 for BN alone, 5 for everything else,
    fusions with BN included.
    """
    value = config.style_weight
    if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
        raise ConfigError(f"--style_weight={value}: must be a finite number >= 0")
    text = config.get("style_weight_by_kernel", "")
    table = {}
    for entry in csv(text):
        name, sep, weight = entry.partition(":")
        name = name.strip().lower()
        try:
            number = float(weight) if sep else float("nan")
        except ValueError:
            number = float("nan")
        if not math.isfinite(number) or number < 0 or (name not in losses.REGISTRY and name != "default"):
            raise ConfigError(f"--config.style_weight_by_kernel={text}: expected method:weight entries and "
                              f"default:weight, weights finite and >= 0 (e.g. bn:1,default:5)")
        table[name] = number
    if value is not None:
        return float(value)
    names = method_names(config.kernel)
    key = names[0] if len(names) == 1 and names[0] in table else "default"
    if key not in table:
        raise ConfigError(f"--style_weight is unset and --config.style_weight_by_kernel={text!r} has no entry "
                          f"for --kernel={config.kernel} nor a default: pass --style_weight")
    return table[key]


def problem(config: Any, blend: tuple[float, ...] = (1.0,)) -> transfer.Problem:
    """``parse(config).problem(blend)``: for scripts and tests that hold a config (the driver gets a
    :class:`RunSpec`)."""
    return parse(config).problem(blend)


def step_settings(config: Any, source: str) -> transfer.StepSettings:
    """``parse(config).settings(source)``: for scripts and tests that hold a config."""
    return parse(config).settings(source)


def _step_settings(config: Any, source: str) -> transfer.StepSettings:
    """The compiled-in step constants of a checked config for weights of ``source``."""
    low, high = image.pixel_range(source)
    sgd = config.sgd
    return transfer.StepSettings(
        steps=default_steps(config)[0], low=tuple(map(float, low)), high=tuple(map(float, high)),
        lr=float(config.lr),
        sgd=optimizers.SGDSettings(lr=float(sgd.lr), momentum=float(sgd.momentum),
                                   weight_decay=float(sgd.weight_decay), decay=float(sgd.decay),
                                   decay_every=int(sgd.decay_every), update_rule=str(sgd.update_rule)),
        clip_per_pixel=float(sgd.clip_per_pixel), sgd_tv_weight=float(sgd.tv_weight),
        stop_tol=float(sgd.stop_tol) if config.optimizer == "sgd_paper" else 0.0,
        sgd_tv=str(sgd.tv_gradient),
        # Only the paper's SGD may run unprojected: Adam and L-BFGS here always keep the pixel range.
        project=bool(sgd.project) or config.optimizer != "sgd_paper",
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
    return max(1, min(length, max(default_steps(config)[0], 1)))


def _machine_default(value: Any, flag: str, cpu: int, accelerator: int) -> tuple[int, str | None]:
    """``value``, or when unset the CPU or the accelerator default, with the note that says which was chosen
    for a CPU-only machine."""
    if value is not None:
        return int(value), None
    if jax.default_backend() == "cpu":
        return cpu, (f"no accelerator found: using --{flag}={cpu} (pass --{flag} to choose; {accelerator} on a GPU "
                     f"or TPU)")
    return accelerator, None


def default_size(config: Any) -> tuple[int, str | None]:
    """The content's long edge, and a note to print when it (or the step count) was chosen for a CPU-only
    machine."""
    return _machine_default(config.size, "size", CPU_DEFAULT_SIZE, ACCELERATOR_DEFAULT_SIZE)


def default_steps(config: Any) -> tuple[int, str | None]:
    """The step count (``config.steps``; unset: 500 on a GPU or TPU, 200 on a CPU, so that the bare command
    finishes in a few minutes there) and a note to print when it was chosen for a CPU-only machine."""
    return _machine_default(config.steps, "steps", CPU_DEFAULT_STEPS, ACCELERATOR_DEFAULT_STEPS)


def machine_notes(config: Any) -> list[str]:
    """What the run chose for this machine because the config left it unset (size, steps), to print on
    start."""
    return [note for note in (default_size(config)[1], default_steps(config)[1]) if note]


def with_default_steps(config: Any) -> Any:
    """``config`` itself when it sets ``steps``; else a copy with :func:`default_steps`'s count."""
    if config.steps is not None:
        return config
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.steps = default_steps(config)[0]
    return c


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
    if not csv(config.style_blend):
        return tuple([1.0 / n_styles] * n_styles)
    weights = floats(config.style_blend, "style_blend")
    if len(weights) != n_styles:
        raise ConfigError(f"--style_blend={config.style_blend}: {len(weights)} weight(s) for {n_styles} style(s)")
    if sum(weights) <= 0:
        raise ConfigError(f"--style_blend={config.style_blend}: the weights sum to 0")
    return tuple(w / sum(weights) for w in weights)


def min_side(layers: Sequence[str]) -> int:
    """Smallest image side for which every layer has at least one position."""
    return 2 ** max(vgg.downsampling(name) for name in layers)


def check_sizes(problem: transfer.Problem, images: Sequence[tuple[str, np.ndarray, str]]) -> None:
    """Raises ImageError when an image, (what, (H, W, 3), description), is too small for the deepest layer."""
    need = min_side(problem.layers)
    for what, rgb, desc in images:
        if min(rgb.shape[:2]) < need:
            raise ImageError(f"{what} image ({desc}) is {rgb.shape[1]}x{rgb.shape[0]} px after resizing; layer "
                             f"{problem.layers[-1]} needs at least {need} px a side (raise --size)")
