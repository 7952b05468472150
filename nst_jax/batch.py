"""Batch mode: every content image of a folder x every style x every method, over all devices and hosts.

    python -m nst_jax.main --content_dir=photos --style="a.jpg;b.jpg" --kernel="gram;bn" --output_dir=out

Jobs. The job list is every image in ``content_dir`` (sorted by name) x every style x every method, in that
order; ``;`` separates the alternatives, while ``,`` keeps its single-run meaning (``--kernel=linear,gaussian``
is one fused method, ``--style=a.jpg,b.jpg`` one blend of two styles). Job ``C x S x M`` writes
``OUT/<C stem>__<S stem>__<M>.png`` and its run record ``.json`` beside it (a fusion's methods are joined by
``+``, a blend's style stems too).

Same result as a single run. Every job uses ``config.seed`` exactly as a single run does (the same key
splits: init, loop, balance, reference image), the same balance factors (computed per job, from its own
targets) and the same energy, so job ``C x S x M`` gives the image of ``python -m nst_jax.main --content=C
--style=S --kernel=M`` with the same config, up to float rounding (the tests check 1/255).

Devices. Jobs with the same :class:`~nst_jax.transfer.Problem` and image shapes form a group; a group runs in
rounds of ``jobs_per_device`` x (local devices) jobs, stacked on a leading job axis: the pure step of a single
run (:func:`nst_jax.transfer.make_chunk`) is ``jax.vmap``-ed over that axis and the stack is sharded over a
one-axis ``jax.sharding.Mesh`` of the local devices with ``NamedSharding(mesh, P("jobs"))``, so each device
optimises its own images and no data moves between devices. A round that does not fill the devices is padded
with copies of its last job (their results are discarded).

Hosts. With ``multihost`` the process joins ``jax.distributed`` (arguments from flags, or from the environment
as on a Cloud TPU pod slice); the sorted job list is the same on every process and job i belongs to process
``i % process_count``: no job runs twice, none is dropped. Each process runs its share on its own devices and
writes its own outputs (a shared ``output_dir`` collects them all; on per-host disks, each host's share).

Resuming. A job whose image and record exist and whose record parses is complete (:func:`nst_jax.cli.
write_outputs` writes the record after the image) and is skipped, so rerunning the same command after a
pre-emption runs only the jobs that were missing. A job is the unit: a round cut short is rerun whole.

Not stacked: coarse-to-fine runs (``scales`` > 1) and colour preservation run job by job through
:func:`nst_jax.runner.stylize` (still split over hosts, still resumable).
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import nst_jax
from nst_jax import cli, image, optimizers, runner, transfer
from nst_jax import weights as weights_lib
from nst_jax.errors import ConfigError, UserError

CONTENT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DTYPES = ("float32", "bfloat16")
MESH_AXIS = "jobs"
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
      output: the output image path; the record goes beside it (:func:`nst_jax.cli.record_path`).
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
    """``"linear, gaussian"`` -> ``"linear+gaussian"``."""
    return "+".join(m.strip().lower() for m in kernel.split(",") if m.strip())


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


def process_share(jobs: Sequence[Job], process_index: int, process_count: int) -> list[Job]:
    """Job i goes to process ``i % process_count``: the shares are disjoint and cover the list."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} outside 0..{process_count - 1}")
    return list(jobs[process_index::process_count])


def is_complete(job: Job) -> bool:
    """The job's image exists and its record exists and parses (the record is written last)."""
    record = cli.record_path(job.output)
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


def check_batch_config(config: Any, jobs: Sequence[Job]) -> None:
    """Checks ``remat`` and ``dtype`` and, for each job's method, what a single run checks."""
    if config.get("dtype", "float32") not in DTYPES:
        raise ConfigError(f"--dtype={config.dtype}: expected one of {', '.join(DTYPES)}")
    if not isinstance(config.get("remat", False), bool):
        raise ConfigError(f"--remat={config.remat}: expected true or false")
    for kernel in sorted({job.kernel for job in jobs}):
        transfer.check_config(job_config(config, dataclasses.replace(jobs[0], kernel=kernel)))


# ---------------------------------------------------------------------------------------------------------
# Stacked runs.


def problem_for(config: Any, n_styles: int) -> transfer.Problem:
    """The run's :class:`~nst_jax.transfer.Problem`, as :func:`nst_jax.runner.stylize` builds it."""
    return transfer.problem_from_config(config, transfer.blend_weights(config, n_styles))


