"""JAX's persistent compilation cache for the command-line programs, so a second run of the same shapes does
not compile again.

``python -m nst_jax.main`` and ``python -m nst_jax.compare`` call :func:`enable` with their ``--compile_cache``
flag before anything is compiled. Where the compiled programs go, first match wins:

* ``--compile_cache=DIR`` (``off`` turns the cache off);
* ``$NST_JAX_COMPILE_CACHE`` (likewise a folder or ``off``);
* ``<cache folder>/xla``, the cache folder being the weights' (:func:`nst_jax.weights.cache_dir`:
  ``$NST_JAX_CACHE``, else ``$XDG_CACHE_HOME/nst_jax``, else ``~/.cache/nst_jax``).

An entry is keyed by JAX on the program, its shapes and options, the jax/jaxlib versions and the device, so a
stale entry is never used: changing the size, method, steps per chunk or device compiles (and stores) anew.
The cache is not pruned (``jax_compilation_cache_max_size`` is left unlimited): delete the folder to clear it.
The Python API (:func:`nst_jax.runner.stylize`) leaves JAX's configuration to its caller.
"""

from __future__ import annotations

import os
import shutil
import sys

from nst_jax import weights as weights_lib
from nst_jax.errors import UserError

ENV = "NST_JAX_COMPILE_CACHE"
OFF = ("off", "none", "no", "false", "0")

_new_folder: str | None = None
"""The outermost folder :func:`enable` found missing (JAX creates it), for :func:`discard_new`."""


def default_dir() -> str:
    """``<cache folder>/xla`` (see the module docstring)."""
    return os.path.join(weights_lib.cache_dir(), "xla")


def resolve(flag_value: str | None) -> tuple[str | None, bool]:
    """(the folder to use or ``None`` for off, whether the user named it) from the flag's value (``None``: not
    given), else the environment, else :func:`default_dir`."""
    for value in (flag_value, os.environ.get(ENV)):
        if value is not None and value.strip() != "":
            if value.strip().lower() in OFF:
                return None, True
            return os.path.abspath(os.path.expanduser(value.strip())), True
    return default_dir(), False


def enable(flag_value: str | None) -> str | None:
    """Points JAX's persistent compilation cache at the folder :func:`resolve` gives and returns it (``None``:
    off). The folder is checked here but not created: JAX creates it when it stores the first program, so a run
    refused for its inputs, flags or weights leaves nothing behind. Every compiled program is stored, whatever
    its compile time (JAX's default keeps only those over 1 s, which would leave out the targets' and the
    balance's small programs).

    Raises:
      UserError: a folder the user named (flag or environment) cannot be created or written. The default
        folder failing only turns the cache off, with a warning: a read-only home must not stop a run.
    """
    path, named = resolve(flag_value)
    if path is None:
        return None
    global _new_folder
    try:
        _new_folder = _check_creatable(path)
    except OSError as e:
        reason = e.strerror or str(e)
        if named:
            raise UserError(f"compilation cache {path}: {reason} (give a writable folder with --compile_cache=DIR "
                            f"or ${ENV}, or turn it off with --compile_cache=off)") from None
        print(f"warning: compilation cache off: {path}: {reason}", file=sys.stderr, flush=True)
        return None
    import jax  # after the checks: a bad folder is reported before JAX's import costs a second

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def discard_new() -> None:
    """Removes the cache folder if this process's :func:`enable` found it missing: a run refused for its inputs,
    flags or weights (some small programs compile before those checks end) leaves no folder behind."""
    global _new_folder
    if _new_folder is not None:
        shutil.rmtree(_new_folder, ignore_errors=True)
        _new_folder = None


def _check_creatable(path: str) -> str | None:
    """Raises OSError unless ``path`` is a writable folder, or could be created as one: its nearest existing
    ancestor is a writable folder. Returns the outermost missing folder on the way to ``path`` (None: it
    exists)."""
    existing, missing = path, None
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing, missing = parent, existing
    if not os.path.isdir(existing):
        raise NotADirectoryError(20, "Not a directory", existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(13, f"{existing} is not writable")
    return missing
