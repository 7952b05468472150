"""The one way every benchmark writes its JSON: a metadata header, its settings, its results.

    doc = results.document("run", argv, settings={...}, results=[...])
    results.write(doc, out="bench_cpu", record=args.record)  # bench_cpu/results.json and results.md; with
                                                              # --record also benchmarks/results/<class>/run.json

A document is ``{"meta": ..., "settings": ..., "results": ...}``:

* ``meta`` (:func:`metadata`): ``schema`` (1), ``benchmark`` (the module name under ``benchmarks/``),
  ``command`` (the exact command line, ``python -m benchmarks.<name> ARGS``, shell-quoted), ``date`` (UTC,
  ISO 8601, seconds), ``git`` (``commit``: HEAD's hash or null outside a checkout, ``dirty``: tracked files
  differ from it), ``machine`` (:func:`machine`), ``versions`` (:func:`versions`), ``env`` (the variables that
  change what XLA or the thread pools do, where set);
* ``settings``: the benchmark's own parameters (sizes, rounds, the weights, :func:`weights_record`);
* ``results``: its figures, in the form its ``table(doc)`` renders.

``--record`` (:func:`add_arguments`) files the document as ``benchmarks/results/<machine class>/<name>.json``,
one current file per benchmark and machine class, overwritten by the next run: the figures the docs show
(``python -m benchmarks.report`` renders ``docs/results/`` from them); their history is git's.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "benchmarks", "results")
SCHEMA = 1
# Environment variables that change what the timed code does; recorded where set.
ENV_VARS = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "XLA_PYTHON_CLIENT_PREALLOCATE", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
# Libraries recorded where installed (nst_jax's own stack) and where the benchmark imported them (PyTorch's).
LIBRARIES = ("numpy", "jax", "jaxlib", "flax", "optax")
IMPORTED_LIBRARIES = ("torch", "torchvision")


def add_arguments(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """Adds ``--record[=NAME]``: also file the JSON as ``benchmarks/results/<machine class>/NAME.json``
    (NAME defaults to ``benchmark``; give another to keep two configurations, e.g. ``run-1024``)."""
    parser.add_argument("--record", nargs="?", const=benchmark, default=None, metavar="NAME",
                        help="also write the JSON to benchmarks/results/<machine class>/NAME.json (default NAME: "
                             f"{benchmark}), the committed figures docs/results/ shows")


def check_record_name(parser: argparse.ArgumentParser, name: str | None) -> None:
    """Exits 2 (``parser.error``) unless ``name`` is None or a plain file stem (letters, digits, ``._-``)."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        parser.error(f"--record={name}: a plain name (letters, digits, '.', '_', '-'), not a path")


def command_line(benchmark: str, argv: Sequence[str]) -> str:
    """``python -m benchmarks.<benchmark> ARGS``, each argument shell-quoted: the command to run it again."""
    return shlex.join(["python", "-m", f"benchmarks.{benchmark}", *argv])


def machine_class(platform_name: str, device_kind: str, cores: int) -> str:
    """What figures are comparable across: ``cpu-<cores>core`` on a CPU, else ``<platform>-<device kind>``
    lower-cased with runs of other characters as ``-`` (``gpu-nvidia-h200``, ``tpu-v4``)."""
    if platform_name == "cpu":
        return f"cpu-{cores}core"
    kind = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-")
    kind = kind.removeprefix(f"{platform_name}-")  # "TPU v4" -> tpu-v4, not tpu-tpu-v4
    return f"{platform_name}-{kind}" if kind else platform_name


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cores() -> int:
    """CPU cores this process may use (its affinity where the OS says), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """``{"class", "cpu", "cores", "memory_bytes", "platform", "device_kind", "device_count", "os"}``: the CPU
    model (``/proc/cpuinfo``), usable cores, total memory, JAX's default backend, its first device's kind and
    the number of devices, and :func:`machine_class` of them."""
    import jax

    devices = jax.devices()
    cores = _cores()
    plat, kind = devices[0].platform, devices[0].device_kind
    return {"class": machine_class(plat, kind, cores), "cpu": _cpu_model(), "cores": cores,
            "memory_bytes": _memory_bytes(), "platform": plat, "device_kind": kind, "device_count": len(devices),
            "os": f"{platform.system()} {platform.release()} {platform.machine()}"}


def versions() -> dict[str, str]:
    """``{library: version}``: Python; numpy, jax, jaxlib, flax, optax where installed; torch and torchvision
    where this process imported them (a benchmark without PyTorch does not load it to say which it is)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES + IMPORTED_LIBRARIES:
        if name in LIBRARIES:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "unknown"))
    return out


