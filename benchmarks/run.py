"""nst_jax against its PyTorch twin (:mod:`benchmarks.torch_baseline`), side by side, method by method.

    python -m benchmarks.run --out=bench_cpu                       # CPU: 128 and 256 px, every method
    python -m benchmarks.run --out=bench_gpu --sizes=512,1024      # GPU (see benchmarks/device.sh)

(``torch_step``, in the default frameworks, compiles for 1.5-3 minutes per method on a 2-core CPU; leave it out
with ``--frameworks=jax,jax_step,torch_eager,torch_compile`` for a quick run.)

Writes ``results.json`` (:mod:`benchmarks.results`: the command, commit, date, machine and versions above the
figures) and ``results.md`` (its page section, :mod:`benchmarks.report`) to ``--out``; ``--record`` also files the
JSON under ``benchmarks/results/<machine class>/run.json``, what ``docs/results/`` shows. For every image size
(square, size x size px) and style method (every method of nst_jax's registry, e.g. poly c=1 d=2, gaussian with
the paper's linear-time estimator; the settings of ``configs/default.py``: relu4_2 content, relu1_1..relu5_1 style,
Adam lr 0.05, init from the content image, automatic balance), each framework runs the same optimisation from the
same image (the PyTorch frameworks only for the methods with a twin in :mod:`benchmarks.torch_baseline`):

* ``jax``: the real loop, :func:`nst_jax.transfer.chunk` jitted with a chunk of ``--chunk`` steps and
  the carry donated; ms/iteration = chunk time / chunk. ``jax_step`` is the same with a chunk of one step
  (one dispatch per step).
* ``torch_eager``: :class:`benchmarks.torch_baseline.StyleTransfer`, memory format chosen per size by a short
  probe of NCHW and channels_last (``--torch_layout``); ``torch_compile``: the same with the feature extractor
  under ``torch.compile`` (one graph per size, so its compile time shows under the first method of a size).
* ``torch_step``: the strongest baseline, :class:`benchmarks.torch_baseline.WholeStep`: the whole step
  (forward, losses, backward, Adam, clamp) as one ``torch.compile`` graph (``fullgraph=True``), mode
  ``--torch_step_mode`` (GPU default ``max-autotune``: autotuned kernels and CUDA graphs; CPU default: Inductor's
  default mode), the probed memory format, cuDNN autotuning and TF32 matmuls on a GPU. ``torch_step_bf16``: the
  same with VGG-19 under bf16 autocast, beside ``jax_bf16`` (nst_jax with ``dtype="bfloat16"``, as
  ``--dtype=bfloat16``). Their parity columns are against the float32 ``jax`` run.

Timing (:mod:`benchmarks.timing`): ``--rounds`` rounds, each framework in turn within a round (so load drifts hit
all alike); a round restarts from the initial image and runs ``--steps`` steps in blocks of ``--chunk`` with one
synchronisation per block; the figure is the median over rounds of the median block time / chunk. Parity: every
round replays the same steps (the Gaussian's random pairs are nst_jax's, passed to PyTorch), so the losses at step 0
and at the last step are compared with nst_jax's. The balance factors and paper constants are nst_jax's, passed to
PyTorch, so both optimise one energy. Memory: on a GPU the framework's peak allocation (torch
``max_memory_allocated``; XLA's compiled buffer sizes and ``peak_bytes_in_use``); on a CPU the peak growth of the
process's heap in use (glibc ``mallinfo2``, sampled every 2 ms) during an untimed round of each framework before the
timed ones (the sampler slows what it watches).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks import report, results, timing
from nst_jax import losses

METHODS: tuple[str, ...] = losses.METHODS
"""Every method of nst_jax's registry; the PyTorch frameworks run those with a twin
(:data:`benchmarks.torch_baseline.METHODS`) and skip the others."""
FRAMEWORKS = ("jax", "jax_step", "torch_eager", "torch_compile", "torch_step", "jax_bf16", "torch_step_bf16")
DEFAULT_FRAMEWORKS = ("jax", "jax_step", "torch_eager", "torch_compile", "torch_step")
TORCH = ("torch_eager", "torch_compile", "torch_step", "torch_step_bf16")

# configs/default.py (and configs/bn.py's style weight) as plain values: the benchmark does not need
# ml_collections, which the GPU machines lack. tests/test_baseline.py checks that they agree.
SETTINGS = {
    "content_layers": ("relu4_2",),
    "style_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
    "layer_weights": (1.0, 1.0, 1.0, 1.0, 1.0),
    "content_weight": 1.0,
    "style_weight": 5.0,
    "bn_style_weight": 1.0,
    "tv_weight": 0.0,
    "lr": 0.05,
    "pooling": "max",
    "poly_c": 1.0,
    "poly_d": 2,
    "gaussian_estimator": "linear",
    "seed": 0,
}

# Peak dense throughput of an H100 SXM (NVIDIA's datasheet), TFLOP/s.
H100_PEAKS = {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0}


# ---------------------------------------------------------------------------------------------------------
# Inputs


def demo_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The package's demo content and style images resized to size x size, RGB in [0, 1]."""
    from nst_jax import demo, image

    return (np.asarray(image.resize(demo.content_image(size), (size, size)), np.float32),
            np.asarray(image.resize(demo.style_image(size), (size, size)), np.float32))


