"""What the command-line programs share: one-line errors, the table of run flags, the progress bar, Ctrl-C,
and running one style transfer or a batch from a config.

Entry modules (``main.py``, ``compare.py``) define the flags (from :data:`RUN_FLAGS`, with
:func:`define_run_flags`); this module only uses their values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np
from absl import flags

from nst_jax import checkpoint, compile_cache, errors, image, losses, outputs, report, runner
from nst_jax import config as cfg_lib
from nst_jax import record as record_lib
from nst_jax.errors import UserError

EXIT_USER_ERROR = errors.EXIT_USER_ERROR


@dataclasses.dataclass(frozen=True)
class RunFlag:
    """A flag that overrides the run config's field of the same name."""

    name: str
    kind: str  # "string", "integer", "float", "bool" or "enum:a|b"
    help: str


RUN_FLAGS: tuple[RunFlag, ...] = (
    RunFlag("kernel", "string", f"Style method {'|'.join(losses.METHODS)}, or a fusion such as linear+gaussian."),
    RunFlag("kernel_weights", "string", "Fusion weights, one per method in --kernel, e.g. 0.5,0.5."),
    RunFlag("content", "string", "Content image (default: a demo image drawn by the package)."),
    RunFlag("style", "string", "Style image (default: a demo painting drawn by the package)."),
    RunFlag("output", "string", "Output image, .png or .jpg; the run record goes beside it as .json."),
    RunFlag("size", "integer", "Long edge of the output in pixels (default 512 on GPU/TPU, 256 on CPU)."),
    RunFlag("steps", "integer", "Optimisation steps (default 500 on GPU/TPU, 200 on CPU)."),
    RunFlag("optimizer", "string", "adam|lbfgs|sgd_paper."),
    RunFlag("weights", "string", "VGG-19 weights from `python -m weights_converter` (default: the cached file)."),
    RunFlag("seed", "integer", "Random seed (noise init, stochastic estimators)."),
    RunFlag("style_weight", "float", "Style weight (with --balance=auto: style/content gradient ratio)."),
    RunFlag("content_weight", "float", "Content weight."),
    RunFlag("tv_weight", "float", "Total-variation weight."),
    RunFlag("init", "string", "content|noise|official_noise|IMAGE_FILE."),
    RunFlag("save_every", "integer", "Save an intermediate image every N steps (0: never)."),
    RunFlag("balance", "string", "auto|none: equalise style and content gradients at the start, or not."),
    RunFlag("style_size", "integer", "Long edge of the style image in pixels (default: the content's)."),
    RunFlag("style_scale", "float", "Style image size relative to --style_size or the content."),
    RunFlag("lr", "float", "Adam learning rate."),
    RunFlag("checkpoint_every", "integer", "Write OUTPUT.ckpt every N steps (and on Ctrl-C); 0: only on Ctrl-C."),
    RunFlag("resume", "bool", "Continue an interrupted run from OUTPUT.ckpt."),
    RunFlag("preserve_colors", "string", "none|luminance|histogram: keep the content's colours."),
    RunFlag("scales", "integer", "Coarse to fine: run this many sizes, each twice the last, up to --size."),
    RunFlag("style_blend", "string", "Weights of several styles (--style=a.jpg,b.jpg), e.g. 0.3,0.7."),
    RunFlag("remat", "bool", "Rematerialise VGG blocks in the backward pass (less memory, more compute)."),
    RunFlag("dtype", "enum:float32|bfloat16", "VGG compute dtype (parameters and losses stay float32)."),
    RunFlag("strips", "integer", "Compute VGG blocks 1-2 in this many horizontal strips: less memory for large "
            f"images, the same result ({', '.join(cfg_lib.streamable_methods())} at relu1_1/relu2_1)."),
    RunFlag("shard_image", "bool", "Split one image's rows over all local devices (with --multihost: every "
            "process's), its memory and work; the result of one device to float rounding; not with --strips, nor "
            "in batch mode."),
    RunFlag("content_mask", "string", "Spatial control: a label image of the content, each colour a region styled "
            "like the same colour of --style_mask; demo: the demo content's (sky, hills, house)."),
    RunFlag("style_mask", "string", "Label images of the styles, comma-separated, one per --style image; demo: the "
            "demo painting's (blue and yellow strokes)."),
    RunFlag("mask_fallback", "enum:none|whole", "Content colours with no style region: no style loss (none) or the "
            "whole style (whole)."),
)
"""The flags of ``python -m nst_jax.main`` that override config fields; ``compare`` takes some of them."""


