"""The feed-forward Johnson network against its PyTorch twin (`benchmarks.torch_fast`): training and inference.

    python -m benchmarks.fast                                    # 256 px batch 4; 512 and 1024 px; 1-8 devices
    python -m benchmarks.fast --rounds=3 --steps=2 --scaling_size=128 --record       # a short CPU run
    python -m benchmarks.fast --frameworks=jax,torch_eager --scaling_devices=        # no torch.compile, no scaling

Three measurements, each side by side in one process (:func:`benchmarks.timing.interleave`: the frameworks take
turns within each of ``--rounds`` rounds, so a drift of the machine's load reaches all alike):

* **Training**: steps/s of johnson's training step with the Gram loss (``configs/train_johnson.py`` through
  ``nst_jax.trainer.problem``: content relu2_2, style relu1_1..relu4_1, TV, Adam lr 1e-3) at ``--size`` px,
  batch ``--batch``. ``jax``: :func:`nst_jax.training.train_step` jitted (the state donated), as the trainer
  runs it; ``torch_eager``: :class:`benchmarks.torch_fast.Trainer`; ``torch_compile``: the same step under
  ``torch.compile`` (forward, AOT backward and the optimizer's update compiled; Inductor's default mode).
  Both sides start from the same network parameters (nst_jax's initialisation, converted), the same VGG-19
  weights (one torchvision ``.pth``, converted for nst_jax), the same batch and the same normalisers (nst_jax's),
  so the loss of the first step agrees (its relative difference is in the table). A round runs ``--steps``
  steps per framework, each timed to its end; the figure is the median over rounds of each round's median.
* **Inference**: ms per image (batch 1) at each of ``--infer_sizes``: :func:`nst_jax.nets.johnson.stylize`
  jitted against the twin under ``torch.inference_mode``.
* **Scaling**: the training step with the batch sharded over 1, 2, 4, 8 devices as ``nst_jax.trainer`` does it
  (a mesh over the devices, the batch axis split, parameters and state replicated), each count in a fresh
  process (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on a CPU): XLA's memory analysis of the
  compiled program per device (temporaries + arguments + outputs) and the median step time. Forced CPU devices
  share the machine's cores, so there their time shows the partitioned program's overhead, not a speed-up.

VGG-19 weights: ``--weights`` (a torchvision ``.pth``), else torch's cached ImageNet file, else a seeded random
``vgg19()`` (``benchmarks.run.weights_pth``); the scaling runs use ``nst_jax.vgg.init_params`` (random). Speed
does not depend on the values.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import results, timing  # noqa: E402

FRAMEWORKS = ("jax", "torch_eager", "torch_compile")


def make_problem(size: int, batch: int) -> Any:
    """The TrainProblem of ``configs/train_johnson.py`` at ``size`` px and batch ``batch``."""
    from configs import train_johnson
    from nst_jax import trainer

    config = train_johnson.get_config()
    config.size, config.batch = size, batch
    return trainer.problem(config)


def content_batch(size: int, batch: int) -> np.ndarray:
    """(batch, size, size, 3): the demo landscape resized, flipped and rolled into ``batch`` distinct images."""
    from nst_jax import demo, image

    base = np.asarray(image.resize(demo.content_image(size), (size, size)), np.float32)
    views = [base, base[:, ::-1], np.roll(base, size // 3, axis=1), np.roll(base[:, ::-1], size // 5, axis=0)]
    return np.stack([views[i % 4] for i in range(batch)])


def style_rgb(size: int) -> np.ndarray:
    """The demo style image, size x size."""
    from nst_jax import demo

    return np.asarray(demo.style_image(size), np.float32)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# ---------------------------------------------------------------------------------------------------------
# Training and inference, side by side


def training_runners(args: argparse.Namespace, pth: str, frameworks: Sequence[str]
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """({framework: a callable that runs one round and returns its Timing}, {framework: warm-up info})."""
    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks import run as run_bench
    from benchmarks import torch_baseline as tb
    from benchmarks import torch_fast as tf
    from nst_jax import training

    problem = make_problem(args.size, args.batch)
    vgg_params = run_bench.flax_params(pth)
    content = content_batch(args.size, args.batch)
    style = style_rgb(args.size)
    batch = {"content": jnp.asarray(content)}
    style_target = jax.jit(training.style_targets, static_argnums=0)(problem, vgg_params, jnp.asarray(style))
    state0 = jax.jit(training.init, static_argnums=(0, 1))(problem, 0, vgg_params, batch, style_target)
    params0 = jax.device_get(state0.params)
    norms = jax.device_get(state0.norms)

    runners, info = {}, {}
    if "jax" in frameworks:
        step = jax.jit(training.train_step, static_argnums=0, donate_argnums=3)
        carry = [jax.tree.map(jnp.copy, state0)]

        def jax_step():
            carry[0], terms = step(problem, vgg_params, style_target, carry[0], batch)
            return terms

        terms, warm = timing.once(jax_step)
        info["jax"] = {"warmup_s": warm, "first_loss": float(terms["total"])}
        runners["jax"] = lambda: timing.repeat(jax_step, args.steps, warmup=0)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = timing.torch_sync(device)
    features = tb.load_features(pth, problem.layers[-1], device=device)
    x = tf.to_nchw(content, device)
    for name in ("torch_eager", "torch_compile"):
        if name not in frameworks:
            continue
        net = tf.TransformerNet(problem.johnson_channels, problem.johnson_residual_blocks)
        net.load_state_dict(tf.from_flax(net, params0))
        trainer = tf.Trainer(net.to(device), copy.deepcopy(features), style, content_layers=problem.content_layers,
                             style_layers=problem.style_layers, layer_weights=problem.layer_weights,
                             content_weight=problem.content_weight, style_weight=problem.style_weight,
                             tv_weight=problem.tv_weight, lr=problem.lr, norms=norms)
        fn = trainer.step if name == "torch_eager" else tf.compiled_step(trainer)
        torch_step = functools.partial(fn, x)
        terms, warm = timing.once(torch_step, sync=sync)
        info[name] = {"warmup_s": warm, "first_loss": float(terms["total"])}
        runners[name] = functools.partial(timing.repeat, torch_step, args.steps, warmup=0, sync=sync)
    return runners, info


def inference_runners(size: int, pth_params: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """({framework: a callable timing ``repeats`` single-image calls}, {framework: warm-up s}) at size x size."""
    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks import torch_fast as tf
    from nst_jax.nets import johnson

    params, repeats = pth_params
    x = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    xj = jnp.asarray(x)
    fn = jax.jit(johnson.stylize)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = tf.TransformerNet()
    net.load_state_dict(tf.from_flax(net, params))
    net = net.to(device).eval()
    xt = tf.to_nchw(x, device)
    sync = timing.torch_sync(device)

    def torch_call():
        with torch.inference_mode():
            return net(xt)

    _, warm_j = timing.once(lambda: fn(params, xj))
    _, warm_t = timing.once(torch_call, sync=sync)
    return ({"jax": lambda: timing.repeat(lambda: fn(params, xj), repeats, warmup=0),
             "torch_eager": lambda: timing.repeat(torch_call, repeats, warmup=0, sync=sync)},
            {"jax": warm_j, "torch_eager": warm_t})


# ---------------------------------------------------------------------------------------------------------
# Scaling over devices (one process per device count)


def scaling_child(args: argparse.Namespace) -> None:
    """Prints one JSON line: the sharded training step on the first ``args.child`` devices."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from nst_jax import trainer, training, vgg

    devices = jax.devices()[: args.child]
    mesh = Mesh(np.asarray(devices), (trainer.BATCH_AXIS,))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec(trainer.BATCH_AXIS))
    problem = make_problem(args.scaling_size, args.scaling_batch)
    vgg_params = jax.device_put(vgg.init_params(jax.random.key(0)), replicated)
    batch = {"content": jax.device_put(jnp.asarray(content_batch(args.scaling_size, args.scaling_batch)), sharded)}
    style_target = jax.device_put(jax.jit(training.style_targets, static_argnums=0)(
        problem, vgg_params, jnp.asarray(style_rgb(args.scaling_size))), replicated)
    state = jax.device_put(jax.jit(training.init, static_argnums=(0, 1))(problem, 0, vgg_params, batch,
                                                                         style_target), replicated)
    step = jax.jit(functools.partial(training.train_step, problem), donate_argnums=2)
    compiled, compile_s = timing.once(lambda: step.lower(vgg_params, style_target, state, batch).compile(),
                                      sync=timing.no_sync)
    memory = compiled.memory_analysis()
    carry = [state]

    def one():
        carry[0], terms = compiled(vgg_params, style_target, carry[0], batch)
        return terms

    t = timing.repeat(one, args.scaling_steps, warmup=1) if args.scaling_steps else None
    print(json.dumps({
        "devices": len(devices), "platform": devices[0].platform, "size": args.scaling_size,
        "batch": args.scaling_batch, "images_per_device": args.scaling_batch // len(devices),
        "mb_per_device": (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                          + memory.output_size_in_bytes) / 1e6,
        "temp_mb": memory.temp_size_in_bytes / 1e6, "arguments_mb": memory.argument_size_in_bytes / 1e6,
        "s_per_step": t.median if t else None, "compile_s": compile_s}), flush=True)


def scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of :func:`scaling_child` for each of ``--scaling_devices`` (fresh processes)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for n in (int(v) for v in args.scaling_devices.split(",") if v):
        if args.scaling_batch % n:
            print(f"scaling: batch {args.scaling_batch} does not split over {n} devices; skipped", file=sys.stderr)
            continue
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if args.scaling_platform == "cpu":
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n} "
                       + os.environ.get("XLA_FLAGS", ""))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.fast", f"--child={n}",
                               f"--scaling_size={args.scaling_size}", f"--scaling_batch={args.scaling_batch}",
                               f"--scaling_steps={args.scaling_steps}"],
                              capture_output=True, text=True, env=env, cwd=root)
        if proc.returncode:
            print(f"scaling on {n} devices failed: {proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        print(f"scaling: {n} device(s): {rows[-1]['mb_per_device']:.0f} MB per device", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="training crop side, px")
    parser.add_argument("--batch", type=int, default=4, help="training batch")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measurement")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per framework and round")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"training frameworks, comma-separated, of {','.join(FRAMEWORKS)}")
    parser.add_argument("--infer_sizes", default="512,1024", help="inference image sides, px (empty: none)")
    parser.add_argument("--infer_repeats", type=int, default=2, help="timed inference calls per framework and round")
    parser.add_argument("--scaling_devices", default="1,2,4,8", help="device counts of the scaling runs (empty: none)")
    parser.add_argument("--scaling_size", type=int, default=256)
    parser.add_argument("--scaling_batch", type=int, default=8, help="global batch, split over the devices")
    parser.add_argument("--scaling_steps", type=int, default=2, help="timed steps per device count (0: memory only)")
    parser.add_argument("--scaling_platform", default="cpu", help="cpu: forced host devices; gpu/tpu: the real ones")
    parser.add_argument("--weights", default="", help="a torchvision VGG-19 .pth (default: cached or seeded random)")
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "fast")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    if args.child:
        scaling_child(args)
        return
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown or args.rounds < 1 or args.steps < 1 or args.infer_repeats < 1:
        parser.error(f"--frameworks: unknown {', '.join(unknown)}" if unknown
                     else "--rounds, --steps and --infer_repeats must be >= 1")

    import torch

    from benchmarks import run as run_bench

    meta = results.metadata("fast", sys.argv[1:] if argv is None else argv)
    workdir = os.path.join(tempfile.gettempdir(), "nst_jax_bench")  # a seeded random .pth is kept here
    os.makedirs(workdir, exist_ok=True)
    pth, pth_desc = run_bench.weights_pth(args.weights or None, workdir)

    runners, info = training_runners(args, pth, frameworks)
    log = lambda r, t: print(f"train round {r}: " + ", ".join(  # noqa: E731
        f"{k} {1 / v.median:.3f} steps/s" for k, v in t.items()), file=sys.stderr, flush=True)
    per = timing.interleave(runners, args.rounds, on_round=log)
    base_loss = info.get("jax", {}).get("first_loss")
    train = [{"framework": name, "s_per_step": timing.median_of(per[name]),
              "steps_per_s": 1 / timing.median_of(per[name]),
              "images_per_s": args.batch / timing.median_of(per[name]), "warmup_s": info[name]["warmup_s"],
              "first_loss": info[name]["first_loss"],
              "first_loss_rel_diff": None if base_loss is None else rel(info[name]["first_loss"], base_loss),
              "rounds_s": [t.median for t in per[name]]} for name in runners]

    infer = []
    if args.infer_sizes:
        import jax

        from nst_jax.nets import johnson

        params = jax.device_get(jax.jit(johnson.init_params)(jax.random.key(0)))
        for size in (int(s) for s in args.infer_sizes.split(",")):
            fns, warm = inference_runners(size, (params, args.infer_repeats))
            per_i = timing.interleave(fns, args.rounds)
            for name in fns:
                infer.append({"size": size, "framework": name, "ms_per_image": 1e3 * timing.median_of(per_i[name]),
                              "warmup_s": warm[name]})
            print(f"inference {size} px: " + ", ".join(f"{r['framework']} {r['ms_per_image']:.0f} ms"
                                                        for r in infer[-len(fns):]), file=sys.stderr, flush=True)

    scale = scaling(args) if args.scaling_devices else []
    settings = {"size": args.size, "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
                "frameworks": frameworks, "infer_sizes": args.infer_sizes, "infer_repeats": args.infer_repeats,
                "scaling_devices": args.scaling_devices, "scaling_size": args.scaling_size,
                "scaling_batch": args.scaling_batch, "scaling_steps": args.scaling_steps,
                "scaling_platform": args.scaling_platform, "torch_threads": torch.get_num_threads(),
                "torch_device": "cuda" if torch.cuda.is_available() else "cpu",
                "weights": results.weights_record(pth, pth_desc), "scaling_weights": results.INIT_PARAMS}
    doc = results.document("fast", argv, settings, {"train": train, "inference": infer, "scaling": scale}, meta)
    print(table(doc), end="")
    results.write(doc, args.out, args.record)


