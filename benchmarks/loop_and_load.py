"""Two figures the README quotes: how a chunk's steps run on the CPU, and what verifying a weights file costs.

    python benchmarks/loop_and_load.py                 # both, at 128 px
    python benchmarks/loop_and_load.py --size=256 --repeats=5

* ``loop``: median ms per step of :func:`nst_jax.transfer.chunk` with ``chunk`` steps in a ``lax.scan``
  (``unroll=False``) and unrolled into straight-line code (``unroll=True``), and of one bare jitted
  value-and-grad of the energy, for the Gram method with the default config's layers on a square image. Why the
  CPU unrolls (``config.CPU_MAX_CHUNK``): XLA:CPU runs a loop body's convolutions slowly.
* ``load``: best and median ms of :func:`nst_jax.weights.params_sha256` over a full VGG-19's parameters (80 MB)
  and of :func:`nst_jax.weights.load` of a file holding them (reading, parsing, shape checks and the digest).

Parameters are random (:func:`nst_jax.vgg.init_params`): neither figure depends on their values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import results, timing  # noqa: E402


def loop(size: int, chunk: int, repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    from configs import default
    from nst_jax import config as config_lib
    from nst_jax import transfer, vgg

    c = default.get_config()
    problem = config_lib.problem(c)
    settings = config_lib.step_settings(c, "torchvision")
    key = jax.random.key(0)
    params = vgg.init_params(key)
    x = jax.random.uniform(key, (size, size, 3), jnp.float32)
    tgt = transfer.targets(problem, params, x, [x[::-1]])
    scales = {"content": jnp.float32(1.0), "style": {(0, n): jnp.float32(1.0) for n in problem.style_layers}}
    out = {}
    for name, unroll in (("scan", False), ("unrolled", True)):
        fn = jax.jit(lambda s, unroll=unroll: transfer.chunk(problem, settings, chunk, s, params, tgt, scales, key,
                                                             unroll=unroll))
        state = transfer.init_state(problem, settings, x)
        out[name] = timing.repeat(lambda fn=fn, state=state: fn(state), repeats, per=chunk).median
    step = jax.jit(jax.value_and_grad(lambda y: transfer.energy(problem, params, tgt, scales, y, key)[0]))
    out["value_and_grad"] = timing.repeat(lambda: step(x), repeats).median
    return {k: 1e3 * v for k, v in out.items()}


def load(repeats: int) -> dict[str, float]:
    import jax

    from nst_jax import vgg, weights

    params = jax.tree.map(lambda a: jax.device_get(a), vgg.init_params(jax.random.key(0)))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "vgg19.msgpack")
        weights.save(path, params, "torchvision", "random (benchmark)")
        loaded = weights.load(path).params
        digest = timing.repeat(lambda: weights.params_sha256(loaded), repeats, warmup=0)
        whole = timing.repeat(lambda: weights.load(path), repeats, warmup=0)
        megabytes = os.path.getsize(path) / 1e6
    return {"file_MB": megabytes, "sha256_best_ms": 1e3 * digest.best, "sha256_median_ms": 1e3 * digest.median,
            "load_best_ms": 1e3 * whole.best, "load_median_ms": 1e3 * whole.median}


def table(doc: dict[str, Any]) -> str:
    """The results document's figures, one line each."""
    env, res = doc["settings"], doc["results"]
    lines = [f"- loop {env['size']} px, Gram, chunk {env['chunk']}: {name} {ms:.0f} ms per step (median of "
             f"{env['repeats']})" for name, ms in res["loop"].items()]
    lines += [f"- load: {name} {value:.1f}" for name, value in res["load"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="", help="folder for results.json and results.md (default: print only)")
    results.add_arguments(parser, "loop_and_load")
    args = parser.parse_args(argv)
    results.check_record_name(parser, args.record)
    settings = {"size": args.size, "chunk": args.chunk, "repeats": args.repeats, "weights": results.INIT_PARAMS}
    doc = results.document("loop_and_load", argv, settings,
                           {"loop": loop(args.size, args.chunk, args.repeats), "load": load(args.repeats)})
    print(table(doc), end="")
    results.write(doc, args.out, args.record)


if __name__ == "__main__":
    main()
