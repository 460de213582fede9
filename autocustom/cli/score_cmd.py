"""`autocustom shift-score`: score a model on a dataset split and gate on the result (exit 1 on failure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    EXIT_GATE,
    JSON_OUTPUT,
    VERBOSE,
    configure_logging,
    emit_json,
    progress_reporter,
    stderr,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("shift-score")(shift_score_command)


@config_options("autocustom.scoring.shift_score:ScoreConfig")
def shift_score_command(
    values: dict[str, Any],  # ScoreConfig's fields, one option each (see autocustom.cli.options)
    out: Path | None = typer.Option(None, help="Also write the report as JSON to this file."),
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Score how far a model moved along the axis, with 95% intervals, and gate on it.

    Example:

        autocustom shift-score --model runs/formal --data data/formal --split test --min-shift 0.1 --json

    Exit 0 when every gate passes, 1 when one fails (named on stderr), 2 on bad input.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.fileio import require_writable_file, write_json_atomic
        from autocustom.scoring.shift_score import ScoreConfig, shift_score

        config = ScoreConfig(**values)
        if out is not None:
            require_writable_file(out)
        with progress_reporter(quiet=False) as progress:
            report = shift_score(config, progress=progress)
        result = report.to_dict()
        if out is not None:
            write_json_atomic(out, result)
    if json_output:
        emit_json(result)
    else:
        render_score(result)
    for gate in report.failed_gates():
        stderr.print(failed_gate_line(gate.to_dict()), soft_wrap=True)
    if not report.passed:
        raise typer.Exit(EXIT_GATE)


def failed_gate_line(gate: dict[str, Any]) -> str:
    """A failed gate in one line: the figure the gate compares (a drop is minus its metric's delta)."""
    return (
        f"gate failed: --{gate['name']} {gate['threshold']}: {_number(gate['value'])} "
        f"(read from {gate['metric']})"
    )


def render_score(result: dict[str, Any]) -> None:
    from rich.table import Table

    from autocustom.scoring.contrast import JUDGED, judge_readable

    unreadable = set(JUDGED) if judge_readable(result["metrics"]) is False else set()
    title = f"{result['model']} toward {result['toward']} on {result['data']} ({result['split']})"
    table = Table(title=title)
    for column in ("metric", "value", "95% interval", "n"):
        table.add_column(column)
    for name, estimate in result["metrics"].items():
        if estimate is None:
            table.add_row(name, "n/a", "", "")
        else:
            interval = f"[{_number(estimate['low'])}, {_number(estimate['high'])}]"
            value = _number(estimate["value"]) + (" (unreadable)" if name in unreadable else "")
            table.add_row(name, value, interval, str(estimate["n"]))
    stdout.print(table)
    sub = Table(title="per subarea")
    for column in ("subarea", "n", "BiasShift", "Lean"):
        sub.add_column(column)
    for row in result["subareas"]:
        shift = row["bias_shift"]
        sub.add_row(
            row["name"],
            str(row["n"]),
            _number(shift["value"]) if shift else "n/a",
            _number(row["lean"]["value"]),
        )
    stdout.print(sub)
    for note in result["notes"]:
        stdout.print(f"note: {note}")
    for gate in result["gates"]:
        verdict = "pass" if gate["passed"] else "FAIL"
        stdout.print(f"gate --{gate['name']} {gate['threshold']}: {_number(gate['value'])} {verdict}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