def weights_pth(path: str | None, workdir: str) -> tuple[str, str]:
    """(a torchvision VGG-19 ``.pth``, what it is): ``path`` if given, else torch's cached ImageNet file if
    present, else a seeded random ``vgg19()`` saved in ``workdir`` (random weights time the same, but the
    images they make mean nothing)."""
    import torch
    import torchvision

    if path:
        return path, f"{path} (given)"
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", "vgg19-dcbb9e9d.pth")
    if os.path.isfile(cached):
        return cached, f"{cached} (torchvision IMAGENET1K_V1)"
    out = os.path.join(workdir, "vgg19-random-seed0.pth")
    if not os.path.isfile(out):
        torch.manual_seed(0)
        torch.save(torchvision.models.vgg19(weights=None).state_dict(), out)
    return out, "random torchvision vgg19() initialisation, torch.manual_seed(0) (no pretrained weights found)"


def flax_params(pth: str) -> dict[str, Any]:
    """The ``.pth`` converted to nst_jax's parameter tree (the converter's key map and checks)."""
    from weights_converter import convert, pth_reader

    return convert.to_flax(pth_reader.read_state_dict(pth, keep=lambda k: not k.startswith("classifier.")))


def conv_flops(size: int, deepest: str) -> int:
    """Multiply-adds x 2 of one forward pass of every convolution up to ``deepest`` on a size x size image:
    sum over convolutions of 2 * h * w * C_in * C_out * 9 (3x3 kernels, 'same' padding)."""
    from nst_jax import vgg

    total = 0
    for name in vgg.LAYERS[: vgg.LAYERS.index(deepest) + 1]:
        if name.startswith("conv"):
            side = size // 2 ** vgg.downsampling(name)
            cin, cout = vgg.conv_shapes()[name]
            total += 2 * side * side * cin * cout * 9
    return total


def iteration_flops(size: int, deepest: str) -> int:
    """FLOPs of one iteration's network work: the forward pass plus the gradient with respect to the input
    (no weight gradients), each one forward's worth: 2 x :func:`conv_flops`. Pooling, ReLU and the losses
    (under 2 % at these sizes) are not counted."""
    return 2 * conv_flops(size, deepest)


# ---------------------------------------------------------------------------------------------------------
# The two sides of one problem


@dataclasses.dataclass
class JaxSide:
    problem: Any
    params: Any
    tgt: Any
    scales: Any
    x0: Any
    opt: Any
    settings: Any
    loop_key: Any
    factors: list[float]
    base: dict[tuple[int, str], float]


