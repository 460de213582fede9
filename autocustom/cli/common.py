"""What every command shares: error-to-exit-code mapping, progress rendering, JSON output.

Exit codes: 0 success, 1 a quality gate failed, 2 bad usage or input (one line, no traceback).
Progress and messages go to stderr so that `--json` leaves exactly one JSON object on stdout. While the
library runs (`user_errors`), anything else that writes to stdout goes to stderr: DeepSpeed, imported by
accelerate whenever it is installed, logs its accelerator choice to stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from autocustom.errors import AutocustomError
from autocustom.progress import ProgressCallback, ProgressEvent

_results: list[TextIO] = []  # the commands' own stdout, while library code's stdout goes to stderr


# The options every command shares, spelled once (typer reads an option's default object; it may be shared).
JSON_OUTPUT = typer.Option(False, "--json", help="Print one JSON object on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress output.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr.")


def results_stream() -> TextIO:
    """Where a command's output goes: its caller's stdout, also while the library runs."""
    return _results[-1] if _results else sys.stdout


class _Results:
    """A file that is always `results_stream()`, for the console that prints a command's output."""

    def __getattr__(self, name: str) -> Any:
        return getattr(results_stream(), name)


# markup off: a message holds paths and user text, where "[/tmp/x]" or "[bold]" is text, not a style
stderr = Console(stderr=True, highlight=False, markup=False)
stdout = Console(file=_Results(), highlight=False, markup=False)  # type: ignore[arg-type]

EXIT_OK, EXIT_GATE, EXIT_USAGE = 0, 1, 2


def fancy_output() -> bool:
    """Rich live bars only on an interactive terminal outside CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def fail(line: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `line` as the one error line (control characters escaped: a NUL from a misread file would
    cut it short in a terminal) and exit with `code`."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    stderr.print(Text.assemble(("error:", "red" if fancy_output() else ""), " ", shown), soft_wrap=True)
    raise typer.Exit(code)


def _unreadable_line(exc: BaseException) -> str | None:
    """One line for the errors of reading files that library code lets through, else None (a bug: the
    traceback is the report). Matched by module name, so the CLI imports neither safetensors nor pyarrow."""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc} Fix: check the path, its permissions and the free disk space"
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}) "
            "Fix: save it as UTF-8 (Excel: CSV UTF-8)"
        )
    if type(exc).__module__.split(".")[0] in ("safetensors", "pyarrow"):
        return f"a file cannot be read ({type(exc).__name__}: {exc}) Fix: regenerate or re-download it"
    return None


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors, and the file errors library code lets through, into one line and exit 2;
    Ctrl-C into exit 130 with no traceback.

    Inside, stdout is stderr for everything but the command's own output (`results_stream`).
    """
    _results.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    except AutocustomError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted: rerun the same command to resume where it stopped")
        raise typer.Exit(130) from None
    except Exception as exc:
        line = _unreadable_line(exc)
        if line is None:
            raise
        fail(line)
    finally:
        _results.pop()


@contextmanager
def progress_reporter(quiet: bool = False) -> Iterator[ProgressCallback]:
    """A progress callback: rich bars on a TTY, plain lines in CI or when piped, nothing when quiet."""
    if quiet:
        yield lambda _event: None
        return
    if not fancy_output():
        yield _plain_progress()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def update(event: ProgressEvent) -> None:
            if event.stage not in tasks:
                tasks[event.stage] = progress.add_task(event.stage, total=event.total, message="")
            progress.update(
                tasks[event.stage], completed=event.done, total=event.total, message=event.message
            )

        yield update


def _plain_progress() -> ProgressCallback:
    """One line per stage start, per ~10% step and per end: readable in a CI log, not a flood.

    A count that goes back down is the same stage starting again (`compare` trains one model after
    another), so it prints as a new start instead of being held back until it passes the old count.
    """
    last: dict[str, int] = {}

    def update(event: ProgressEvent) -> None:
        total = event.total or 0
        step = max(1, total // 10) if total else 1
        previous = last.get(event.stage)
        advancing = previous is not None and previous <= event.done
        if advancing and event.done != total and event.done - previous < step:
            return
        last[event.stage] = event.done
        count = f"{event.done}/{total}" if total else str(event.done)
        suffix = f" {event.message}" if event.message else ""
        print(f"[{event.stage}] {count}{suffix}", file=sys.stderr, flush=True)

    return update


def pairs_per_split(counts: dict[str, Any]) -> str:
    """A dataset's pairs per split as one phrase ("train 20, validation 6, test 8") for a closing line."""
    return ", ".join(f"{name} {n}" for name, n in counts.get("pairs_per_split", {}).items())


def emit_json(data: Any) -> None:
    """Exactly one JSON object on stdout."""
    out = results_stream()
    out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    out.flush()


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_third_party_output()


def quiet_third_party_output() -> None:
    """transformers/datasets print their own bars and advice; ours is the only progress shown."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is imported
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # datasets logs a failed read before raising it; the raised error becomes our one line
    os.environ.setdefault("DATASETS_VERBOSITY", "critical")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        if "datasets" in sys.modules:  # imported already: the environment variable came too late
            sys.modules["datasets"].disable_progress_bars()
            sys.modules["datasets"].logging.set_verbosity(logging.CRITICAL)
    except ImportError:
        pass
