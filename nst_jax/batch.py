"""Batch mode: every content image of a folder x every style x every method, over all devices and hosts.

    python -m nst_jax.main --content_dir=photos --style="a.jpg;b.jpg" --kernel="gram;bn" --output_dir=out

Jobs. The job list is every image in ``content_dir`` (sorted by name) x every style x every method, in that
order; ``;`` separates the alternatives, while ``+`` and ``,`` keep their single-run meanings
(``--kernel=linear+gaussian`` is one fused method, ``--style=a.jpg,b.jpg`` one blend of two styles). Job
``C x S x M`` writes
``OUT/<C stem>__<S stem>__<M>.png`` and its run record ``.json`` beside it (a fusion's methods are joined by
``+``, a blend's style stems too).

Same result as a single run, bit for bit. A round is :func:`nst_jax.job.run` of its jobs stacked on a job
axis: every job uses ``config.seed`` exactly as a single run does (:func:`nst_jax.job.keys`), the same balance
factors (computed per job, from its own targets) and the same energy, and each job is computed with the single
run's own compiled computation (a single run is a round of one job), so job ``C x S x M`` writes the image,
energies and loss history that ``python -m nst_jax.main --content=C --style=S --kernel=M`` with the same config
writes on the same type of device (tests/test_batch.py checks it over 120 steps on 8 devices).

Devices. Jobs with the same :class:`~nst_jax.transfer.Problem` and image shapes form a group; a group runs in
rounds of ``jobs_per_device`` x (local devices) jobs, stacked on a leading job axis split over a one-axis
``jax.sharding.Mesh`` of the local devices (``jax.shard_map``): each device optimises its own jobs, one after
another when it has several (never vmapped: stacking jobs into one computation changes the order of its float
operations, and Adam turns the last-bit differences into visible ones within a few dozen steps), and no data
moves between devices. A round that does not fill the devices is padded with copies of its last job (their
results are discarded).

Hosts. With ``multihost`` the process joins ``jax.distributed`` (arguments from flags, or from the environment
as on a Cloud TPU pod slice); the sorted job list is the same on every process and job i belongs to process
``i % process_count``: no job runs twice, none is dropped. Each process runs its share on its own devices and
writes its own outputs (a shared ``output_dir`` collects them all; on per-host disks, each host's share).

Resuming. A job whose image and record exist and whose record parses is complete (:func:`nst_jax.outputs.
write_outputs` writes the record after the image) and is skipped, so rerunning the same command after a
pre-emption runs only the jobs that were missing. A job is the unit: a round cut short is rerun whole.

Not stacked: coarse-to-fine runs (``scales`` > 1) and colour preservation run job by job through
:func:`nst_jax.runner.stylize` (still split over hosts, still resumable).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from nst_jax import config as cfg_lib
from nst_jax import job as job_lib
from nst_jax import loop, outputs, placement, runner
from nst_jax import record as record_lib
from nst_jax import weights as weights_lib
from nst_jax.errors import ConfigError, UserError

CONTENT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MESH_AXIS = placement.JOB_AXIS
SHUTDOWN_TIMEOUT_S = 24 * 3600

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# The job list: deterministic, the same on every process.


@dataclasses.dataclass(frozen=True)
class Job:
    """One style transfer of a batch.

    Attributes:
      content: content image path.
      style: style image path, or several comma-separated (a blend), as ``--style`` of a single run.
      kernel: one method or a comma-separated fusion, as ``--kernel`` of a single run.
      output: the output image path; the record goes beside it (:func:`nst_jax.outputs.record_path`).
    """

    content: str
    style: str
    kernel: str
    output: str

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.output))[0]


def alternatives(text: str) -> list[str]:
    """``"a;b; c"`` -> ``["a", "b", "c"]``: the ``;``-separated alternatives of a batch flag."""
    return [part.strip() for part in str(text or "").split(";") if part.strip()]


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def style_label(style: str) -> str:
    """``"x/a.jpg,y/b.png"`` -> ``"a+b"``."""
    return "+".join(_stem(p.strip()) for p in style.split(",") if p.strip())


def method_label(kernel: str) -> str:
    """``"linear+gaussian"`` (or ``"linear, gaussian"``) -> ``"linear+gaussian"``."""
    return "+".join(cfg_lib.method_names(kernel))


def content_images(content_dir: str) -> list[str]:
    """The image files directly in ``content_dir`` (by extension, hidden files excluded), sorted by name."""
    if not os.path.isdir(content_dir):
        raise UserError(f"--content_dir={content_dir}: not a folder")
    names = sorted(n for n in os.listdir(content_dir)
                   if not n.startswith(".") and os.path.splitext(n)[1].lower() in CONTENT_EXTENSIONS
                   and os.path.isfile(os.path.join(content_dir, n)))
    if not names:
        raise UserError(f"--content_dir={content_dir}: no images ({', '.join(CONTENT_EXTENSIONS)})")
    return [os.path.join(content_dir, n) for n in names]


def list_jobs(content_dir: str, styles: Sequence[str], kernels: Sequence[str], output_dir: str) -> list[Job]:
    """Every content image x every style x every method, in that order (contents sorted by file name).

    Raises:
      UserError: no images, no style or method, a missing style file, or two jobs with one output name.
    """
    contents = content_images(content_dir)
    if not styles:
        raise UserError("batch mode needs --style (one image, or several separated by ';')")
    if not kernels:
        raise UserError("batch mode needs --kernel (one method, or several separated by ';')")
    for style in styles:
        for path in (p.strip() for p in style.split(",")):
            if not os.path.isfile(path):
                raise UserError(f"--style: no such file {path}")
    jobs, seen = [], {}
    for content in contents:
        for style in styles:
            for kernel in kernels:
                name = f"{_stem(content)}__{style_label(style)}__{method_label(kernel)}"
                if name in seen:
                    raise UserError(f"two jobs would both write {name}.png ({seen[name]} and {content}); "
                                    f"rename one of the inputs")
                seen[name] = content
                jobs.append(Job(content, style, kernel, os.path.join(output_dir, name + ".png")))
    return jobs


def process_share(jobs: Sequence[Job], process_index: int, process_count: int) -> list[tuple[int, Job]]:
    """(index, job) of this process's jobs: job i goes to process ``i % process_count``, so the shares are
    disjoint and cover the list."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} outside 0..{process_count - 1}")
    return list(enumerate(jobs))[process_index::process_count]