def _ratio(t: float | None, j: float | None) -> str:
    return f"{t / j:.2f}x" if t and j else ""


def table(doc: dict[str, Any]) -> str:
    """The results document's tables: training, inference, scaling."""
    s, res = doc["settings"], doc["results"]
    jax_s = next((r["s_per_step"] for r in res["train"] if r["framework"] == "jax"), None)
    out = [f"Training: {s['size']} px, batch {s['batch']}, Gram loss (configs/train_johnson.py); {s['rounds']} "
           f"rounds x {s['steps']} steps, the frameworks in turn within each round; the median over rounds of each "
           f"round's median step. PyTorch on {s['torch_device']}, {s['torch_threads']} threads. Ratio: PyTorch time "
           "/ nst_jax time (above 1: nst_jax faster). First-step loss: relative difference to nst_jax's (same "
           "parameters, batch, VGG-19 weights and normalisers). VGG-19 weights: as the Weights line says (random "
           "ones time the same as pretrained ones; the trained networks' images would mean nothing).", "",
           "| framework | steps/s | images/s | s/step | PyTorch / nst_jax | warm-up s | first-step loss rel. diff |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in res["train"]:
        ratio = "" if r["framework"] == "jax" else _ratio(r["s_per_step"], jax_s)
        diff = "" if r["first_loss_rel_diff"] is None else f"{r['first_loss_rel_diff']:.1e}"
        out.append(f"| {r['framework']} | {r['steps_per_s']:.3f} | {r['images_per_s']:.2f} | {r['s_per_step']:.2f} "
                   f"| {ratio} | {r['warmup_s']:.1f} | {diff} |")
    if res["inference"]:
        out += ["", f"Inference: one image per call, ms per image; {s['rounds']} rounds x {s['infer_repeats']} calls, "
                "in turn. nst_jax: `johnson.stylize` jitted; PyTorch: the twin under `torch.inference_mode`.", "",
                "| size | nst_jax ms | PyTorch eager ms | PyTorch / nst_jax | nst_jax warm-up s |",
                "| ---: | ---: | ---: | ---: | ---: |"]
        by = {(r["size"], r["framework"]): r for r in res["inference"]}
        for size in sorted({r["size"] for r in res["inference"]}):
            j, t = by.get((size, "jax")), by.get((size, "torch_eager"))
            out.append(f"| {size} | {j['ms_per_image']:.0f} | {t['ms_per_image']:.0f} | "
                       f"{_ratio(t['ms_per_image'], j['ms_per_image'])} | {j['warmup_s']:.1f} |")
    if res["scaling"]:
        platform = res["scaling"][0]["platform"]
        note = (" Forced CPU devices share the machine's cores: the time shows the partitioned program's overhead, "
                "not a speed-up (not meaningful on a 2-core machine); memory per device is what the split buys."
                if platform == "cpu" else "")
        out += ["", f"Scaling: the training step at {s['scaling_size']} px, global batch {s['scaling_batch']} "
                f"sharded over the devices as nst_jax.trainer does ({platform}); MB per device from XLA's memory "
                f"analysis of the compiled program (temporaries + arguments + outputs); random VGG-19 weights "
                f"(nst_jax.vgg.init_params).{note}", "",
                "| devices | images per device | MB per device | of which temporaries | s per step | compile s |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["scaling"]:
            step = "" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
            out.append(f"| {r['devices']} | {r['images_per_device']} | {r['mb_per_device']:.0f} | {r['temp_mb']:.0f} "
                       f"| {step} | {r['compile_s']:.1f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
