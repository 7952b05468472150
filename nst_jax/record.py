"""The run record (``out.json``): what one job computed, with what, on what, how long it took and how it
ended (``status``), and the exit status the command lines give each ending.

The outcome of every job is the record's ``status``: ``done``, ``stopped_early`` (the paper's SGD stopped on
its tolerance), ``nonfinite`` (the energy became NaN or infinite: the image is the last finite one, the record
says where) or ``interrupted``. The command lines map it to exit codes (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

import nst_jax
from nst_jax import losses, transfer
from nst_jax import weights as weights_lib
from nst_jax.loop import Tracker

STATUSES = ("done", "stopped_early", "nonfinite", "interrupted")
EXIT_CODES = {"done": 0, "stopped_early": 0, "nonfinite": 2, "interrupted": 130}
"""Exit status of a command line whose run ended with each record ``status``."""


def status(tracker: Tracker, steps: int, interrupted: bool, stopped: bool) -> str:
    """How a job ended: its tracker after the loop, the run's steps, whether the loop was stopped with steps
    left (Ctrl-C, the preview's button) and whether the job stopped early on its tolerance."""
    if tracker.nonfinite is not None:
        return "nonfinite"
    if interrupted and tracker.step < steps and not stopped:
        return "interrupted"
    if stopped and tracker.step < steps:
        return "stopped_early"
    return "done"


def run_record(job: Any, problem: transfer.Problem, weights: weights_lib.Weights, factors: Sequence[float],
               base: dict[tuple[int, str], float], tracker: Tracker, status: str, *,
               final: dict[str, float] | None, resumed_from: int | None, times: dict[str, float]) -> dict[str, Any]:
    """The JSON-serialisable record of one job (``out.json``)."""
    step, run_s, start = tracker.step, times["run_s"], resumed_from or 0
    record = {
        "nst_jax": nst_jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": job.config.to_dict(),
        "content": {"input": job.content_desc, "size": list(job.content.shape[:2])},
        "style": {"inputs": job.style_descs, "size": [list(s.shape[:2]) for s in job.styles]},
        "weights": {"path": weights.path, "source": weights.source, "sha256": weights.sha256,
                    "origin": weights.origin},
        "device": device_info(),
        "versions": versions(),
        "terms": [{"method": t.name, "weight": t.weight, "params": t.params} for t in problem.terms],
        "balance": {"mode": job.config.balance,
                    "factors": {t.name: f for t, f in zip(problem.terms, factors, strict=True)}},
        "paper_scales": {f"{problem.terms[i].name}/{layer}": v for (i, layer), v in base.items()},
        "status": status,
        "steps_run": step,
        "resumed_from": resumed_from,
        "steps_this_process": step - start,
        "stopped_early": status == "stopped_early",
        **times,
        "run_s_whole": times.get("run_s_before", 0.0) + run_s,
        "iterations_per_s": (step - start) / run_s if run_s > 0 else None,
        "losses": tracker.history,
        "final_losses": final,
        "notes": estimate_notes(problem),
    }
    if tracker.nonfinite is not None:
        record["nonfinite"] = {"step": tracker.nonfinite[0], "terms": tracker.nonfinite[1]}
    if job.masks is not None:
        record["regions"] = job.masks.record(final)
    if job.temporal is not None:  # a video frame (nst_jax.clip)
        record["temporal"] = {"weight": job.temporal.weight, "kept_fraction": float(np.mean(job.temporal.mask))}
    return record


def versions() -> dict[str, str]:
    """Versions of the libraries that made a result."""
    import flax
    import jaxlib
    import optax

    return {
        "nst_jax": nst_jax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
    }


def device_info() -> dict[str, Any]:
    """The device a result was computed on."""
    dev = jax.devices()[0]
    return {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count(),
            "host": platform.node()}


def estimated_terms(problem: transfer.Problem) -> tuple[str, ...]:
    """The energy terms that are unbiased estimates (a style method's :attr:`unbiased_estimate`): they, and the
    style and total energies that add them, can be negative, which a display and the record say."""
    if not any(t.method.unbiased_estimate for t in problem.terms):
        return ()
    names = losses.term_names(problem.terms)
    fused = [f"style:{n}" for n, t in zip(names, problem.terms, strict=True)
             if len(problem.terms) > 1 and t.method.unbiased_estimate]
    return ("total", "style", *fused, *(f"style@{r}" for r in problem.regions))


def estimate_notes(problem: transfer.Problem) -> list[str]:
    """The run record's words on terms that can be negative (empty when none can)."""
    return [f"style method {t.name} ({t.method.describe()}): its energy is an unbiased estimate of MMD^2, which "
            f"fluctuates around its expected value and is negative when the result's features are as close to "
            f"the style's as the estimate can tell; read its trend over the loss history (or the cross-evaluation "
            f"of python -m nst_jax.compare, which uses exact distances), not its sign"
            for t in problem.terms if t.method.unbiased_estimate]