def is_complete(job: Job) -> bool:
    """The job's image exists and its record exists and parses (the record is written last)."""
    record = outputs.record_path(job.output)
    if not (os.path.isfile(job.output) and os.path.isfile(record)):
        return False
    try:
        with open(record) as f:
            return isinstance(json.load(f), dict)
    except (OSError, ValueError):
        return False


def job_config(config: Any, job: Job) -> Any:
    """``config`` with the job's content, style, method and output."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.content, c.style, c.kernel, c.output = job.content, job.style, job.kernel, job.output
    return c


def check_batch_config(config: Any, jobs: Sequence[Job]) -> dict[str, cfg_lib.RunSpec]:
    """For each job's method, what a single run checks: its parsed config (:func:`nst_jax.config.parse`)."""
    return {kernel: cfg_lib.parse(job_config(config, dataclasses.replace(jobs[0], kernel=kernel)))
            for kernel in sorted({job.kernel for job in jobs})}


# ---------------------------------------------------------------------------------------------------------
# Stacked runs.


def _stackable(config: Any) -> bool:
    return int(config.get("scales", 1)) == 1 and config.get("preserve_colors", "none") == "none"


@dataclasses.dataclass
class _Prepared:
    job: Job
    index: int  # in the full job list
    inputs: job_lib.JobInputs  # the job's config and images at the run's size

    def group_key(self) -> tuple[Any, ...]:
        return (self.job.kernel, self.inputs.content.shape, tuple(s.shape for s in self.inputs.styles))


