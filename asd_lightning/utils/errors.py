"""User errors: :class:`UserError`, "the user must change X", printed in one line (no
traceback) by every entry point, which then exits with :data:`EXIT_USER_ERROR`; and input
errors whose fix is one setting, spelled the way the caller's front end spells it.

The data layer knows *which* setting accepts a file (``resample``, ``on_unmatched``); only the
front end knows how a user writes it: ``data.decode.resample=true`` in a Hydra run,
``--resample`` for ``asd-score``, ``DecodeOptions(resample=True)`` in Python. An
:class:`OptionError` carries the setting and prints it in the spelling it was given with
:meth:`OptionError.spelled`.
"""

from __future__ import annotations

import copy
from typing import Callable

Spelling = str | Callable[[str, str], str]

EXIT_USER_ERROR = 2  # the exit status of every entry point after a UserError (argparse's for bad options)


class UserError(ValueError):
    """Something the user must change (a setting, a file, a folder); the message names it.
    Entry points print it in one line without a traceback and exit with :data:`EXIT_USER_ERROR`."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (a :class:`UserError` and a ``FileNotFoundError``)."""


def user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``error``, or None for any other error. Hydra wraps an
    error raised while it instantiates a config (``hydra.utils.instantiate``: the datamodule,
    the model, a callback) in an ``InstantiationException`` whose cause is the original."""
    while not isinstance(error, UserError) and type(error).__name__ == "InstantiationException" \
            and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, UserError) else None


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace runs collapsed)."""
    return " ".join(str(error).split())


class OptionError(UserError):
    """A one-line error ``message`` plus the setting ``key=value`` that would accept the input.

    ``str(error)`` is ``"<message> (set <setting> <purpose>)"``; the setting is spelled by
    ``spelling``: a format string with ``{key}`` and ``{value}`` (default ``{key}={value}``) or a
    function of both.
    """

    def __init__(self, message: str, key: str | None = None, value: str = "true", purpose: str = "",
                 spelling: Spelling = "{key}={value}") -> None:
        super().__init__(message)
        self.message, self.key, self.value, self.purpose, self.spelling = message, key, value, purpose, spelling

    def setting(self) -> str | None:
        """The fix as the user types it, e.g. ``data.decode.resample=true``; None without one."""
        if self.key is None:
            return None
        if callable(self.spelling):
            return self.spelling(self.key, self.value)
        return self.spelling.format(key=self.key, value=self.value)

    def spelled(self, spelling: Spelling) -> "OptionError":
        """A copy of this error that names its fix in ``spelling`` (same type, same message)."""
        error = copy.copy(self)
        error.spelling = spelling
        return error

    def __str__(self) -> str:
        setting = self.setting()
        if setting is None:
            return self.message
        return f"{self.message} (set {setting}{' ' + self.purpose if self.purpose else ''})"

    def __reduce__(self):  # picklable across worker processes with its setting
        return (type(self), (self.message, self.key, self.value, self.purpose, self.spelling))