def git_state(root: str = REPO) -> dict[str, Any]:
    """``{"commit": HEAD's hash, "dirty": tracked files differ from it}``; nulls outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def metadata(benchmark: str, argv: Sequence[str]) -> dict[str, Any]:
    """The header of a results document (see the module docstring)."""
    return {"schema": SCHEMA, "benchmark": benchmark, "command": command_line(benchmark, argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git": git_state(), "machine": machine(), "versions": versions(),
            "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
            # What else the machine ran: absolute times on a shared machine move with it, ratios far less.
            "load": round(os.getloadavg()[0], 2)}


def document(benchmark: str, argv: Sequence[str] | None, settings: dict[str, Any], results: Any,
             meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"meta", "settings", "results"}``; ``meta`` made now unless given (a benchmark that rewrites its file
    as it goes makes it once). ``argv``: the benchmark's arguments, default ``sys.argv[1:]``."""
    if meta is None:
        meta = metadata(benchmark, sys.argv[1:] if argv is None else argv)
    return {"meta": meta, "settings": settings, "results": results}


def record_path(doc: dict[str, Any], name: str, root: str | None = None) -> str:
    """``root/<machine class>/<name>.json``; ``root`` defaults to :data:`RESULTS_DIR`."""
    return os.path.join(RESULTS_DIR if root is None else root, doc["meta"]["machine"]["class"], f"{name}.json")


def write(doc: dict[str, Any], out: str | None = None, record: str | None = None, root: str | None = None,
          filename: str = "results.json") -> list[str]:
    """Writes ``doc`` (atomically, indented, keys in order) to ``out/filename`` with its page section beside it
    (``out/<stem>.md``, :func:`benchmarks.report.section`) if ``out`` is given, and to :func:`record_path` if
    ``record`` is; returns the paths written."""
    from benchmarks import report
    from nst_jax import atomic

    paths = []
    if out:
        paths += [os.path.join(out, filename), os.path.join(out, os.path.splitext(filename)[0] + ".md")]
        atomic.write_json(paths[0], doc)
        atomic.write_text(paths[1], report.section(doc))
    if record:
        paths.append(record_path(doc, record, root))
        atomic.write_json(paths[-1], doc)
    return paths


def read(path: str) -> dict[str, Any]:
    """A results document from ``path``; ValueError naming the file unless it has ``meta``, ``settings`` and
    ``results`` and schema :data:`SCHEMA`."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not {"meta", "settings", "results"} <= set(doc):
        raise ValueError(f"{path}: not a benchmark results file (no meta, settings and results)")
    if doc["meta"].get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc['meta'].get('schema')!r}, expected {SCHEMA}")
    return doc


# The settings' weights of a benchmark that draws its own parameters (nst_jax.vgg.init_params).
INIT_PARAMS = {"file": None, "sha256": None, "origin": "nst_jax.vgg.init_params(jax.random.key(0))",
               "pretrained": None, "random_init": True}


# Conv biases of torchvision's vgg19(): nn.init.constant_(bias, 0); no trained VGG-19 has them all 0.
def weights_record(path: str, origin: str = "") -> dict[str, Any]:
    """What a weights file is, for the settings of a run that used it: ``{"file", "sha256", "origin",
    "pretrained", "random_init"}``. ``pretrained``: the published file the SHA-256 names (the ``.pth`` itself,
    or for an nst_jax ``.msgpack`` the ``.pth`` its origin records), else null; ``random_init``: every
    convolution bias is 0, as torchvision's ``vgg19()`` initialises them (no trained network has that)."""
    import numpy as np

    from nst_jax import weights

    sha = weights.file_sha256(path)
    if path.endswith(".pth"):
        from weights_converter import pth_reader

        biases = pth_reader.read_state_dict(path, keep=lambda k: k.startswith("features.") and k.endswith(".bias"))
        source_sha, origin = sha, origin or path
    else:
        loaded = weights.load(path)
        biases = {k: v["bias"] for k, v in loaded.params["params"].items()}
        source_sha = loaded.origin.partition(" (sha256 ")[2]
        origin = origin or loaded.origin
    known = next((name for prefix, name in weights.KNOWN_FILES.items() if source_sha.startswith(prefix)), None)
    return {"file": os.path.basename(path), "sha256": sha, "origin": origin, "pretrained": known,
            "random_init": bool(biases) and all(not np.any(np.asarray(b)) for b in biases.values())}
