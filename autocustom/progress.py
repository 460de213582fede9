"""Progress reporting without printing: the library calls a callback, the CLI renders it.

Keeping the library silent lets scripts and notebooks use it without a terminal, and lets the CLI
choose rich bars on a TTY or plain lines in CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress in a named stage: `done` of `total` units (total None when unknown)."""

    stage: str
    done: int
    total: int | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default callback: library calls from scripts stay quiet."""
