"""Row permutations drawn ahead of the steps that use them, so an unrolled chunk compiles each draw once.

On a CPU a chunk's steps are unrolled into straight-line code (:func:`nst_jax.transfer.chunk`), so whatever a
step computes is compiled once per step. The linear-time MMD's permutations
(:func:`nst_jax.losses.mmd.linear_time_pairs`: two per style layer and Gaussian or mkmmd term, each a
sort-based shuffle of up to M = H*W rows fed by threefry bits) drawn inside each unrolled step would be most of
the Gaussian's program, compiled and loaded once per step. So the chunk draws every step's permutations in one
loop before its steps (the loop's body compiled once) and each unrolled step takes its own from that table
(``tests/test_draws.py`` checks that a 3-step chunk compiles as many sorts as a 1-step one).

A draw depends only on its key and the row count, so the table holds the very permutations the steps would
draw themselves: results are unchanged bit for bit. Losses call :func:`permutation`; the chunk records what
one step draws (:func:`recording`), in the order the step's trace draws it, and each step replays its row of
the table in the same order (:func:`replaying`). Outside both, :func:`permutation` is
``jax.random.permutation``. The record and the replay are trace-time bookkeeping only: the computation is the
same pure function of the key.

The table holds every draw of the chunk at once: (chunk + 1) x 2 permutations per style layer and drawing
term, int32, 6 x 2 x 1 MB for relu1_1 at 512 px with the CPU's 5-step chunk, beside that layer's 64 MB of
samples.

Not for draws under ``jax.vmap`` (a batched key): none of the linear-time estimator's callers does that
(weighted samples draw in proportion to their weights instead, :func:`nst_jax.losses.mmd.linear_time_pairs`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Sequence

import jax


@dataclasses.dataclass
class _Tape:
    replay: Sequence[jax.Array] | None  # None: recording
    drawn: list[jax.Array]


_TAPE: contextvars.ContextVar[_Tape | None] = contextvars.ContextVar("nst_jax_draws", default=None)


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``range(n)``, (n,) int32: ``jax.random.permutation(key, n)``, or,
    inside :func:`replaying`, the next one of the table (drawn earlier from the same key)."""
    tape = _TAPE.get()
    if tape is None:
        return jax.random.permutation(key, n)
    if tape.replay is None:
        value = jax.random.permutation(key, n)
    else:
        if len(tape.drawn) == len(tape.replay):
            raise RuntimeError(f"a step drew more permutations than its recording ({len(tape.replay)})")
        value = tape.replay[len(tape.drawn)]
        if value.shape != (n,):
            raise RuntimeError(f"draw {len(tape.drawn)} of a step is a permutation of {n} rows, but its "
                               f"recording has shape {value.shape}")
    tape.drawn.append(value)
    return value


@contextlib.contextmanager
def recording() -> Iterator[list[jax.Array]]:
    """Within the block, every :func:`permutation` is drawn and appended, in order, to the list it yields."""
    tape = _Tape(None, [])
    token = _TAPE.set(tape)
    try:
        yield tape.drawn
    finally:
        _TAPE.reset(token)


@contextlib.contextmanager
def replaying(values: Sequence[jax.Array] | None) -> Iterator[None]:
    """Within the block, the i-th :func:`permutation` returns ``values[i]`` (what :func:`recording` gave for
    the same computation); a block that draws more, fewer or other-sized permutations is an error. ``None``:
    nothing replayed (every draw is drawn)."""
    if values is None:
        yield
        return
    tape = _Tape(list(values), [])
    token = _TAPE.set(tape)
    try:
        yield
    finally:
        _TAPE.reset(token)
    if len(tape.drawn) != len(tape.replay):
        raise RuntimeError(f"a step drew {len(tape.drawn)} permutations, its recording {len(tape.replay)}")