def _prepare(job: Job, index: int, config: Any, spec: cfg_lib.RunSpec) -> _Prepared:
    """The job's images and inputs; ``spec`` is its method's parsed config, given the job's own fields (the
    method's terms and style weight do not depend on them)."""
    cfg = job_config(config, job)
    (content, content_desc), styles = runner.prepare_images(job.content, job.style, cfg)
    inputs = job_lib.JobInputs(dataclasses.replace(spec, config=cfg), content, [s for s, _ in styles], content_desc,
                               [d for _, d in styles])
    return _Prepared(job, index, inputs)


def run_round(
    items: Sequence[_Prepared],
    weights: weights_lib.Weights,
    devices: Sequence[jax.Device],
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[loop.Progress], None] | None = None,
    label: str = "",
) -> list[tuple[np.ndarray, dict[str, Any]]] | None:
    """Runs the jobs of one group together (:func:`nst_jax.job.run`, batched), sharded over ``devices``.

    ``items`` share one problem and image shapes; their number is padded up to a multiple of
    ``len(devices)`` with copies of the last one. Returns (RGB result, run record) per item, in order, or
    ``None`` when ``should_stop`` asked to stop between chunks. ``progress`` gets the first job's
    :class:`~nst_jax.loop.Progress` after each chunk, labelled ``label`` and that job's name.
    """
    started = time.time()
    n_real = len(items)
    n = math.ceil(n_real / len(devices)) * len(devices)
    padded = [it.inputs for it in items] + [items[-1].inputs] * (n - n_real)
    spec = items[0].inputs.spec
    cfg = spec.config
    problem = spec.problem(cfg_lib.blend_weights(cfg, len(items[0].inputs.styles)))
    for it in items:
        it.inputs.check_sizes(problem)
    place = placement.JobMesh(Mesh(np.asarray(devices), (MESH_AXIS,)))
    steps = int(cfg.steps)
    shown = f"{label}{': ' if label else ''}{items[0].job.name}" + (f" (+{n_real - 1} more)" if n_real > 1 else "")
    estimates = record_lib.estimated_terms(problem)  # the same for every chunk of the round

    def after_chunk(c: loop.Chunk) -> bool:
        if progress is not None:
            first = c.trackers[0]
            progress(loop.Progress(first.step, steps, first.latest(), first.step / max(c.elapsed_s, 1e-9),
                                   label=shown, size=tuple(items[0].inputs.content.shape[:2]),
                                   estimates=estimates))
        return should_stop is not None and should_stop()

    results = job_lib.run(problem, spec.settings(weights.source),
                          spec.chunk_length(),  # results do not depend on the chunk size
                          padded, weights, batched=True, placement=place, after_chunk=after_chunk)
    if any(record["status"] == "interrupted" for _, record in results[:n_real]):
        return None
    batch_info = {"round_jobs": n_real, "padded_to": n, "local_devices": len(devices),
                  "process_index": jax.process_index(), "process_count": jax.process_count(),
                  "remat": problem.remat, "dtype": problem.dtype}
    return [(rgb, dict(record, batch=batch_info, total_s=time.time() - started)) for rgb, record in results[:n_real]]


# ---------------------------------------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class Summary:
    """What one process did: job names written, skipped (already complete) and failed (non-finite)."""

    assigned: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)
    nonfinite: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False


