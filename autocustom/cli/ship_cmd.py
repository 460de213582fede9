"""`autocustom dial` and `export`: choose the strength of a run and ship it (autocustom.shipping)."""

from __future__ import annotations

from typing import Any

import typer

from autocustom.cli.common import (
    JSON_OUTPUT,
    VERBOSE,
    configure_logging,
    emit_json,
    progress_reporter,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("dial")(dial_command)
    app.command("export")(export_command)


@config_options("autocustom.shipping.dial:DialConfig")
def dial_command(
    values: dict[str, Any],  # DialConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Measure a trained run at several strengths (0 = base, 1 = trained) and recommend one.

    Example:

        autocustom dial --model runs/formal --data data/formal --scales 0,0.5,1,1.5,2 --max-drift 0.05

    Writes dial.json, dial.md and dial.png (default: into the run's dial/); a killed dial resumes
    without repeating a finished scale. Exit 0 on success, 2 on bad input.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.shipping.dial import DialConfig, dial

        with progress_reporter() as progress:
            result = dial(DialConfig(**values), progress=progress).to_dict()
    if json_output:
        emit_json(result)
        return
    _render_dial(result)


def _render_dial(result: dict[str, Any]) -> None:
    from rich.table import Table

    from autocustom.scoring.stats import format_estimate

    table = Table(title=f"{result['model']} toward {result['toward']} ({result['split']} split)")
    for column in ("scale", "BiasShift", "Drift", "MMLU Δ (pts)", "Lean"):
        table.add_column(column)
    for point in result["scales"]:
        metrics = point["metrics"]
        names = ("bias_shift", "drift", "mmlu_delta_points", "lean")
        table.add_row(f"{point['scale']:g}", *(format_estimate(metrics.get(n)) for n in names))
    stdout.print(table)
    chosen = result["recommendation"]
    verdict = f"s = {chosen['scale']:g}" if chosen["scale"] is not None else "no scale"
    stdout.print(f"recommended: {verdict}: {chosen['reason']}")
    stdout.print(f"wrote {result['out']}/dial.json, dial.md and dial.png")


@config_options("autocustom.shipping.export:ExportConfig")
def export_command(
    values: dict[str, Any],  # ExportConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Export a trained run at a strength as a model anyone can serve: merged HF, GGUF, Ollama.

    Example:

        autocustom export --model runs/formal --scale 0.75 --format gguf --ollama --out exports/formal

    The export is checked after it is written (its margins against the in-memory model's; the GGUF
    against the HF export's). Exit 0 on success, 1 when a check fails, 2 on bad input.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.shipping.export import ExportConfig, export_model

        with progress_reporter() as progress:
            result = export_model(ExportConfig(**values), progress=progress)
    data = result.to_dict()
    if json_output:
        emit_json(data)
    else:
        for line in result.summary_lines():
            stdout.print(line)
    if not result.passed:
        from autocustom.cli.common import EXIT_GATE

        raise typer.Exit(EXIT_GATE)