def define_run_flags(names: Sequence[str] | None = None, helps: dict[str, str] | None = None,
                     defaults: Any = None) -> None:
    """Defines the :data:`RUN_FLAGS` called ``names`` (default: all), default ``None`` (the config's value);
    ``helps`` replaces some help texts; ``defaults`` (a config, e.g. ``configs/default.py``'s) adds each field's
    value to the help. Called by the entry modules, once."""
    wanted = [f for f in RUN_FLAGS if names is None or f.name in names]
    for f in wanted:
        text = (helps or {}).get(f.name, f.help)
        if defaults is not None and f.name in defaults:
            text += f" [configs/default.py: {_shown(defaults[f.name], f.name)}]"
        if f.kind.startswith("enum:"):
            flags.DEFINE_enum(f.name, None, f.kind[5:].split("|"), text)
        else:
            getattr(flags, f"DEFINE_{f.kind}")(f.name, None, text)


def _shown(value: Any, name: str) -> str:
    if value is None:
        return {"size": "512 on a GPU/TPU, 256 on a CPU", "steps": "500 on a GPU/TPU, 200 on a CPU",
                "style_size": "the content's"}.get(name, "unset")
    if value == "":
        return {"content": "a demo image", "style": "a demo painting", "weights": "the cached converted file",
                "kernel_weights": "1 each", "style_blend": "equal"}.get(name, "empty")
    return str(value)


def apply_run_flags(config: Any) -> None:
    """Copies every run flag given on the command line into ``config``."""
    with config.unlocked():
        for f in RUN_FLAGS:
            if f.name in flags.FLAGS and flags.FLAGS[f.name].present:
                config[f.name] = flags.FLAGS[f.name].value


def fail(message: str) -> NoReturn:
    """Prints ``error: message`` on one line and exits with status 2, leaving nothing behind: not even the
    compilation cache's folder, if this run would have created it."""
    compile_cache.discard_new()
    errors.exit_user_error(message)


parse_flags = errors.parse_flags  # the entry modules' flag parsing (one line and status 2 for a bad flag)


class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only sets a flag that the run polls between chunks
    (it then checkpoints and stops); a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.request("press Ctrl-C again to abort without saving")

    def request(self, note: str = "Stop pressed on the preview page") -> None:
        """What the first Ctrl-C does; also the preview page's Stop (called from its server thread)."""
        self.requested = True
        print(f"\nstopping after this chunk ({note})", file=sys.stderr, flush=True)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


@contextlib.contextmanager
def preview_page(enabled: bool, stop: StopOnInterrupt, title: str) -> Iterator[Any]:
    """With ``enabled``: the live preview page (:mod:`nst_jax.preview`), its address printed, its Stop acting
    as Ctrl-C; yields it (``None`` without ``enabled``) and closes it at the end."""
    if not enabled:
        yield None
        return
    from nst_jax import preview  # only --preview needs the server

    page = preview.Preview(title, on_stop=stop.request)
    print(f"preview: {page.start()} (live image and losses; its Stop button ends the run as Ctrl-C does)",
          file=sys.stderr, flush=True)
    try:
        yield page
    finally:
        page.close()


def tee(*callbacks: Any) -> Any:
    """One callback that calls each of ``callbacks`` (``None``s skipped) with the same arguments."""
    live = [c for c in callbacks if c is not None]

    def call(*args: Any, **kwargs: Any) -> None:
        for c in live:
            c(*args, **kwargs)

    return call


