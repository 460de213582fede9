"""`autocustom run`, `compare` and `report`: the whole method in one command, and its evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    EXIT_GATE,
    EXIT_USAGE,
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
    app.command("compare")(compare_command)
    app.command("report")(report_command)


def _run_config() -> type[Any]:
    """RunConfig, imported when typer builds the command: its module imports torch."""
    from autocustom.pipeline import RunConfig

    return RunConfig


@config_options(_run_config)
def run_command(
    values: dict[str, Any],  # RunConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
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
            result = run(config.out, *config.stages(), progress=progress).to_dict()
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
    failed = [g for g in score["gates"] if not g["passed"]]
    for gate in failed:
        stderr.print(
            f"gate failed: --{gate['name']} {gate['threshold']} ({gate['metric']} = {gate['value']})"
        )
    if failed:
        raise typer.Exit(EXIT_GATE)


def _compare_config() -> type[Any]:
    """CompareConfig, imported when typer builds the commands (for `autocustom --help` too): its module
    holds the options alone, so building the command imports neither the study nor torch."""
    from autocustom.comparison.config import CompareConfig

    return CompareConfig


@config_options(_compare_config)
def compare_command(
    values: dict[str, Any],  # CompareConfig's fields, one option each (see autocustom.cli.options)
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
) -> None:
    """Compare prompting baselines and training losses on the same held-out pairs and metrics.

    Example:

        autocustom compare --data data/formal --toward formal --out runs/formal-compare

    Rows: base, system prompt, instruction after the question, few-shot, and models trained with the
    contrastive, DPO and SimPO losses, each clean, with distracting padding and with an adversarial
    user turn. Writes OUT/compare.json and OUT/compare.md; a stopped comparison resumes.
    """
    configure_logging(verbose)
    if any(n <= 0 for n in values["padding"]):
        padding = ",".join(map(str, values["padding"]))
        fail(f"--padding '{padding}' needs positive token counts; e.g. --padding 64,256")
    with user_errors():
        from autocustom.comparison.config import CompareConfig
        from autocustom.comparison.study import compare

        config = CompareConfig(**values)
        with progress_reporter(quiet=quiet) as progress:
            result = compare(config, progress=progress)
    if json_output:
        emit_json(result.to_dict())
    elif markdown:
        stdout.print(result.to_markdown(), markup=False, soft_wrap=True)
    else:
        _render_compare(result.to_dict())
        stdout.print(f"table: {Path(config.out) / 'compare.md'}")


def _render_compare(result: dict[str, Any]) -> None:
    from rich.table import Table

    from autocustom.comparison.rows import COLUMNS
    from autocustom.scoring.stats import format_estimate

    table = Table(title=f"{result['axis']['pole_a']}:{result['axis']['pole_b']} toward {result['toward']}")
    for column in ("model", "method", "condition", *COLUMNS):
        table.add_column(column)
    for row in result["rows"]:
        cells = [format_estimate(row["metrics"].get(name)) for name in COLUMNS]
        table.add_row(row["model"], row["method"], row["condition"], *cells)
    stdout.print(table)


def report_command(
    run_dir: Path = typer.Argument(..., help="A directory written by `run`, `train` or `compare`."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
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
