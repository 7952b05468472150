"""What the command-line programs share: one-line errors, flag parsing, the progress bar, writing outputs.

Entry modules (``main.py``, ``compare.py``) define the flags; this module only uses their values.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from typing import Any, NoReturn

from absl import flags

from nst_jax import checkpoint, image, runner, transfer
from nst_jax.atomic import write_json
from nst_jax.errors import UserError

EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
    """Prints ``error: message`` on one line and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with bad flags reported as one line and exit status 2 (absl's own exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # config-file overrides (--config.x=...)
        fail(f"bad --config override: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def record_path(output: str) -> str:
    """``out.png`` -> ``out.json``."""
    return os.path.splitext(output)[0] + ".json"


def snapshot_path(output: str, step: int) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}_{step:05d}{ext}"


def check_output(output: str, inputs: list[str]) -> None:
    """Refuses, before any work, an output that cannot be written or would overwrite an input.

    A missing output folder is created (documented in the README)."""
    if not output:
        raise UserError("--output is empty")
    ext = os.path.splitext(output)[1].lower()
    if ext not in image.SAVE_FORMATS:
        raise UserError(f"--output={output}: unsupported extension {ext or '(none)'}; use .png, .jpg or .jpeg")
    if os.path.isdir(output):
        raise UserError(f"--output={output}: is a folder; give a file name such as {os.path.join(output, 'out.png')}")
    written = {os.path.realpath(p) for p in (output, record_path(output), checkpoint.path_for(output))}
    for path in inputs:
        if path and os.path.exists(path) and os.path.realpath(path) in written:
            raise UserError(f"--output={output}: would overwrite the input {path}")
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--output={output}: {folder} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output={output}: cannot create folder {folder} ({e.strerror or e})") from None
    # A trial file rather than os.access, which says yes to root in a read-only folder and to anyone on /proc.
    try:
        fd, trial = tempfile.mkstemp(prefix=".nst_jax-write-test.", dir=folder)
        os.close(fd)
        os.remove(trial)
    except OSError as e:
        raise UserError(f"--output={output}: folder {folder} is not writable ({e.strerror or e})") from None


class ProgressBar:
    """A one-line live bar on a terminal (a line per update otherwise): step, loss terms, it/s, ETA."""

    def __init__(self, stream=None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.started = time.time()

    def __call__(self, step: int, steps: int, terms: dict[str, float], rate: float) -> None:
        frac = step / max(steps, 1)
        filled = int(round(frac * self.width))
        eta = (steps - step) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "--:--:--"
        shown = " ".join(f"{k} {v:.4g}" for k, v in terms.items() if k in ("total", "content", "style", "tv"))
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {step}/{steps} {shown} | {rate:.2f} it/s | ETA {eta_text}"
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            if step >= steps:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def write_outputs(output: str, result: Any, record: dict[str, Any]) -> None:
    """The image, then its record: a record on disk means the image beside it is complete."""
    image.save_image(output, result)
    record = dict(record, output=os.path.abspath(output))
    write_json(record_path(output), record, what="run record")


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
        self.requested = True
        print("\nstopping after this chunk (press Ctrl-C again to abort without saving)", file=sys.stderr,
              flush=True)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def run_one(config: Any) -> int:
    """Runs one style transfer from a config and writes its outputs. Returns the exit status: 0 done,
    2 user error (message printed), 130 interrupted (checkpoint and current image written)."""
    ckpt = checkpoint.path_for(config.output)
    try:
        check_output(config.output, [config.content, *runner.style_inputs(config.style), config.init,
                                     config.weights])
        bar = ProgressBar()

        def snapshot(step: int, rgb: Any) -> None:
            image.save_image(snapshot_path(config.output, step), rgb)

        size_note = transfer.default_size(config)[1]
        if size_note:
            print(size_note, file=sys.stderr, flush=True)
        with StopOnInterrupt() as stop:
            try:
                result, record = runner.stylize(config.content or None, config.style or None, config,
                                                progress=bar, snapshot=snapshot, checkpoint_path=ckpt,
                                                should_stop=stop)
            except runner.NonFiniteLoss as e:
                write_outputs(config.output, e.image, e.record)
                raise UserError(f"{e}; it is in {config.output}, the record in {record_path(config.output)}") from None
            except runner.Interrupted as e:
                image.save_image(config.output, e.image)
                print(f"{e}; current image in {config.output}", file=sys.stderr, flush=True)
                return 130
        write_outputs(config.output, result, record)
        if os.path.exists(ckpt):
            os.remove(ckpt)  # the run is complete: its record replaces the checkpoint
    except UserError as e:
        fail(str(e))
    w = record["weights"]
    print(f"wrote {config.output} and {record_path(config.output)} ({record['steps_run']} steps in "
          f"{record['run_s']:.1f} s after {record['compile_s']:.1f} s compile; weights {w['source']} "
          f"{os.path.basename(w['path'])} sha256 {w['sha256'][:12]}; origin: {w['origin']})", file=sys.stderr)
    return 0
