"""Run checkpoints: everything needed to continue an interrupted run exactly where it stopped.

A checkpoint (``out.ckpt`` beside ``out.png``) is msgpack (no pickle) holding the image, the optimiser state,
the step, the early-stop flag, the random key, the balance factors, the loss history so far, and a fingerprint
of everything that determines the result (config without step count and output settings, the weights' hash,
input sizes). ``--resume`` refuses a checkpoint whose fingerprint differs. Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import serialization

from nst_jax.atomic import write_bytes
from nst_jax.errors import UserError

FORMAT = "nst_jax.checkpoint"
VERSION = 1
# Fields that do not change the images a run produces, so a resume may change them.
FREE_FIELDS = ("steps", "output", "save_every", "checkpoint_every", "resume", "log_every", "content", "style",
               "init", "weights")


def path_for(output: str) -> str:
    """``out.png`` -> ``out.ckpt``."""
    return os.path.splitext(output)[0] + ".ckpt"


def fingerprint(config_dict: dict[str, Any], weights_sha256: str, content_hw: tuple[int, int],
                style_hw: list[tuple[int, int]], content_sha: str, style_sha: list[str]) -> str:
    """sha256 over what determines the result of a run (inputs by content hash, not by path)."""
    fixed = {k: v for k, v in config_dict.items() if k not in FREE_FIELDS}
    blob = json.dumps({"config": fixed, "weights": weights_sha256, "content": [list(content_hw), content_sha],
                       "style": [list(style_hw), style_sha]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, np.float32).tobytes()).hexdigest()


def save(path: str, *, carry: Any, key: jax.Array, fingerprint: str, factors: list[float],
         history: dict[str, list[float]], scale: int = 0, run_s: float = 0.0) -> None:
    """Writes the checkpoint atomically. ``carry``: a :class:`nst_jax.transfer.LoopState`; ``scale``: which size of
    a coarse-to-fine run it belongs to; ``run_s``: seconds of steps so far, over every process of the run."""
    x, opt_state, step, stopped = jax.device_get((carry.x, carry.opt_state, carry.step, carry.stopped))
    state = {
        "format": FORMAT, "version": VERSION, "fingerprint": fingerprint,
        "x": np.asarray(x), "opt_state": serialization.to_state_dict(opt_state),
        "step": int(step), "stopped": bool(stopped),
        "key": np.asarray(jax.random.key_data(key)), "factors": list(map(float, factors)),
        "history": json.dumps(history), "scale": int(scale), "run_s": float(run_s),
    }
    write_bytes(path, serialization.msgpack_serialize(state), what="checkpoint")


def _read(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise UserError(f"--resume: no checkpoint {path} (run without --resume to start afresh)")
    try:
        with open(path, "rb") as f:
            state = serialization.msgpack_restore(f.read())
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
            raise ValueError("not a checkpoint")
    except Exception as e:  # corrupt msgpack raises several types
        raise UserError(f"checkpoint {path}: unreadable ({type(e).__name__}); delete it to start afresh") from None
    return state


def scale_of(path: str) -> int:
    """Which scale of a coarse-to-fine run the checkpoint at ``path`` belongs to (0 for single-scale runs)."""
    return int(_read(path).get("scale", 0))


class Saved(NamedTuple):
    """What :func:`load` reads back: the carry, the key data, the balance factors, the loss history and the
    seconds of steps the processes before this one spent."""

    carry: Any
    key: np.ndarray
    factors: list[float]
    history: dict[str, list[float]]
    run_s: float


def load(path: str, *, template_carry: Any, fingerprint: str) -> Saved:
    """Reads a checkpoint written by :func:`save` for the same run.

    Returns:
      a :class:`Saved`.
    Raises:
      UserError: missing, corrupt, or written by a different run.
    """
    state = _read(path)
    if state["fingerprint"] != fingerprint:
        raise UserError(f"checkpoint {path}: written by a run with other settings, weights or inputs; "
                        "delete it or run without --resume")
    x0, opt0 = template_carry.x, template_carry.opt_state
    x = np.asarray(state["x"], np.float32)
    if x.shape != tuple(x0.shape):
        raise UserError(f"checkpoint {path}: image shape {x.shape} does not match this run's {tuple(x0.shape)}")
    opt_state = serialization.from_state_dict(opt0, state["opt_state"])
    # The run's step count is this run's (the template's): --steps may be raised to continue further.
    carry = template_carry._replace(x=x, opt_state=opt_state, step=np.int32(state["step"]),
                                    stopped=np.bool_(state["stopped"]))
    return Saved(carry, np.asarray(state["key"]), list(state["factors"]), json.loads(state["history"]),
                 float(state.get("run_s", 0.0)))
