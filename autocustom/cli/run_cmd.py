"""`autocustom run` and `report`: the whole method in one command, and the report of what a run holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    EXIT_GATE,
    EXIT_USAGE,
    JSON_OUTPUT,
    QUIET,
    VERBOSE,
    configure_logging,
    emit_json,
    fail,
    pairs_per_split,
    progress_reporter,
    stderr,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("report")(report_command)


@config_options("autocustom.pipeline:RunConfig")
def run_command(
    values: dict[str, Any],  # RunConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Generate data, train toward a pole, score on held-out subareas and write the report.

    Example:

        autocustom run --axis "formal:casual" --toward formal --out runs/formal-demo

    Re-running the same command after a stop resumes every stage; finished stages are not redone.
    Exit 1 when a gate (--min-shift, --min-lean) fails.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.pipeline import RunConfig, run

        config = RunConfig(**values)
        with progress_reporter(quiet=quiet) as progress:
            result = run(
                config.out, *config.stages(), restart=config.force_restart, progress=progress
            ).to_dict()
    if json_output:
        emit_json(result)
    else:
        _render_run(result)
    _exit_on_gates(result["score"])


def _render_run(result: dict[str, Any]) -> None:
    from autocustom.cli.score_cmd import render_score

    counts = result["generate"]["counts"]
    per_split = pairs_per_split(counts)
    stdout.print(f"dataset: {result['generate']['out']} ({counts.get('pairs')} pairs: {per_split})")
    train = result["train"]
    stdout.print(
        f"training: {train['run_dir']} best step {train['best_step']} of {train['steps']}, "
        f"stopped by {train['stop_reason']}, {train['wall_seconds']:.0f} s"
    )
    stdout.print(f"checkpoint selection: {train['selection']}")
    render_score(result["score"])
    stdout.print(f"report: {result['report']['report']}")
    stdout.print(f"result: {result['headline']}", soft_wrap=True)


def _exit_on_gates(score: dict[str, Any]) -> None:
    from autocustom.cli.score_cmd import failed_gate_line

    failed = [g for g in score["gates"] if not g["passed"]]
    for gate in failed:
        stderr.print(failed_gate_line(gate), soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_GATE)


def report_command(
    run_dir: Path = typer.Argument(..., help="A directory written by `run`, `train` or `compare`."),
    json_output: bool = JSON_OUTPUT,
) -> None:
    """Write RUN_DIR/report.md with PNG plots from what the run directory holds.

    Example:

        autocustom report runs/formal-demo

    Plots: BiasShift (and MMLU, when --max-mmlu-drop measured it) over training steps, the kept step
    marked; Lean per held-out subarea, base vs tuned; for a compare directory, Lean and BiasShift
    against padding length.
    On an unfinished run it reports what exists, names what is missing and exits 2.
    """
    with user_errors():
        from autocustom.report import build_report

        result = build_report(run_dir)
    if json_output:
        emit_json(result.to_dict())
    else:
        stdout.print(f"report: {result.path}")
        for plot in result.plots:
            stdout.print(f"plot: {plot}")
    if result.missing:
        fail(f"{run_dir} is unfinished; missing: {'; '.join(result.missing)}", EXIT_USAGE)