def run_one(config: Any, preview: bool = False, *, multihost: bool = False, coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None) -> int:
    """Runs one style transfer from a config and writes its outputs. Returns the exit status of the run's
    status (:data:`nst_jax.record.EXIT_CODES`): 0 done, 2 user error or non-finite energy (message printed, the
    last finite image and its record written), 130 interrupted (checkpoint and current image written).
    ``preview``: serve the live preview page (:func:`preview_page`) during the run. ``multihost`` (with
    ``config.shard_image``): join ``jax.distributed`` and split the image over every process's devices; every
    process runs this with the same inputs, process 0 prints and writes the image and record, every process
    writes its checkpoint (so ``--resume`` works with or without a shared disk)."""
    ckpt = checkpoint.path_for(config.output)
    try:
        lead = _join(config, preview, multihost, coordinator_address, num_processes, process_id)
        if multihost and config.resume:
            _check_every_process_has(ckpt)
        outputs.check_output(config.output, [config.content, *runner.style_inputs(config.style), config.init,
                                             config.weights])
        bar = report.ProgressBar() if lead else None
        snapshots: list[str] = []

        def snapshot(step: int, rgb: Any) -> None:
            snapshots.append(outputs.snapshot_path(config.output, step))
            image.save_image(snapshots[-1], rgb)

        for note in cfg_lib.machine_notes(config) if lead else ():
            print(note, file=sys.stderr, flush=True)
        title = f"nst_jax: {os.path.basename(config.output)}"
        with StopOnInterrupt() as stop, preview_page(preview, stop, title) as page:
            try:
                # The output folder is created only once every input has been checked (on_ready).
                result, record = runner.stylize(config.content or None, config.style or None, config,
                                                progress=tee(bar, page and page.progress),
                                                snapshot=snapshot if lead else None,
                                                checkpoint_path=ckpt, should_stop=stop,
                                                on_ready=lambda: outputs.prepare_output(config.output),
                                                on_image=page and page.image)
            except runner.NonFiniteLoss as e:
                if lead:
                    outputs.write_outputs(config.output, e.image, e.record)
                if page:
                    page.finish("failed", str(e))
                raise UserError(f"{e}; it is in {config.output}, the record in "
                                f"{outputs.record_path(config.output)}") from None
            except runner.Interrupted as e:
                if lead:
                    image.save_image(config.output, e.image)
                    print(f"{e}; current image in {config.output}", file=sys.stderr, flush=True)
                if page:
                    page.finish("interrupted", f"{e}; current image in {config.output}")
                return record_lib.EXIT_CODES[e.record["status"]]
            if page:
                page.finish("done", f"finished; writing {config.output}")
        if lead:
            outputs.write_outputs(config.output, result, record)
        with contextlib.suppress(FileNotFoundError):  # another run with this --output may have removed it
            os.remove(ckpt)  # the run is complete: its record replaces the checkpoint
    except UserError as e:
        fail(str(e))
    if not lead:
        return record_lib.EXIT_CODES[record["status"]]
    w = record["weights"]
    print(f"wrote {config.output} and {outputs.record_path(config.output)} ({report.summary(record)}; weights "
          f"{w['source']} {os.path.basename(w['path'])} sha256 {w['sha256'][:12]}; origin: {w['origin']})",
          file=sys.stderr)
    if snapshots:
        shown = snapshots[0] if len(snapshots) == 1 else f"{snapshots[0]} ... {os.path.basename(snapshots[-1])}"
        print(f"snapshots: {shown} ({len(snapshots)} file(s), every {config.save_every} steps)", file=sys.stderr)
    return record_lib.EXIT_CODES[record["status"]]


def _check_every_process_has(ckpt: str) -> None:
    """``--resume --multihost``: refuses on every process (not only where it is missing) unless each has the
    checkpoint, since a process that started afresh would wait forever for the others' steps."""
    from jax.experimental import multihost_utils

    has = [bool(v) for v in multihost_utils.process_allgather(np.asarray(os.path.exists(ckpt)))]
    if not all(has):
        missing = ", ".join(str(i) for i, v in enumerate(has) if not v)
        raise UserError(f"--resume: process(es) {missing} have no checkpoint of --output (here {ckpt}); every "
                        f"process needs its own copy (each writes one)")