def _stackable(config: Any) -> bool:
    return int(config.get("scales", 1)) == 1 and config.get("preserve_colors", "none") == "none"


@dataclasses.dataclass
class _Prepared:
    job: Job
    index: int  # in the full job list
    config: Any
    content: np.ndarray  # (H, W, 3) RGB in [0, 1] at the run's size
    content_desc: str
    styles: list[np.ndarray]
    style_descs: list[str]

    def group_key(self) -> tuple[Any, ...]:
        return (self.job.kernel, self.content.shape, tuple(s.shape for s in self.styles))


def _prepare(job: Job, index: int, config: Any) -> _Prepared:
    cfg = job_config(config, job)
    (content, content_desc), styles = runner.prepare_images(job.content, job.style, cfg)
    return _Prepared(job, index, cfg, content, content_desc, [s for s, _ in styles], [d for _, d in styles])


def _initial_image(config: Any, content: np.ndarray, key: jax.Array, source: str) -> jax.Array:
    """The starting image of a single run (``config.init``): the content, seeded noise, or an image file."""
    if config.init == "content":
        return image.preprocess(jnp.asarray(content), source)
    if config.init == "noise":
        return image.preprocess(jax.random.uniform(key, content.shape, jnp.float32), source)
    rgb = image.resize(image.load_image(config.init, min_side=image.MIN_INPUT_SIDE), content.shape[:2])
    return image.preprocess(jnp.asarray(rgb), source)


