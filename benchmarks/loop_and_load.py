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
import statistics
import tempfile
import time


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


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
        jax.block_until_ready(fn(state))
        run = lambda fn=fn, state=state: jax.block_until_ready(fn(state))  # noqa: E731
        out[name] = statistics.median(_times(run, repeats)) / chunk
    step = jax.jit(jax.value_and_grad(lambda y: transfer.energy(problem, params, tgt, scales, y, key)[0]))
    jax.block_until_ready(step(x))
    out["value_and_grad"] = statistics.median(_times(lambda: jax.block_until_ready(step(x)), repeats))
    return {k: 1e3 * v for k, v in out.items()}


def load(repeats: int) -> dict[str, float]:
    import jax

    from nst_jax import vgg, weights

    params = jax.tree.map(lambda a: jax.device_get(a), vgg.init_params(jax.random.key(0)))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "vgg19.msgpack")
        weights.save(path, params, "torchvision", "random (benchmark)")
        loaded = weights.load(path).params
        digest = _times(lambda: weights.params_sha256(loaded), repeats)
        whole = _times(lambda: weights.load(path), repeats)
        megabytes = os.path.getsize(path) / 1e6
    return {"file_MB": megabytes, "sha256_best_ms": 1e3 * min(digest),
            "sha256_median_ms": 1e3 * statistics.median(digest), "load_best_ms": 1e3 * min(whole),
            "load_median_ms": 1e3 * statistics.median(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import jax

    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, {os.cpu_count()} cores")
    for name, ms in loop(args.size, args.chunk, args.repeats).items():
        print(f"loop {args.size} px, Gram, chunk {args.chunk}: {name} {ms:.0f} ms per step (median of {args.repeats})")
    for name, value in load(args.repeats).items():
        print(f"load: {name} {value:.1f}")


if __name__ == "__main__":
    main()
