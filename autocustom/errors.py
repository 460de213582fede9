"""Errors that the CLI turns into one line and an exit code.

Every error carries the fix for the user, because a message that says only what went wrong makes the
user search for what to do; `str(error)` is the whole line the CLI prints.
"""

from __future__ import annotations

from pathlib import Path


class AutocustomError(Exception):
    """Base of every error the user can fix. Exit code 2: bad usage or bad input."""

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None, *, where: str | None = None) -> None:
        self.what = what
        self.fix = fix
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)


class UsageError(AutocustomError):
    """An option value that cannot work (zero subareas, a split that does not sum to 1, ...)."""


class AxisError(AutocustomError):
    """An axis string or YAML file that does not name two distinct poles."""


class DataError(AutocustomError):
    """A file whose content is wrong; names the file and, when known, the line."""

    def __init__(self, path: str | Path, what: str, fix: str | None = None, *, line: int | None = None):
        self.path = Path(path)
        self.lineno = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(what, fix, where=where)


class ModelLoadError(AutocustomError):
    """A model or tokenizer that cannot be loaded (missing path, offline hub id, bad adapter)."""


class BackendError(AutocustomError):
    """An LLM backend that cannot answer: unreachable server, refused key, exhausted retries."""


class OutputExistsError(AutocustomError):
    """An output location that holds something we must not overwrite."""
