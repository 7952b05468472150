"""Errors a user can cause, and how every command line reports them.

Every exception here is caught by the command-line entry points, printed as one line
(``error: <message>``) and turned into exit status 2 (:func:`exit_user_error`). Anything else is a bug and keeps
its traceback. :func:`parse_flags` gives every entry module the same flag parsing: a bad flag is such a line,
``--help`` exits 0.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from absl import flags

EXIT_USER_ERROR = 2
HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


class UserError(Exception):
    """A problem with the user's input: a file, a flag value, a weights file. The message is one line."""


class ImageError(UserError):
    """An image file that is missing, unreadable, too large or too small."""


class WeightsError(UserError):
    """A weights file that is missing, corrupt, unsafe or for another architecture."""


class ModelError(UserError):
    """A feed-forward model file (``python -m nst_jax.train``'s model.msgpack) that is missing, corrupt or damaged."""


class ConfigError(UserError):
    """A flag or config value that is out of range or inconsistent."""


def exit_user_error(message: str) -> NoReturn:
    """Prints ``error: message`` on one line and exits with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing (``app.run(main, flags_parser=parse_flags)``) with bad flags reported as one line and
    exit status 2 (absl's own exits 1), and ``--help`` exiting 0 (absl prints the help, then exits 1)."""
    try:
        return flags.FLAGS(argv)
    except SystemExit as e:
        if e.code == 1 and any(a in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        exit_user_error(str(e).splitlines()[0])
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # config-file overrides (--config.x=...)
        exit_user_error(f"bad --config override: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