def run_round(
    items: Sequence[_Prepared],
    weights: weights_lib.Weights,
    devices: Sequence[jax.Device],
    *,
    should_stop: Callable[[], bool] | None = None,
) -> list[tuple[np.ndarray, dict[str, Any]]] | None:
    """Runs the jobs of one group together, stacked and sharded over ``devices``.

    ``items`` share one problem and image shapes; their number is padded up to a multiple of
    ``len(devices)`` with copies of the last one. Returns (RGB result, run record) per item, in order, or
    ``None`` when ``should_stop`` asked to stop between chunks.
    """
    started = time.time()
    n_real = len(items)
    n = math.ceil(n_real / len(devices)) * len(devices)
    padded = list(items) + [items[-1]] * (n - n_real)
    cfg = items[0].config
    source = weights.source
    problem = problem_for(cfg, len(items[0].styles))
    for it in items:
        transfer.check_sizes(problem, [("content", it.content, it.content_desc),
                                       *(("style", r, d) for r, d in zip(it.styles, it.style_descs, strict=True))])

    mesh = Mesh(np.asarray(devices), (MESH_AXIS,))
    stacked, replicated = NamedSharding(mesh, P(MESH_AXIS)), NamedSharding(mesh, P())

    def put(tree: Any) -> Any:
        return jax.device_put(tree, stacked)

    # The keys of a single run with this seed: every job has the same ones (see the module docstring).
    init_key, loop_key, balance_key, ref_key = jax.random.split(jax.random.key(cfg.seed), 4)
    params = jax.device_put(weights.params, replicated)
    loop_key, balance_key = jax.device_put((loop_key, balance_key), replicated)
    c = put(np.stack([image.preprocess(jnp.asarray(it.content), source) for it in padded]))
    styles = [put(np.stack([image.preprocess(jnp.asarray(it.styles[k]), source) for it in padded]))
              for k in range(len(items[0].styles))]
    x0 = put(np.stack([_initial_image(cfg, it.content, init_key, source) for it in padded]))

    t0 = time.time()
    tgt = runner.jitted(("batch", "targets", problem), lambda: jax.vmap(
        lambda p, c, s: transfer.targets(problem, p, c, s), in_axes=(None, 0, 0)))(params, c, styles)
    base = transfer.paper_scales(problem, params, x0[0])
    if cfg.balance == "auto":
        x_ref = image.preprocess(jax.random.uniform(ref_key, items[0].content.shape, jnp.float32), source)
        norms = runner.jitted(("batch", "norms", problem), lambda: jax.vmap(
            lambda p, t, b, x, k: transfer.gradient_norms(problem, p, t, b, x, k),
            in_axes=(None, 0, None, None, None)))(
            params, tgt, {k: jnp.float32(v) for k, v in base.items()}, jax.device_put(x_ref, replicated),
            balance_key)
        factors = [transfer.balance_factors(row) for row in np.asarray(norms)]
    else:
        factors = [[1.0] * len(problem.terms) for _ in padded]
    # Python floats to float32 exactly as a single run does, then stacked.
    scales = put({
        "content": np.full((n,), np.float32(cfg.content_weight)),
        "style": {k: np.asarray([np.float32(cfg.style_weight * f[k[0]] * v) for f in factors])
                  for k, v in base.items()},
    })
    setup_s = time.time() - t0

    settings = transfer.step_settings(cfg, source)
    length = transfer.chunk_length(cfg)  # results do not depend on the chunk size
    opt = optimizers.make(cfg.optimizer, cfg)
    opt_key = (cfg.optimizer, cfg.lr, tuple(sorted(cfg.sgd.to_dict().items())))
    chunk_fn = runner.jitted(("batch", "chunk", problem, settings, length, opt_key), lambda: jax.vmap(
        transfer.make_chunk(problem, opt, settings, length), in_axes=(0, None, 0, 0, None)), donate_argnums=0)
    # Copies: an optimiser state may alias x0 (L-BFGS keeps the last iterate), and the carry is donated.
    carry = put((jnp.copy(x0), jax.tree.map(jnp.copy, jax.vmap(opt.init)(x0)),
                 np.zeros((n,), np.int32), np.zeros((n,), bool)))
    t0 = time.time()
    compiled = chunk_fn.lower(carry, params, tgt, scales, loop_key).compile()
    compile_s = time.time() - t0

    names = ["total", *transfer.term_names(problem)]
    histories = [{"step": [], **{k: [] for k in names}} for _ in range(n_real)]
    nonfinite: list[tuple[int, dict[str, float]] | None] = [None] * n_real
    last_finite = np.asarray(x0)[:n_real].copy()
    steps_done = np.zeros((n_real,), np.int64)
    run_t0 = time.time()
    while True:
        live = [j for j in range(n_real) if nonfinite[j] is None]
        host_steps, host_stopped = np.asarray(carry[2]), np.asarray(carry[3])
        if not any(host_steps[j] < cfg.steps and not host_stopped[j] for j in live):
            break
        carry, terms = compiled(carry, params, tgt, scales, loop_key)
        terms = jax.device_get(terms)
        x_host, new_steps = np.asarray(carry[0]), np.asarray(carry[2])
        for j in live:
            for i in range(int(new_steps[j] - steps_done[j])):
                t = int(steps_done[j]) + i
                row = {k: float(terms[k][j, i]) for k in names}
                if not all(math.isfinite(v) for v in row.values()):
                    nonfinite[j] = (t, row)
                    break
                if t % cfg.log_every == 0:
                    histories[j]["step"].append(t)
                    for k in names:
                        histories[j][k].append(row[k])
            if nonfinite[j] is None and not np.all(np.isfinite(x_host[j])):
                nonfinite[j] = (int(new_steps[j]), {})
            if nonfinite[j] is None:
                last_finite[j] = x_host[j]
                steps_done[j] = new_steps[j]
        if should_stop is not None and should_stop():
            return None
    run_s = time.time() - run_t0

    x_final = np.concatenate([last_finite, np.asarray(x0)[n_real:]])
    final_fn = runner.jitted(("batch", "energy", problem), lambda: jax.vmap(
        lambda p, t, s, x, k, step: transfer.energy(problem, p, t, s, x, jax.random.fold_in(k, step)),
        in_axes=(None, 0, 0, 0, None, 0)))
    final_steps = np.concatenate([steps_done, np.zeros((n - n_real,), np.int64)]).astype(np.int32)
    value, final = jax.device_get(final_fn(params, tgt, scales, put(x_final), loop_key, put(final_steps)))

    stopped = np.asarray(carry[3])
    common = {
        "nst_jax": nst_jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": {"path": weights.path, "source": source, "sha256": weights.sha256, "origin": weights.origin},
        "device": runner.device_info(),
        "versions": runner.versions(),
        "terms": [{"method": t.method, "weight": t.weight, "params": t.params} for t in problem.terms],
        "resumed_from": None,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "batch": {
            "round_jobs": n_real, "padded_to": n, "local_devices": len(devices),
            "process_index": jax.process_index(), "process_count": jax.process_count(),
            "remat": problem.remat, "dtype": problem.dtype,
        },
    }
    out = []
    for j, it in enumerate(items):
        step = int(steps_done[j])
        record = dict(
            common,
            config=it.config.to_dict(),
            content={"input": it.content_desc, "size": list(it.content.shape[:2])},
            style={"inputs": it.style_descs, "size": [list(s.shape[:2]) for s in it.styles]},
            balance={"mode": cfg.balance,
                     "factors": {t.method: f for t, f in zip(problem.terms, factors[j], strict=True)}},
            paper_scales={f"{problem.terms[i].method}/{layer}": v for (i, layer), v in base.items()},
            steps_run=step,
            stopped_early=bool(stopped[j]) and step < cfg.steps and nonfinite[j] is None,
            iterations_per_s=step / run_s if run_s > 0 else None,
            total_s=time.time() - started,
            losses=histories[j],
            final_losses=None if nonfinite[j] is not None else
            {"total": float(value[j]), **{k: float(v[j]) for k, v in final.items()}},
        )
        if nonfinite[j] is not None:
            record["nonfinite"] = {"step": nonfinite[j][0], "terms": nonfinite[j][1]}
        rgb = np.clip(np.asarray(image.deprocess(jnp.asarray(last_finite[j]), source)), 0.0, 1.0)
        out.append((rgb.astype(np.float32), record))
    return out


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
    """
    check_batch_config(config, jobs)
    devices = list(devices or jax.local_devices())
    if jobs_per_device < 1:
        raise ConfigError(f"jobs per device must be >= 1, not {jobs_per_device}")
    pid = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    indexed = list(enumerate(jobs))[pid::count]
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
        cli.write_outputs(job.output, rgb, record)
        if "nonfinite" in record:
            summary.nonfinite.append(job.name)
            log(f"non-finite energy in {job.name} at step {record['nonfinite']['step']}: kept the last finite "
                f"image in {job.output}")
        else:
            summary.written.append(job.name)
            log(f"wrote {job.output} ({record['steps_run']} steps)")

    if not _stackable(config):
        for _, job in todo:
            try:
                rgb, record = runner.stylize(job.content, job.style, job_config(config, job), weights=weights)
            except runner.NonFiniteLoss as e:
                rgb, record = e.image, e.record
            finish(job, rgb, record)
            if should_stop is not None and should_stop():
                summary.interrupted = True
                return summary
        return summary

    groups: dict[tuple[Any, ...], list[_Prepared]] = {}
    for index, job in todo:
        prepared = _prepare(job, index, config)
        groups.setdefault(prepared.group_key(), []).append(prepared)
    size = jobs_per_device * len(devices)
    for members in groups.values():
        for start in range(0, len(members), size):
            batch = members[start:start + size]
            log(f"round: {len(batch)} job(s) of method {batch[0].job.kernel}, content "
                f"{batch[0].content.shape[1]}x{batch[0].content.shape[0]} px, on {len(devices)} device(s)")
            results = run_round(batch, weights, devices, should_stop=should_stop)
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


def run_cli(
    config: Any,
    *,
    content_dir: str,
    output_dir: str,
    multihost: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> int:
    """Batch mode of ``python -m nst_jax.main``. Returns the exit status: 0 every job of this process is
    complete, 2 user error or a job's energy became non-finite (message printed), 130 interrupted."""
    try:
        if not output_dir:
            raise UserError("batch mode needs --output_dir")
        if os.path.realpath(output_dir) == os.path.realpath(content_dir):
            raise UserError(f"--output_dir={output_dir}: must differ from --content_dir (outputs would become "
                            f"inputs of the next run)")
        if multihost:
            initialize_distributed(coordinator_address, num_processes, process_id)
        elif coordinator_address or num_processes or process_id is not None:
            raise UserError("--coordinator_address, --num_processes and --process_id need --multihost")
        jobs = list_jobs(content_dir, alternatives(config.style), alternatives(config.kernel), output_dir)
        cli.check_output(jobs[0].output, sorted({p for j in jobs for p in (j.content, *j.style.split(","))}))
        with cli.StopOnInterrupt() as stop:
            summary = run_jobs(config, jobs, should_stop=stop)
    except UserError as e:
        cli.fail(str(e))
    if summary.interrupted:
        _stderr(f"interrupted: {len(summary.written)} job(s) written this time; rerun the same command to "
                f"finish the rest")
        return 130
    _stderr(f"process {jax.process_index()}: {len(summary.written)} written, {len(summary.skipped)} skipped "
            f"(complete), {len(summary.nonfinite)} non-finite, outputs in {output_dir}")
    if summary.nonfinite:
        cli.fail(f"the energy became non-finite in {len(summary.nonfinite)} job(s): "
                 f"{', '.join(summary.nonfinite)} (try a smaller --lr; rerunning skips them: delete their "
                 f".json to retry)")
    return 0
