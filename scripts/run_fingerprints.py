"""Fingerprints of the images and losses that every kind of run produces, to compare two revisions bit for bit.

    python scripts/run_fingerprints.py --weights=W.msgpack --out=DIR [--only=gram,batch]

Runs ``python -m nst_jax.main`` (the command line: the interface both revisions share) for every method, the
Gaussian estimators, fusions, blends, strips, the optimisers, noise init, coarse-to-fine, colour preservation
and batch mode, at 40 px for 10 steps with the test config's layers, on small images it draws itself. Writes
``DIR/fingerprints.json``: per run, the SHA-256 of each output image's pixels and of its record's loss history
and final losses (floats as written, full precision). Compare two files with ``--compare=A.json,B.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's nst_jax, whatever is installed

from nst_jax import losses  # noqa: E402

BASE = ["--config=configs/test.py", "--size=40", "--steps=10", "--config.log_every=1", "--config.chunk=5"]
SINGLE = {
    **{name: [f"--kernel={name}"] for name in losses.METHODS},  # every registered method at its defaults
    "poly_unbiased_d3": ["--kernel=poly", "--config.poly_d=3"],
    "gaussian_full": ["--kernel=gaussian", "--config.gaussian_estimator=full"],
    "gaussian_unbiased": ["--kernel=gaussian", "--config.gaussian_estimator=unbiased"],
    "gaussian_rff": ["--kernel=gaussian", "--config.gaussian_estimator=rff"],
    "fusion_linear_gaussian": ["--kernel=linear,gaussian", "--kernel_weights=0.5,0.5"],
    "fusion_bn_poly": ["--kernel=bn,poly", "--kernel_weights=0.3,0.7"],
    "blend_gram": ["--kernel=gram", "--style={s1},{s2}", "--style_blend=0.3,0.7"],
    "blend_gaussian": ["--kernel=gaussian", "--style={s1},{s2}", "--style_blend=0.3,0.7"],
    "blend_bn": ["--kernel=bn", "--style={s1},{s2}"],
    "strips_gram": ["--kernel=gram", "--strips=2"],
    "strips_bn_poly": ["--kernel=bn,poly", "--strips=3"],
    "strips_linear": ["--kernel=linear", "--strips=2", "--balance=none"],
    "noise_init": ["--kernel=gram", "--init=noise", "--seed=3"],
    "lbfgs": ["--kernel=gram", "--optimizer=lbfgs", "--steps=4"],
    "sgd_paper": ["--kernel=linear", "--optimizer=sgd_paper", "--config.tv_weight=0"],
    "tv_balance_none": ["--kernel=poly", "--balance=none", "--tv_weight=0.01"],
    "scales2": ["--kernel=gram", "--scales=2", "--size=48"],
    "luminance": ["--kernel=bn", "--preserve_colors=luminance"],
    "histogram": ["--kernel=gram", "--preserve_colors=histogram"],
    "bf16": ["--kernel=gram", "--dtype=bfloat16"],
}
BATCH = ["--content_dir={cdir}", "--style={s1};{s1},{s2}", "--kernel=gram;linear,gaussian;bn"]


def _draw(path: str, seed: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (hw[0] // 8 + 1, hw[1] // 8 + 1, 3))
    img = np.kron(low, np.ones((8, 8, 1)))[: hw[0], : hw[1]] + rng.normal(0, 20, (*hw, 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _fingerprint(png: str) -> dict[str, str]:
    pixels = np.asarray(Image.open(png).convert("RGB")).tobytes()
    out = {"pixels": _digest(pixels)}
    record = os.path.splitext(png)[0] + ".json"
    if os.path.exists(record):
        with open(record) as f:
            r = json.load(f)
        out["losses"] = _digest(json.dumps(r.get("losses"), sort_keys=True).encode())
        out["final_losses"] = _digest(json.dumps(r.get("final_losses"), sort_keys=True).encode())
        out["final_total"] = repr((r.get("final_losses") or {}).get("total"))
    return out


def _run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "nst_jax.main", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--out")
    ap.add_argument("--only", default="", help="comma-separated run names (and/or 'batch')")
    ap.add_argument("--compare", default="", help="A.json,B.json: report which runs differ")
    a = ap.parse_args()
    if a.compare:
        pa, pb = a.compare.split(",")
        fa, fb = json.load(open(pa)), json.load(open(pb))
        same = [k for k in fa if fa[k] == fb.get(k)]
        diff = [k for k in fa if k in fb and fa[k] != fb[k]]
        print(f"{len(same)} identical, {len(diff)} differ, {len(set(fa) ^ set(fb))} in one file only")
        for k in diff:
            print("differs:", k)
        sys.exit(1 if diff else 0)
    os.makedirs(a.out, exist_ok=True)
    inputs = os.path.join(a.out, "inputs")
    cdir = os.path.join(inputs, "contents")
    os.makedirs(cdir, exist_ok=True)
    s1, s2 = os.path.join(inputs, "s1.png"), os.path.join(inputs, "s2.png")
    _draw(os.path.join(cdir, "c1.png"), 1, (48, 64))
    _draw(os.path.join(cdir, "c2.png"), 2, (48, 64))
    _draw(s1, 3, (56, 56))
    _draw(s2, 4, (40, 72))
    content = os.path.join(cdir, "c1.png")
    only = {n for n in a.only.split(",") if n}
    results = {}
    for name, extra in SINGLE.items():
        if only and name not in only:
            continue
        t0 = time.time()
        out = os.path.join(a.out, "runs", name + ".png")
        args = [*BASE, f"--weights={a.weights}", f"--content={content}", f"--style={s1}", f"--output={out}"]
        _run(args + [e.format(s1=s1, s2=s2) for e in extra])
        results[name] = _fingerprint(out)
        print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    if not only or "batch" in only:
        t0 = time.time()
        bdir = os.path.join(a.out, "batch")
        args = [*BASE, f"--weights={a.weights}", f"--output_dir={bdir}"]
        _run(args + [e.format(s1=s1, s2=s2, cdir=cdir) for e in BATCH])
        for png in sorted(os.listdir(bdir)):
            if png.endswith(".png"):
                results["batch/" + png] = _fingerprint(os.path.join(bdir, png))
        print(f"batch: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    with open(os.path.join(a.out, "fingerprints.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
