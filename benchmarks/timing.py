"""The one timing loop of every benchmark: untimed warm-up calls, then timed calls each ended by a sync.

    from benchmarks import timing

    t = timing.repeat(lambda: step(x), 5)                        # JAX: waits for the result's arrays
    1e3 * t.median, 1e3 * t.best                                 # ms per call
    t = timing.repeat(block, 4, warmup=0, per=5, sync=timing.torch_sync(device))   # s per step of 5-step blocks
    out, seconds = timing.once(compile_it)                       # one call: compilation, a first call
    per = timing.interleave({"jax": measure_jax, "torch": measure_torch}, rounds=3)  # turns within each round
    timing.median_of(per["jax"])                                 # median over rounds of each round's median

A timed call runs from just before ``fn()`` to the return of ``sync(fn())``: JAX dispatches asynchronously,
so without the sync a call's time would be its dispatch; PyTorch on a GPU likewise until
``torch.cuda.synchronize()``. :func:`interleave` takes turns between measurements within each round, so a
drift of the machine's load (it is shared) hits all of them alike, and only ratios measured side by side mean
much on a busy machine.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]


def ready(out: Any) -> Any:
    """``jax.block_until_ready(out)`` if JAX is imported (other leaves pass through), else ``out`` as it is."""
    jax = sys.modules.get("jax")
    return out if jax is None else jax.block_until_ready(out)


def no_sync(out: Any) -> Any:
    """For calls that are synchronous already (NumPy, PyTorch on a CPU, a call that blocks itself)."""
    return out


def torch_sync(device: Any) -> Callable[[Any], Any]:
    """A sync for PyTorch on ``device`` (a ``torch.device`` or its name): ``torch.cuda.synchronize()`` on a
    CUDA device, nothing on a CPU (eager CPU kernels have finished when the call returns)."""
    if str(device).startswith("cuda"):
        import torch

        def sync(out: Any) -> Any:
            torch.cuda.synchronize()
            return out

        return sync
    return no_sync


@dataclasses.dataclass(frozen=True)
class Timing:
    """What :func:`repeat` measured.

    Attributes:
      seconds: wall seconds of each timed call, in call order (empty when nothing was timed).
      per: units of work in one call (steps of a block), so that :attr:`median` and :attr:`best` are per unit.
      warmup_s: wall seconds of the untimed warm-up calls together (a first JAX call compiles).
    """

    seconds: tuple[float, ...]
    per: int = 1
    warmup_s: float = 0.0

    @property
    def median(self) -> float:
        """Median call time / ``per``, seconds."""
        return statistics.median(self.seconds) / self.per

    @property
    def best(self) -> float:
        """Fastest call time / ``per``, seconds."""
        return min(self.seconds) / self.per


def once(fn: Callable[[], T], *, sync: Callable[[Any], Any] = ready, clock: Clock = time.perf_counter
         ) -> tuple[T, float]:
    """(``fn()``, wall seconds of the call and its ``sync``): compilation, a first call, a warm-up."""
    t0 = clock()
    out = fn()
    sync(out)
    return out, clock() - t0


def repeat(fn: Callable[[], Any], repeats: int, *, warmup: int = 1, per: int = 1,
           sync: Callable[[Any], Any] = ready, clock: Clock = time.perf_counter) -> Timing:
    """Calls ``fn()`` ``warmup`` times untimed (their total time is ``warmup_s``), then ``repeats`` times,
    timing each call from just before it to the return of ``sync`` on its result.

    ``fn`` may carry state between calls (an optimisation's carry, the next block's steps); ``per`` is the
    number of units (steps) one call does."""
    if repeats < 0 or warmup < 0 or per < 1:
        raise ValueError(f"repeats and warmup must be >= 0 and per >= 1, not {repeats}, {warmup}, {per}")
    warmup_s = 0.0
    if warmup:
        t0 = clock()
        for _ in range(warmup):
            sync(fn())
        warmup_s = clock() - t0
    seconds = []
    for _ in range(repeats):
        t = clock()
        sync(fn())
        seconds.append(clock() - t)
    return Timing(tuple(seconds), per, warmup_s)


def interleave(measure: Mapping[str, Callable[[], T]], rounds: int,
               on_round: Callable[[int, dict[str, T]], None] | None = None) -> dict[str, list[T]]:
    """``{name: [measure[name]() of each round]}``: each round calls every measurement once, in the mapping's
    order, so a drift of the machine's load reaches each alike; ``on_round(round, {name: its result})`` after
    each round (progress lines)."""
    out: dict[str, list[T]] = {name: [] for name in measure}
    for rnd in range(rounds):
        this = {name: fn() for name, fn in measure.items()}
        for name, value in this.items():
            out[name].append(value)
        if on_round is not None:
            on_round(rnd, this)
    return out


def median_of(rounds: Sequence[Timing]) -> float:
    """The median over rounds of each round's :attr:`Timing.median`, seconds per unit."""
    return statistics.median(t.median for t in rounds)