def jax_side(method: str, params: Any, content: np.ndarray, style: np.ndarray) -> JaxSide:
    """The run's setup exactly as :func:`nst_jax.runner.stylize` does it (targets, paper constants, automatic
    balance, init from the content image), for one method with the benchmark's settings."""
    import jax
    import jax.numpy as jnp
    import optax

    from nst_jax import image, transfer

    s = SETTINGS
    term_params = {"poly": {"c": s["poly_c"], "d": s["poly_d"]},
                   "gaussian": {"gamma": None, "estimator": s["gaussian_estimator"], "block_size": 512,
                                "num_features": 1024},
                   "mkmmd": {"estimator": s["gaussian_estimator"]}}.get(method, {})
    problem = transfer.Problem(
        content_layers=s["content_layers"], style_layers=s["style_layers"], layer_weights=s["layer_weights"],
        terms=(losses.StyleTerm(method, 1.0, term_params),), pooling=s["pooling"],
        content_weight=s["content_weight"], tv_weight=s["tv_weight"], optimizer="adam",
    )
    key = jax.random.key(s["seed"])
    _, loop_key, balance_key, ref_key = jax.random.split(key, 4)
    c = image.preprocess(jnp.asarray(content), "torchvision")
    st = image.preprocess(jnp.asarray(style), "torchvision")
    x0 = c
    tgt = jax.jit(functools.partial(transfer.targets, problem))(params, c, [st])
    base = transfer.paper_scales(problem, params, x0)
    x_ref = image.preprocess(jax.random.uniform(ref_key, content.shape, jnp.float32), "torchvision")
    base_arrays = {k: jnp.float32(v) for k, v in base.items()}
    norms = jax.jit(functools.partial(transfer.gradient_norms, problem))(params, tgt, base_arrays, x_ref, balance_key)
    factors = transfer.balance_factors(norms)
    weight = s["bn_style_weight"] if method == "bn" else s["style_weight"]
    scales = {"content": jnp.float32(s["content_weight"]),
              "style": {k: jnp.float32(weight * factors[k[0]] * v) for k, v in base.items()}}
    low, high = image.pixel_range("torchvision")
    settings = transfer.StepSettings(steps=1 << 30, low=tuple(map(float, low)), high=tuple(map(float, high)),
                                     lr=float(s["lr"]))
    return JaxSide(problem, params, tgt, scales, x0, optax.adam(s["lr"]), settings, loop_key, factors, base)


