"""What a run tells its user: the progress bar and the one-line summary of a finished run.

Both read only what the run computed (:class:`nst_jax.loop.Progress` after each chunk, the run record at the
end), so what they print is what happened: the bar's losses are those of the step it shows, and the summary
counts the steps and seconds of this process and of the whole run (every scale, every process of a resumed
run).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from nst_jax.loop import Progress

SHOWN_TERMS = ("total", "content", "style", "tv")


class ProgressBar:
    """A one-line live bar on a terminal (a line per update otherwise): label, step, the loss terms at that
    step, it/s, ETA. Call it with each :class:`~nst_jax.loop.Progress`; a new label (the next scale of a
    coarse-to-fine run, the next batch round) starts a new line."""

    def __init__(self, stream: TextIO | None = None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.started = time.time()
        self._label: str | None = None
        self._open = False

    def __call__(self, p: Progress) -> None:
        if self._open and p.label != self._label:
            self.stream.write("\n")
        self._label = p.label
        self.stream.write(("\r" if self.tty else "") + line(p) + ("\033[K" if self.tty else "\n"))
        self._open = self.tty and p.step < p.steps
        if self.tty and not self._open:
            self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def line(p: Progress, width: int = 24) -> str:
    """The bar's text for ``p``, e.g. ``scale 1/2, 64x34 [######..] 30/40 total 59.53 ... | 9.8 it/s | ETA
    00:00:01``; a resumed run's bar says from which step."""
    filled = int(round(p.step / max(p.steps, 1) * width))
    eta = p.eta_s
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "--:--:--"
    # "~": an unbiased estimate (the Gaussian's and mkmmd's MMD^2 by default), which can be negative.
    shown = " ".join(f"{k}{'~' if k in p.estimates else ''} {p.losses[k]:.4g}" for k in SHOWN_TERMS
                     if k in p.losses)
    head = f"{p.label} " if p.label else ""
    resumed = f" (resumed from {p.start_step})" if p.start_step else ""
    return (f"{head}[{'#' * filled}{'.' * (width - filled)}] {p.step}/{p.steps}{resumed} {shown} | "
            f"{p.rate:.2f} it/s | ETA {eta_text}")


def summary(record: dict[str, Any]) -> str:
    """What a finished run did, from its record: steps and seconds of steps in this process (after its
    compile time), every scale counted, the whole run's when it was resumed, and the sizes of a coarse-to-fine
    run."""
    text = (f"{record['steps_this_process']} steps in {record['run_s']:.1f} s after {record['compile_s']:.1f} s "
            f"compile")
    scales = record.get("scales") or [record]
    if len(scales) > 1:
        sizes = ", ".join(f"{s['size'][1]}x{s['size'][0]}" for s in scales)
        text = f"{len(scales)} scales ({sizes}): {text}"
    resumed = [s for s in scales if s.get("resumed_from") is not None]
    if resumed:
        r = resumed[0]
        text += (f"; resumed from step {r['resumed_from']}: the run did {r['steps_run']} steps at this size "
                 f"in {r['run_s_whole']:.1f} s over all its processes")
    if record.get("notes"):
        text += ("; the style energy is an unbiased estimate (~ on the bar), which can be negative: the record's "
                 "notes say how to read it")
    return text
