"""Errors a user can cause.

Every exception here is caught by the command-line entry points, printed as one line
(``error: <message>``) and turned into exit status 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: a file, a flag value, a weights file. The message is one line."""


class ImageError(UserError):
    """An image file that is missing, unreadable, too large or too small."""


class WeightsError(UserError):
    """A weights file that is missing, corrupt, unsafe or for another architecture."""


class ConfigError(UserError):
    """A flag or config value that is out of range or inconsistent."""