def jax_pair_perms(side: JaxSide, steps: int, size: int) -> list[dict[tuple[int, str], Any]]:
    """For each step, the random draws of nst_jax's stochastic terms, per (term, layer): the key path of
    transfer.chunk (fold_in step), fused_style_loss (fold_in layer position, then term index), then the
    Gaussian's and mkmmd's linear_time_pairs (split into the x and y keys, one permutation each) or swd's
    directions (random_directions of that key, as many as channels)."""
    import jax

    from nst_jax import vgg
    from nst_jax.losses import wasserstein

    out = []
    for step in range(steps):
        key = jax.random.fold_in(side.loop_key, step)
        perms = {}
        for li, layer in enumerate(side.problem.style_layers):
            m = (size // 2 ** vgg.downsampling(layer)) ** 2
            for ti, term in enumerate(side.problem.terms):
                term_key = jax.random.fold_in(jax.random.fold_in(key, li), ti)
                if term.name == "swd":
                    n = vgg.layer_channels(layer)
                    perms[(ti, layer)] = np.asarray(wasserstein.random_directions(term_key, n, n))
                if term.name not in ("gaussian", "mkmmd"):
                    continue
                kx, ky = jax.random.split(term_key)
                perms[(ti, layer)] = (np.asarray(jax.random.permutation(kx, m)),
                                      np.asarray(jax.random.permutation(ky, m)))
        out.append(perms)
    return out


def torch_side(side: JaxSide, features: Any, content: np.ndarray, style: np.ndarray, channels_last: bool,
               extractor: Callable | None) -> Any:
    """The PyTorch twin of ``side``, with nst_jax's multipliers (paper constants x balance x style weight)."""
    import jax.numpy as jnp

    from benchmarks import torch_baseline as tb
    from nst_jax import image

    term = side.problem.terms[0]
    low, high = side.settings.low, side.settings.high
    return tb.StyleTransfer(
        features,
        np.asarray(image.preprocess(jnp.asarray(content), "torchvision")),
        np.asarray(image.preprocess(jnp.asarray(style), "torchvision")),
        np.asarray(side.x0),
        content_layers=side.problem.content_layers, style_layers=side.problem.style_layers,
        layer_weights=side.problem.layer_weights,
        terms=[tb.Term(term.name, term.weight, float(term.params.get("c", 1.0)))],
        content_scale=float(side.scales["content"]),
        style_scales={k: float(v) for k, v in side.scales["style"].items()},
        tv_weight=side.problem.tv_weight, lr=SETTINGS["lr"], low=low, high=high,
        channels_last=channels_last, extractor=extractor,
    )


# ---------------------------------------------------------------------------------------------------------
# Measurement


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use() -> Callable[[], int] | None:
    """glibc's bytes allocated by malloc and not freed (``mallinfo2``: uordblks + hblkhd), or None elsewhere.
    Unlike the resident size it falls when memory is freed, even if the allocator keeps the pages."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        info = fn()
        return int(info.uordblks + info.hblkhd)

    return in_use


class HeapPeak:
    """Peak growth of this process's heap in use while the block runs (a sampling thread, every 2 ms):
    glibc's allocated bytes where available (both frameworks allocate CPU buffers with malloc), else the
    resident size."""

    def __enter__(self) -> HeapPeak:
        import psutil

        proc = psutil.Process()
        self._read = _heap_in_use() or (lambda: proc.memory_info().rss)
        self.start = self._read()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())

    @property
    def delta(self) -> int:
        return self.peak - self.start


@dataclasses.dataclass
class Runner:
    """One framework's way to run a round from the initial image: ``round()`` -> (the blocks'
    :class:`benchmarks.timing.Timing`, per unit a step; per-step loss rows)."""

    name: str
    warmup_s: float
    round: Callable[[], tuple[timing.Timing, list[dict[str, float]]]]
    memory: Callable[[], dict[str, Any]] = lambda: {}
    reset_memory: Callable[[], None] = lambda: None


def make_jax_runner(side: JaxSide, steps: int, chunk: int, name: str) -> Runner:
    import jax
    import jax.numpy as jnp

    from nst_jax import lapack, transfer

    fn = jax.jit(functools.partial(transfer.chunk, side.problem, side.settings, chunk), donate_argnums=0)

    def carry():
        return transfer.init_state(side.problem, side.settings, jnp.copy(side.x0))

    args = (side.params, side.tgt, side.scales, side.loop_key)

    def compile_and_call():
        compiled = fn.lower(carry(), *args).compile()
        with lapack.single_threaded():  # as nst_jax's run driver runs its steps (nst_jax/lapack.py)
            jax.block_until_ready(compiled(carry(), *args))
        return compiled

    compiled, warmup = timing.once(compile_and_call)

    @lapack.single_threaded()
    def run_round():
        state = [jax.block_until_ready(carry())]
        terms: list[Any] = []

        def block():
            state[0], out = compiled(state[0], *args)
            terms.append(out)
            return state[0]  # the sync waits for the block's carry

        blocks = timing.repeat(block, steps // chunk, warmup=0, per=chunk)
        rows = [{k: float(v[i]) for k, v in t.items()} for t in jax.device_get(terms) for i in range(chunk)]
        return blocks, rows

    def memory():
        out: dict[str, Any] = {}
        try:
            ma = compiled.memory_analysis()
            out["xla_buffers_bytes"] = int(ma.temp_size_in_bytes + ma.argument_size_in_bytes
                                           + ma.output_size_in_bytes - ma.alias_size_in_bytes)
        except Exception:  # not every backend reports it
            pass
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["process_peak_bytes"] = int(stats["peak_bytes_in_use"])
        return out

    return Runner(name, warmup, run_round, memory)


def make_torch_runner(ts: Any, steps: int, chunk: int, perms: list[Any] | None, name: str,
                      warmup_steps: int = 2) -> Runner:
    import torch

    cuda = ts.device.type == "cuda"
    sync = timing.torch_sync(ts.device)

    def warm():
        ts.reset()
        for i in range(warmup_steps):
            ts.step(None if perms is None else perms[i])

    _, warmup = timing.once(warm, sync=sync)

    def run_round():
        ts.reset()
        sync(None)
        outs: list[dict[str, Any]] = []

        def block():
            for _ in range(chunk):
                i = len(outs)
                outs.append(ts.step(None if perms is None else perms[i]))

        blocks = timing.repeat(block, steps // chunk, warmup=0, per=chunk, sync=sync)
        return blocks, [{k: float(v) for k, v in o.items()} for o in outs]

    def memory():
        if cuda:
            return {"torch_peak_bytes": int(torch.cuda.max_memory_allocated())}
        return {}

    def reset_memory():
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    return Runner(name, warmup, run_round, memory, reset_memory)


def choose_layout(make: Callable[[bool], Any], probe_steps: int = 3) -> tuple[bool, dict[str, float]]:
    """Times ``probe_steps`` eager steps in NCHW and in channels_last (after one warm-up step each) and
    returns (channels_last is faster, {layout: seconds per step})."""
    times = {}
    for cl in (False, True):
        ts = make(cl)
        steps = timing.repeat(ts.step, probe_steps, sync=lambda out: float(out["total"]))
        times["channels_last" if cl else "nchw"] = steps.best
    return times["channels_last"] < times["nchw"], times


def torch_step_mode(mode: str, device: str) -> str | None:
    """``--torch_step_mode``: ``auto`` is ``max-autotune`` on a GPU (autotuning and CUDA graphs), Inductor's
    default mode on a CPU (max-autotune's GEMM templates cost minutes of compilation there)."""
    if mode == "auto":
        return "max-autotune" if device == "cuda" else None
    return None if mode == "default" else mode


def rel(a: float, b: float, scale: float | None = None) -> float:
    """|a - b| / |scale| (default: b, the reference), 0 when a == b.

    Terms are compared relative to the total energy: the content term starts at 0 (the image is initialised
    from the content), where a relative difference of the term itself would be rounding noise over 0."""
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b if scale is None else scale), 1e-30)


