"""The project's error types: what a user can fix (a config key, a data folder, a model path, a
run folder, a command-line argument). ``ulfine`` prints these as one line and exits 2; any other
exception is a bug and keeps its traceback.

Each type also derives from the built-in error it replaces (ValueError, FileNotFoundError,
KeyError), so callers that caught those keep working.
"""
from __future__ import annotations


class UlfineError(Exception):
    """Base of every error the user can fix; its message names the file, key or value."""


class MissingFileError(UlfineError, FileNotFoundError):
    """A file or folder a command needs does not exist (a run's config or checkpoint, an image)."""


class RunFolderError(UlfineError, ValueError):
    """A run or export folder whose contents cannot be used (bad JSON, unknown format, a state
    that does not fit the model its config builds, runs that cannot be compared)."""


class UsageError(UlfineError, ValueError):
    """A command-line argument outside what the command accepts."""


class UnknownNameError(UlfineError, KeyError):
    """A registry name (method, PEFT module, head, template set, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
