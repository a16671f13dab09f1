"""User-facing errors (bad config, bad data, missing files): the CLI prints a `UserError` as one paragraph
and exits with code 2, never a traceback; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the file, field, row or value at fault."""


class ConfigError(UserError, ValueError):
    """An invalid configuration key or value."""


class DataError(UserError, ValueError):
    """A dataset file, row or field that cannot be used."""


class TrainingError(UserError):
    """Training cannot go on (non-finite losses in a row, out of memory); the message says which knob to turn."""