def bench_size(size: int, methods: Sequence[str], frameworks: Sequence[str], pth: str, params: Any, args: Any,
               device: str, log: Callable[[str], None],
               done: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Every method at one size; ``done`` gets each method's rows as soon as they exist (results survive a
    run cut short)."""
    import jax
    import torch

    from benchmarks import torch_baseline as tb

    content, style = demo_images(size)
    deepest = SETTINGS["style_layers"][-1]
    features = {}
    layout_probe: dict[str, float] = {}
    compiled_extractor = None
    results = []
    for mi, method in enumerate(methods):
        side = jax_side(method, params, content, style)
        method_frameworks = frameworks
        if method not in tb.METHODS and any(f in TORCH for f in frameworks):
            log(f"{size}px {method}: no PyTorch twin in benchmarks/torch_baseline.py, so no PyTorch columns")
            method_frameworks = [f for f in frameworks if f not in TORCH]
        perms = None
        if method in ("gaussian", "mkmmd", "swd") and any(f in TORCH for f in method_frameworks):
            perms = [tb.perms_to_torch(p, device) for p in jax_pair_perms(side, args.steps, size)]
        runners: list[Runner] = []
        if any(f in TORCH for f in method_frameworks):
            if not features:
                if args.torch_layout == "auto":
                    cl, layout_probe = choose_layout(lambda cl, side=side: torch_side(
                        side, tb.load_features(pth, deepest, SETTINGS["pooling"], device, cl), content, style, cl,
                        None))
                else:
                    cl = args.torch_layout == "channels_last"
                features["cl"] = cl
                features["net"] = tb.load_features(pth, deepest, SETTINGS["pooling"], device, cl)
                log(f"{size}px torch layout: {'channels_last' if cl else 'nchw'} {layout_probe}")
            cl = features["cl"]
        for fw in method_frameworks:
            try:
                if fw == "jax":
                    runners.append(make_jax_runner(side, args.steps, args.chunk, fw))
                elif fw == "jax_step":
                    runners.append(make_jax_runner(side, args.steps, 1, fw))
                elif fw == "jax_bf16":
                    bf16 = dataclasses.replace(side, problem=dataclasses.replace(side.problem, dtype="bfloat16"))
                    runners.append(make_jax_runner(bf16, args.steps, args.chunk, fw))
                elif fw == "torch_eager":
                    ts = torch_side(side, features["net"], content, style, cl, None)
                    runners.append(make_torch_runner(ts, args.steps, args.chunk, perms, fw))
                elif fw == "torch_compile":
                    if compiled_extractor is None:
                        compiled_extractor = tb.make_extractor(features["net"], side.problem.layers, compile=True)
                    ts = torch_side(side, features["net"], content, style, cl, compiled_extractor)
                    runners.append(make_torch_runner(ts, args.steps, args.chunk, perms, fw))
                elif fw in ("torch_step", "torch_step_bf16"):
                    ts = tb.WholeStep(torch_side(side, features["net"], content, style, cl, None), features["net"],
                                      mode=torch_step_mode(args.torch_step_mode, device),
                                      bf16=fw == "torch_step_bf16")
                    runners.append(make_torch_runner(ts, args.steps, args.chunk, perms, fw))
            except Exception as e:  # torch.compile may fail on a machine without a working compiler
                log(f"{size}px {method} {fw}: unavailable: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                results.append({"size": size, "method": method, "framework": fw,
                                "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                continue
            log(f"{size}px {method} {fw}: warm-up {runners[-1].warmup_s:.1f}s")
        losses: dict[str, list[dict[str, float]]] = {}
        memory: dict[str, dict[str, Any]] = {r.name: {} for r in runners}
        # Memory and the parity losses from one untimed round first: the heap sampler's thread (mallinfo2 every
        # 2 ms) slowed what it watched, PyTorch eager's allocations most (Gram at 256 px on the CPU: PyTorch 850
        # against 376 ms/it, nst_jax 620 against 400), so no timed round runs beside it.
        for r in runners:
            r.reset_memory()
            with HeapPeak() if device == "cpu" else contextlib.nullcontext() as rss:
                _, losses[r.name] = r.round()
            memory[r.name] = {**r.memory(), **({"heap_delta_bytes": rss.delta} if device == "cpu" else {})}
        per_round = timing.interleave(
            {r.name: lambda r=r: r.round()[0] for r in runners}, args.rounds,
            lambda rnd, this, method=method: log(f"{size}px {method} round {rnd}: "
                                  + ", ".join(f"{k} {1e3 * t.median:.0f}" for k, t in this.items()) + " ms/it"))
        flops = iteration_flops(size, deepest)
        for r in runners:
            ms = 1e3 * timing.median_of(per_round[r.name])
            row = {
                "size": size, "method": method, "framework": r.name, "warmup_s": r.warmup_s,
                "ms_per_iter": ms, "round_ms": [1e3 * t.median for t in per_round[r.name]],
                "iterations": args.rounds * args.steps, "memory": memory[r.name],
                "tflops": flops / (ms / 1e3) / 1e12, "balance_factor": side.factors[0],
                "loss_step0": losses[r.name][0], "loss_last": losses[r.name][-1],
            }
            if r.name != "jax" and "jax" in losses:
                ref = losses["jax"]
                row["parity"] = {
                    "step0_rel": max(rel(losses[r.name][0][k], ref[0][k], ref[0]["total"])
                                     for k in ("total", "content", "style")),
                    "last_rel": rel(losses[r.name][-1]["total"], ref[-1]["total"]),
                    "last_step": len(ref) - 1,
                }
            if r.name in TORCH:
                row["torch_layout"] = "channels_last" if features["cl"] else "nchw"
            if device == "cuda":
                row["mfu"] = {p: row["tflops"] / peak for p, peak in H100_PEAKS.items()}
            results.append(row)
        done([row for row in results if row["method"] == method])
        del runners
        if device == "cuda":
            torch.cuda.empty_cache()
        jax.clear_caches() if mi == len(methods) - 1 else None
    return results


# ---------------------------------------------------------------------------------------------------------
# Report


def run_settings(device: str, weights: dict[str, Any], args: Any, sizes: Sequence[int], methods: Sequence[str],
                 frameworks: Sequence[str]) -> dict[str, Any]:
    """The ``settings`` of the results document: what was run, how it was timed, the weights
    (:func:`benchmarks.results.weights_record`), PyTorch's threads, and on a GPU its name and matmul precision."""
    import jax
    import torch

    out: dict[str, Any] = {
        "device": device, "sizes": list(sizes), "methods": list(methods), "frameworks": list(frameworks),
        "rounds": args.rounds, "steps_per_round": args.steps, "chunk": args.chunk,
        "torch_layout": args.torch_layout, "torch_step_mode": args.torch_step_mode,
        "torch_threads": torch.get_num_threads(), "weights": weights,
        "problem": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
    }
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
        out["precision"] = {"torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                            "torch_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                            "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
    return out


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.0f}"


