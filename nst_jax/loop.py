"""The optimisation loop of a run: compiled chunks of steps until every job is done, and the bookkeeping
between chunks (each job's loss history, steps done, last finite image, first non-finite step), with what a
progress display and a checkpoint hook are given after each chunk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from nst_jax import transfer
from nst_jax.placement import Placement


@dataclasses.dataclass
class Prepared:
    """A run's arrays before its first step, stacked on the job axis (:func:`nst_jax.job.prepare`); ``state``
    is updated by the loop."""

    params: Any
    tgt: Any
    base: dict[tuple[int, str], float]
    factors: list[list[float]]
    scales: Any
    state: transfer.LoopState
    loop_key: jax.Array
    place: Placement
    resumed: Any  # nst_jax.job.Resumed or None
    setup_s: float


class Tracker:
    """One job's bookkeeping between chunks: the loss history every ``log_every`` steps, the steps done, the
    last image whose energy was finite, the energy terms at it (``current``) and the first non-finite step."""

    def __init__(self, names: Sequence[str], log_every: int, x0: np.ndarray, step: int = 0,
                 history: dict[str, list[float]] | None = None):
        self.names = list(names)
        self.log_every = log_every
        self.history = history or {"step": [], **{n: [] for n in self.names}}
        self.step = step
        self.last_finite = x0
        self.current: dict[str, float] = {}
        self.nonfinite: tuple[int, dict[str, float]] | None = None

    def absorb(self, terms: dict[str, np.ndarray], new_step: int, x: np.ndarray,
               now: dict[str, float] | None = None) -> None:
        """Takes one chunk's loss terms ({name: (length,)}, from the step before), the state after it and the
        terms at that state (``now``)."""
        for i in range(new_step - self.step):
            t = self.step + i
            row = {n: float(terms[n][i]) for n in self.names}
            if not all(math.isfinite(v) for v in row.values()):
                self.nonfinite = (t, row)
                return
            if t % self.log_every == 0:
                self.log(t, row)
        if not np.all(np.isfinite(x)):
            self.nonfinite = (new_step, {})
            return
        self.last_finite = x
        self.step = new_step
        self.current = dict(now or {})

    def log(self, step: int, row: dict[str, float]) -> None:
        """Adds ``row`` at ``step`` to the history (once per step)."""
        if self.history["step"] and self.history["step"][-1] >= step:
            return
        self.history["step"].append(step)
        for n in self.names:
            self.history[n].append(row[n])

    def live(self, steps: int, stopped: bool) -> bool:
        """Whether the job has steps left to run."""
        return self.nonfinite is None and self.step < steps and not stopped

    def latest(self) -> dict[str, float]:
        """The energy terms at the current step (empty before the first chunk)."""
        return dict(self.current)


@dataclasses.dataclass
class Chunk:
    """What the ``after_chunk`` hook sees after each chunk: the state, each job's tracker, the loop key, the
    balance factors, the seconds since the loop started in this process, the step it started from and the
    seconds of steps before this process (a resumed run)."""

    state: transfer.LoopState
    trackers: list[Tracker]
    loop_key: jax.Array
    factors: list[list[float]]
    elapsed_s: float
    start_step: int
    before_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a progress display is given after each chunk of a run.

    Attributes:
      step, steps: steps done and the run's (this scale's) step count.
      losses: the energy terms at ``step``'s image ({"total", "content", "style", "tv", ...}).
      rate: steps per second in this process.
      start_step: the step this process started from (a resumed run's checkpoint; else 0).
      scale, scales: which size of a coarse-to-fine run (0-based) of how many; size: its (H, W).
      label: what runs, for a display to name it (e.g. ``"scale 1/2, 64x34"``; empty for a plain run).
      estimates: the terms that are unbiased estimates and can be negative (:func:`estimated_terms`).
    """

    step: int
    steps: int
    losses: dict[str, float]
    rate: float
    start_step: int = 0
    scale: int = 0
    scales: int = 1
    size: tuple[int, int] = (0, 0)
    label: str = ""
    estimates: tuple[str, ...] = ()

    @property
    def eta_s(self) -> float:
        """Seconds left at the current rate (inf before the first chunk)."""
        return (self.steps - self.step) / self.rate if self.rate > 0 else float("inf")


def run_chunks(compiled: Any, s: Prepared, trackers: list[Tracker], steps: int, batched: bool, start_step: int,
          before_s: float, after_chunk: Callable[[Chunk], bool] | None) -> tuple[bool, np.ndarray]:
    """Runs chunks while a job has steps left; updates ``s.state`` and the trackers. Returns (whether
    ``after_chunk`` stopped it with steps left, each job's early-stop flag)."""

    def any_live() -> bool:
        return any(t.live(steps, bool(f)) for t, f in zip(trackers, np.asarray(s.state.stopped), strict=True))

    run_t0 = time.time()
    while any_live():
        s.state, terms, now = compiled(s.state, s.params, s.tgt, s.scales, s.loop_key)
        terms, now, host_steps = jax.device_get((terms, now, s.state.step))
        x_host = s.place.host(s.state.x)
        for j, tracker in enumerate(trackers):
            if tracker.nonfinite is None:
                tracker.absorb({n: v[j] for n, v in terms.items()}, int(host_steps[j]), x_host[j],
                               {n: float(v[j]) for n, v in now.items()})
        if after_chunk is not None and any(t.nonfinite is None for t in trackers):
            state = s.place.readable(s.state)
            state = state if batched else jax.tree.map(lambda a: a[0], state)
            if after_chunk(Chunk(state, trackers, s.loop_key, s.factors, time.time() - run_t0, start_step, before_s)):
                return any_live(), np.asarray(s.state.stopped)
    return False, np.asarray(s.state.stopped)


def final_losses(problem: transfer.Problem, s: Prepared, trackers: list[Tracker]) -> list[dict[str, float] | None]:
    """Each job's energy terms at its last finite image, with that step's key (None where non-finite): the
    last chunk's report, or computed here when no chunk ran (a run resumed at its end)."""
    if all(t.current or t.nonfinite is not None for t in trackers):
        return [None if t.nonfinite is not None else dict(t.current) for t in trackers]
    x_final = s.place.stacked(np.stack([t.last_finite for t in trackers]))
    steps = s.place.stacked(np.asarray([t.step for t in trackers], np.int32))
    value, final = jax.device_get(s.place.function("energy", problem)(
        s.params, s.tgt, s.scales, x_final, s.loop_key, steps))
    out: list[dict[str, float] | None] = []
    for j, t in enumerate(trackers):
        out.append(None if t.nonfinite is not None
                   else {"total": float(value[j]), **{n: float(v[j]) for n, v in final.items()}})
    return out
