"""Time to an image: the real command lines, run as a user runs them, from process start to the written PNG.

    python -m benchmarks.end_to_end --out=DIR                                   # CPU: 256 px, 500 steps
    python -m benchmarks.end_to_end --out=DIR --size=512 --device=cuda          # GPU
    python -m benchmarks.end_to_end --out=DIR --dry_run                         # checks the script: 64 px, 2 steps

For every method and program, two runs one after the other: **cold** (empty compilation caches) and **warm**
(the same command again, the caches the cold run filled). Programs:

* ``nst_jax``: ``python -m nst_jax.main`` with ``--compile_cache`` set to a fresh folder (its cold run fills it);
* ``torch_eager``: ``python -m benchmarks.torch_cli --mode=eager`` (``torch.optim.Adam``, eager kernels);
* ``torch_step``: ``python -m benchmarks.torch_cli --mode=step`` (the whole step under ``torch.compile``;
  ``TORCHINDUCTOR_CACHE_DIR`` a fresh folder per method, so cold compiles and warm loads Inductor's caches).

Both read the same PNG inputs (the package's demo content and style, written to ``--out`` at ``--size``) and a
seeded random torchvision VGG-19 (``.pth`` for PyTorch, converted once for nst_jax; random weights time the same
as the pretrained ones). Per run: wall seconds from spawning the process to its exit with the PNG written, and
to the first step (nst_jax: the run record's ``steps_started_at``, after compilation; PyTorch: the end of its
first step, which compiles, less one later step). Writes ``e2e.json`` (:mod:`benchmarks.results`) and ``e2e.md``
(rewritten after every run, so a cut run keeps what it finished); ``--record`` files the JSON for
``docs/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import report, results, torch_cli
from nst_jax import losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS: tuple[str, ...] = losses.METHODS
"""Every method of nst_jax's registry; the PyTorch programs run those that :mod:`benchmarks.torch_cli` offers
(:data:`TORCH_METHODS`) and skip the others."""
TORCH_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m in torch_cli.PAPER_SCALES)
PROGRAMS = ("nst_jax", "torch_eager", "torch_step")


def prepare(out: str, size: int) -> tuple[str, str, str, str]:
    """(content PNG, style PNG, .pth, .msgpack) in ``out``: the demo images and seeded random VGG-19 weights."""
    import numpy as np
    from PIL import Image

    from benchmarks.run import weights_pth
    from nst_jax import demo

    paths = []
    for name, rgb in (("content", demo.content_image(size)), ("style", demo.style_image(size))):
        path = os.path.join(out, f"{name}.png")
        Image.fromarray(np.round(np.clip(np.asarray(rgb), 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    pth, _ = weights_pth("", out)
    msgpack = os.path.join(out, "vgg19-random.msgpack")
    if not os.path.exists(msgpack):
        subprocess.run([sys.executable, "-m", "weights_converter", f"--checkpoint={pth}", f"--output={msgpack}"],
                       cwd=REPO, check=True, capture_output=True)
    return paths[0], paths[1], pth, msgpack


def command(program: str, method: str, args: Any, files: tuple[str, str, str, str], output: str,
            cache: str) -> tuple[list[str], dict[str, str]]:
    content, style, pth, msgpack = files
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if program == "nst_jax":
        cmd = [sys.executable, "-m", "nst_jax.main", f"--content={content}", f"--style={style}", f"--weights={msgpack}",
               f"--output={output}", f"--size={args.size}", f"--steps={args.steps}", f"--kernel={method}",
               f"--compile_cache={cache}"]
        if args.device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        return cmd, env
    env["TORCHINDUCTOR_CACHE_DIR"] = cache
    env["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    cmd = [sys.executable, "-m", "benchmarks.torch_cli", f"--pth={pth}", f"--content={content}", f"--style={style}",
           f"--output={output}", f"--size={args.size}", f"--steps={args.steps}", f"--kernel={method}",
           f"--mode={program.removeprefix('torch_')}", f"--device={args.device}"]
    return cmd, env


def run_once(cmd: list[str], env: dict[str, str], output: str, program: str) -> dict[str, Any]:
    if os.path.exists(output):
        os.remove(output)
    spawned = time.time()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - spawned
    if proc.returncode != 0 or not os.path.exists(output):
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}"}
    if program == "nst_jax":
        record = json.load(open(os.path.splitext(output)[0] + ".json"))
        started, extra = record["steps_started_at"], {k: record[k] for k in ("setup_s", "compile_s", "run_s")}
    else:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        started, extra = info["steps_started_at"], {k: info[k] for k in ("import_s", "setup_s", "steps_s")}
    return {"wall_s": wall, "to_first_step_s": started - spawned, **extra}


def table(doc: dict[str, Any]) -> str:
    """The results document's table: per method and program, seconds to the first step and to the PNG, cold and
    warm."""
    env, rows = doc["settings"], doc["results"]
    lines = [f"{env['size']} px, {env['steps']} steps, device {env['device']}; each program run twice, cold (empty "
             "compilation caches) then warm (the caches the cold run filled).", "",
             "| method | program | cold: to first step s | cold: to PNG s | warm: to first step s | warm: to PNG s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    by = {(r["method"], r["program"], r["run"]): r for r in rows}
    for m in dict.fromkeys(r["method"] for r in rows):
        for p in dict.fromkeys(r["program"] for r in rows):
            cells = []
            for run in ("cold", "warm"):
                r = by.get((m, p, run), {})
                cells += ([f"{r['to_first_step_s']:.1f}", f"{r['wall_s']:.1f}"] if "wall_s" in r
                          else [r.get("error", "")[:60], ""])
            lines.append(f"| {m} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=None, help="default 256 on a CPU, 512 on a GPU")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dry_run", action="store_true", help="64 px, 2 steps: checks the script")
    results.add_arguments(parser, "end_to_end")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    if args.dry_run:
        args.size, args.steps = 64, 2
    args.size = args.size or (256 if args.device == "cpu" else 512)
    programs = [p for p in args.programs.split(",") if p]
    for p in programs:
        if p not in PROGRAMS:
            parser.error(f"unknown program {p!r}; expected some of {','.join(PROGRAMS)}")
    os.makedirs(args.out, exist_ok=True)
    files = prepare(args.out, args.size)
    from benchmarks.run import weights_pth

    methods = [m for m in args.methods.split(",") if m]
    settings = {"size": args.size, "steps": args.steps, "methods": methods, "programs": programs,
                "device": args.device, "weights": results.weights_record(files[2], weights_pth("", args.out)[1])}
    meta = results.metadata("end_to_end", sys.argv[1:] if argv is None else argv)
    rows: list[dict[str, Any]] = []
    for method in methods:
        for program in programs:
            if program != "nst_jax" and method not in TORCH_METHODS:
                print(f"{method}: {program} skipped (benchmarks.torch_cli has no {method})", flush=True)
                continue
            cache = os.path.join(args.out, "caches", f"{program}-{method}")
            shutil.rmtree(cache, ignore_errors=True)
            output = os.path.join(args.out, f"{program}-{method}.png")
            cmd, run_env = command(program, method, args, files, output, cache)
            for run in ("cold", "warm"):
                row = {"method": method, "program": program, "run": run, **run_once(cmd, run_env, output, program)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                doc = results.document("end_to_end", None, settings, rows, meta)
                results.write(doc, args.out, args.record, filename="e2e.json")
    print(report.section(results.document("end_to_end", None, settings, rows, meta)))
    walls = [r["wall_s"] for r in rows if "wall_s" in r]
    return 0 if walls and len(walls) == len(rows) and statistics.median(walls) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
