"""Errors users see. Each carries the CLI exit code it maps to.

Exit codes (DESIGN.md): 0 success, 1 runtime error (bad input data included), 2 usage error,
3 plugin or weights failure. The CLI turns any `RefractorError` into one clear message on
stderr and that exit code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class RefractorError(Exception):
    """Base class for errors reported to users without a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InputError(RefractorError):
    """A user's input file (or option value describing the data) is unusable.

    Names the file and, where known, the line, so the user can fix it.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
    ):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f", line {line}" if line is not None else "")
            where += ": "
        super().__init__(where + message, hint=hint)
        self.problem = message


class UsageError(RefractorError):
    """The command line or a component configuration is wrong (exit code 2)."""

    exit_code = 2


class PluginError(RefractorError):
    """A plugin is missing, broken, duplicated or misbehaves (exit code 3)."""

    exit_code = 3


class WeightsError(RefractorError):
    """Model weights cannot be resolved, downloaded or verified (exit code 3)."""

    exit_code = 3


class RefinementError(RefractorError):
    """Refinement cannot proceed (singular normal matrix, no data, ...)."""

    exit_code = 1