def run_jobs(
    config: Any,
    jobs: Sequence[Job],
    *,
    weights: weights_lib.Weights | None = None,
    devices: Sequence[jax.Device] | None = None,
    jobs_per_device: int = 1,
    process_index: int | None = None,
    process_count: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Log = _stderr,
    progress: Callable[[loop.Progress], None] | None = None,
) -> Summary:
    """Runs this process's share of ``jobs`` that are not complete yet and writes their outputs.

    Args:
      config: the batch's configuration (``configs/default.py`` fields); each job overrides content, style,
        kernel and output.
      jobs: the full, sorted job list (:func:`list_jobs`), the same on every process.
      devices: where to run; default ``jax.local_devices()``.
      jobs_per_device: jobs stacked on each device per round (more: fewer rounds, more memory).
      process_index, process_count: this process's share; default ``jax.process_index()`` and
        ``jax.process_count()``.
      should_stop: polled between chunks; when it returns True the current round is abandoned (its jobs
        stay missing and rerun next time) and the summary says ``interrupted``.
      log: one line per event (default: stderr).
      progress: called after every chunk with a :class:`~nst_jax.loop.Progress` of the round's first job
        (e.g. :class:`nst_jax.report.ProgressBar`); ``None``: only the log lines.
    """
    specs = check_batch_config(config, jobs)
    config = cfg_lib.with_default_steps(config)
    devices = list(devices or jax.local_devices())
    if jobs_per_device < 1:
        raise ConfigError(f"jobs per device must be >= 1, not {jobs_per_device}")
    pid = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    indexed = process_share(jobs, pid, count)
    summary = Summary(assigned=[job.name for _, job in indexed])
    todo = []
    for index, job in indexed:
        if is_complete(job):
            summary.skipped.append(job.name)
        else:
            todo.append((index, job))
    log(f"process {pid} of {count}: {len(indexed)} of {len(jobs)} jobs, {len(summary.skipped)} already complete "
        f"(skipped), {len(todo)} to run on {len(devices)} {devices[0].platform} device(s)")
    if not todo:
        return summary
    if weights is None:
        weights = weights_lib.load(weights_lib.resolve(config.weights or None, config.source))

    def finish(job: Job, rgb: np.ndarray, record: dict[str, Any]) -> None:
        outputs.write_outputs(job.output, rgb, record)
        if record["status"] == "nonfinite":
            summary.nonfinite.append(job.name)
            log(f"non-finite energy in {job.name} at step {record['nonfinite']['step']}: kept the last finite "
                f"image in {job.output}")
        else:
            summary.written.append(job.name)
            log(f"wrote {job.output} ({record['steps_run']} steps)")

    if not _stackable(config):
        for _, job in todo:
            try:
                rgb, record = runner.stylize(job.content, job.style, job_config(config, job), weights=weights,
                                             progress=progress)
            except runner.NonFiniteLoss as e:
                rgb, record = e.image, e.record
            finish(job, rgb, record)
            if should_stop is not None and should_stop():
                summary.interrupted = True
                return summary
        return summary

    groups: dict[tuple[Any, ...], list[_Prepared]] = {}
    for index, job in todo:
        prepared = _prepare(job, index, config, specs[job.kernel])
        groups.setdefault(prepared.group_key(), []).append(prepared)
    size = jobs_per_device * len(devices)
    rounds = [members[start:start + size] for members in groups.values() for start in range(0, len(members), size)]
    for r, batch in enumerate(rounds):
        shape = batch[0].inputs.content.shape
        log(f"round {r + 1}/{len(rounds)}: {len(batch)} job(s) of method {method_label(batch[0].job.kernel)}, "
            f"content {shape[1]}x{shape[0]} px, on {len(devices)} device(s)")
        results = run_round(batch, weights, devices, should_stop=should_stop, progress=progress,
                            label=f"round {r + 1}/{len(rounds)}")
        if results is None:
            summary.interrupted = True
            return summary
        for it, (rgb, record) in zip(batch, results, strict=True):
            finish(it.job, rgb, record)
    return summary


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """``jax.distributed.initialize`` with the given values; ``None`` ones come from the environment (on a
    Cloud TPU VM or pod slice all of them do)."""
    kwargs: dict[str, Any] = {}
    if "shutdown_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
        # At exit each process waits for the others (JAX's default: 5 minutes, then an error); the shares of a
        # batch can finish hours apart.
        kwargs["shutdown_timeout_seconds"] = SHUTDOWN_TIMEOUT_S
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address or None, num_processes=num_processes,
                                   process_id=process_id, **kwargs)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--multihost: jax.distributed.initialize failed: {str(e).splitlines()[0]}") from None