def _join(config: Any, preview: bool, multihost: bool, coordinator_address: str | None, num_processes: int | None,
          process_id: int | None) -> bool:
    """A single run's ``--multihost``: checks it, joins ``jax.distributed``; returns whether this process is the
    one that prints and writes the image (process 0, or the only one)."""
    if multihost and not config.shard_image:
        raise UserError("--multihost: a single run joins other processes only to split its image over all their "
                        "devices: add --shard_image (or give --content_dir to split a batch of images)")
    if multihost and preview:
        raise UserError("--preview: not with --multihost (each process would serve its own page); watch the "
                        "snapshots of --save_every instead")
    if not _join_distributed(multihost, coordinator_address, num_processes, process_id):
        return True
    import jax

    return jax.process_index() == 0


def _join_distributed(multihost: bool, coordinator_address: str | None, num_processes: int | None,
                      process_id: int | None) -> bool:
    """``--multihost`` and its three values, for batch mode and single runs alike: joins ``jax.distributed``
    when asked (returns True), refuses the values without it."""
    if not multihost:
        if coordinator_address or num_processes or process_id is not None:
            raise UserError("--coordinator_address, --num_processes and --process_id need --multihost")
        return False
    from nst_jax import batch  # its jax.distributed set-up

    batch.initialize_distributed(coordinator_address, num_processes, process_id)
    return True


def run_batch(
    config: Any,
    *,
    content_dir: str,
    output_dir: str,
    multihost: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> int:
    """Batch mode of ``python -m nst_jax.main`` (:mod:`nst_jax.batch`). Returns the exit status: 0 every job of
    this process is complete, 2 user error or a job's energy became non-finite (message printed), 130
    interrupted."""
    from nst_jax import batch  # only batch mode needs it

    try:
        if not output_dir:
            raise UserError("batch mode needs --output_dir")
        if config.get("content_mask") or config.get("style_mask"):
            raise UserError("--content_mask/--style_mask: batch mode does not take masks (a mask fits one content "
                            "image); run each content image as a single run")
        if os.path.realpath(output_dir) == os.path.realpath(content_dir):
            raise UserError(f"--output_dir={output_dir}: must differ from --content_dir (outputs would become "
                            f"inputs of the next run)")
        if config.shard_image:
            raise UserError("--shard_image: batch mode already spreads its jobs over the devices; split one "
                            "image with --shard_image in a single run (without --content_dir)")
        _join_distributed(multihost, coordinator_address, num_processes, process_id)
        jobs = batch.list_jobs(content_dir, batch.alternatives(config.style), batch.alternatives(config.kernel),
                               output_dir)
        # Checks without creating: the folder appears with the first job's outputs, after its inputs were read.
        outputs.check_output(jobs[0].output, sorted({p for j in jobs for p in (j.content, *j.style.split(","))}))
        for note in cfg_lib.machine_notes(config):
            print(note, file=sys.stderr, flush=True)
        with StopOnInterrupt() as stop:
            bar = report.ProgressBar()
            summary = batch.run_jobs(config, jobs, should_stop=stop, progress=bar)
            bar.close()
    except UserError as e:
        fail(str(e))
    if summary.interrupted:
        print(f"interrupted: {len(summary.written)} job(s) written this time; rerun the same command to finish "
              f"the rest", file=sys.stderr, flush=True)
        return record_lib.EXIT_CODES["interrupted"]
    import jax

    print(f"process {jax.process_index()}: {len(summary.written)} written, {len(summary.skipped)} skipped "
          f"(complete), {len(summary.nonfinite)} non-finite, outputs in {output_dir}", file=sys.stderr, flush=True)
    if summary.nonfinite:
        fail(f"the energy became non-finite in {len(summary.nonfinite)} job(s): "
             f"{', '.join(summary.nonfinite)} (try a smaller --lr; rerunning skips them: delete their "
             f".json to retry)")
    return record_lib.EXIT_CODES["done"]