def table(doc: dict[str, Any]) -> str:
    """The tables of a results document: per size and method, each framework's figures and the JAX / PyTorch
    ratios; then warm-up, memory and throughput per row."""
    env, results = doc["settings"], doc["results"]
    cuda = env["device"] == "cuda"
    lines = [f"{env['rounds']} rounds x {env['steps_per_round']} steps in blocks of {env['chunk']}, frameworks in "
             f"turn within each round; ms/it is the median over rounds of the median block time / block steps. "
             f"Device {env['device']}" + (f" ({env['gpu']})" if cuda else "")
             + f", PyTorch threads {env['torch_threads']}.", ""]
    by = {(r["size"], r["method"], r["framework"]): r for r in results}
    sizes = sorted({r["size"] for r in results})
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]
    present = [f for f in FRAMEWORKS if any(r["framework"] == f and "ms_per_iter" in r for r in results)]
    # Each PyTorch column against the nst_jax run of the same precision.
    pairs = [("jax_bf16" if f.endswith("_bf16") else "jax", f) for f in TORCH if f in present]
    pairs = [(j, t) for j, t in pairs if j in present]
    compared = [f for f in present if f != "jax"]
    lines += ["| size | method | " + " | ".join(f"{f} ms/it" for f in present) + " | "
              + " | ".join(f"{j} vs {t.removeprefix('torch_')}" for j, t in pairs)
              + " | step-0 rel. diff | last-step rel. diff |",
              "| --- | --- | " + " | ".join("---:" for _ in present + pairs) + " | ---: | ---: |"]
    for size in sizes:
        for m in methods:
            def ms(fw, size=size, m=m):
                r = by.get((size, m, fw))
                return None if r is None or "ms_per_iter" not in r else r["ms_per_iter"]
            par = [by.get((size, m, fw), {}).get("parity") for fw in compared if fw in TORCH and "bf16" not in fw]
            par = [p for p in par if p]
            fmt = lambda v: "" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.2f}"  # noqa: E731
            ratio = lambda a, b: "" if a is None or b is None else f"{b / a:.2f}x"  # noqa: E731
            lines.append(
                f"| {size} | {m} | " + " | ".join(fmt(ms(f)) for f in present) + " | "
                + " | ".join(ratio(ms(j), ms(t)) for j, t in pairs) + " | "
                + (f"{max(p['step0_rel'] for p in par):.1e}" if par else "") + " | "
                + (f"{max(p['last_rel'] for p in par):.1e}" if par else "") + " |")
    lines += ["", "Ratios are PyTorch time / JAX time (above 1: JAX faster); the bf16 columns against jax_bf16. "
              "Rel. diffs: the float32 PyTorch runs against jax; each bf16 run's are in the JSON.", ""]
    lines += ["| size | method | framework | warm-up s | memory MB | TFLOP/s"
              + (" | MFU tf32 | MFU bf16 | MFU fp32" if cuda else "") + " |",
              "| --- | --- | --- | ---: | ---: | ---:" + (" | ---: | ---: | ---:" if cuda else "") + " |"]
    for r in results:
        if "ms_per_iter" not in r:
            lines.append(f"| {r['size']} | {r['method']} | {r['framework']} | unavailable: {r['error']} | | |"
                         + (" | | |" if cuda else ""))
            continue
        mem = r["memory"]
        mb = mem.get("torch_peak_bytes", mem.get("xla_buffers_bytes")) if cuda else mem.get("heap_delta_bytes")
        lines.append(f"| {r['size']} | {r['method']} | {r['framework']} | {r['warmup_s']:.1f} | {_mb(mb)} | "
                     f"{r['tflops']:.2f}" + (f" | {100 * r['mfu']['tf32']:.1f}% | {100 * r['mfu']['bf16']:.1f}% | "
                                              f"{100 * r['mfu']['fp32']:.0f}%"
                                              if cuda else "") + " |")
    lines += ["", "Memory: " + ("torch max_memory_allocated; for JAX, XLA's compiled buffers (arguments, outputs, "
                               "temporaries)." if cuda else "peak growth of the process's heap in use (glibc "
                               "mallinfo2) during an untimed round before the timed ones."),
              "TFLOP/s: the VGG-19 convolutions up to relu5_1, forward plus input gradient (2 x 2 h w C_in C_out 9 "
              "per convolution), over the measured time."
              + (" MFU: over an H100 SXM's dense peak (TF32 495, BF16 989, FP32 67 TFLOP/s; an H200 has the same); "
                 "read the bf16 column for the bf16 rows. Both frameworks run fp32 "
                 "convolutions on TF32 tensor cores by default." if cuda else "")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--sizes", default="", help="comma-separated; default 128,256 on CPU, 512,1024 on GPU")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--frameworks", default=",".join(DEFAULT_FRAMEWORKS),
                        help=f"comma-separated, of {','.join(FRAMEWORKS)}")
    parser.add_argument("--torch_step_mode", default="auto",
                        choices=("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile mode of torch_step (auto: max-autotune on a GPU, default on a CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per round (a multiple of --chunk)")
    parser.add_argument("--chunk", type=int, default=4, help="steps per JAX dispatch / per timed block")
    parser.add_argument("--weights", default="", help="torchvision VGG-19 .pth (default: cached or random)")
    parser.add_argument("--torch_layout", default="auto", choices=("auto", "nchw", "channels_last"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    results.add_arguments(parser, "run")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    if args.steps % args.chunk or args.steps < args.chunk:
        parser.error("--steps must be a positive multiple of --chunk")
    methods = [m for m in args.methods.split(",") if m]
    frameworks = [f for f in args.frameworks.split(",") if f]
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; expected some of {','.join(METHODS)}")
    for f in frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"unknown framework {f!r}; expected some of {','.join(FRAMEWORKS)}")

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and torch share the GPU
    import jax
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (the Gram matrices), as XLA's default on a GPU
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([128, 256] if device == "cpu" else [512, 1024])
    os.makedirs(args.out, exist_ok=True)
    pth, pth_desc = weights_pth(args.weights, args.out)
    params = jax.device_put(flax_params(pth))
    settings = run_settings(device, results.weights_record(pth, pth_desc), args, sizes, methods, frameworks)
    meta = results.metadata("run", sys.argv[1:] if argv is None else argv)
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {msg}", flush=True)

    log(f"device {device}, weights: {pth_desc}")
    rows: list[dict[str, Any]] = []
    docs = [results.document("run", None, settings, rows, meta)]

    def done(new: list[dict[str, Any]]) -> None:  # after each method: a run cut short keeps what it finished
        rows.extend(new)
        docs[0] = results.document("run", None, {**settings, "elapsed_s": round(time.time() - started)}, rows, meta)
        results.write(docs[0], args.out, args.record)

    for size in sizes:
        bench_size(size, methods, frameworks, pth, params, args, device, log, done)
    log(f"done: {os.path.join(args.out, 'results.md')}")
    print(report.section(docs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
