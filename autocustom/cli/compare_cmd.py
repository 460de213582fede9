"""`autocustom compare`: every method on the same held-out pairs, in one table (autocustom.comparison)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    JSON_OUTPUT,
    QUIET,
    VERBOSE,
    configure_logging,
    emit_json,
    fail,
    progress_reporter,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options
from autocustom.layout import COMPOSE_TABLE, SELECTIVITY_TABLE

RUN_HELP = (
    "A run to compose, PATH or PATH=SCALE (default 1): a train/run directory (LoRA or full) or a steer one."
)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
    app.command("selectivity")(selectivity_command)
    app.command("compose")(compose_command)
    app.command("export-composition")(export_composition_command)


@config_options("autocustom.comparison.config:CompareConfig")
def compare_command(
    values: dict[str, Any],  # CompareConfig's fields, one option each (see autocustom.cli.options)
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
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


@config_options("autocustom.comparison.selectivity:SelectivityConfig")
def selectivity_command(
    values: dict[str, Any],  # SelectivityConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """What each customization does to the other axes: every run on every axis' held-out pairs.

    Example:

        autocustom selectivity --runs runs/formal,runs/optimistic --data data/formal,data/optimistic,data/political --out runs/selectivity

    Each run is measured on its own axis toward its target pole and on every other axis toward that
    axis' first pole (BiasShift against the run's base, with its 95% interval), plus Drift and the MMLU
    change once per run. A run that moved another axis (interval excluding 0) is named in words.
    Writes OUT/selectivity.json, .md and .png; a stopped measurement resumes per run and axis.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.comparison.selectivity import SelectivityConfig, selectivity

        config = SelectivityConfig(**values)
        with progress_reporter(quiet=quiet) as progress:
            result = selectivity(config, progress=progress)
    if json_output:
        emit_json(result.to_dict())
        return
    for finding in result.findings():
        stdout.print(finding, markup=False, soft_wrap=True)
    stdout.print(f"table: {result.out / SELECTIVITY_TABLE}")


@config_options("autocustom.comparison.compose:ComposeConfig")
def compose_command(
    values: dict[str, Any],  # ComposeConfig's fields, one option each (see autocustom.cli.options)
    run: list[str] = typer.Option([], "--run", help=RUN_HELP),
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Several customizations at once, each at its own scale, measured on every axis like the dial.

    Example:

        autocustom compose --run runs/formal=1 --run runs/optimistic=0.75 --data data/formal,data/optimistic --out runs/compose

    LoRA adapters are stacked (peft, one scale per adapter), full fine-tuning changes summed on the base,
    steering vectors summed in the hooks. Every point of --grid (each run at each scale) and the point
    the --run scales name are measured: each run's axis toward its pole, other --data axes toward their
    first pole, Drift and MMLU. Each run composed is compared with itself alone at the same scale
    (paired difference), and the scales to use are recommended (--max-drift, --max-mmlu-drop).
    Writes OUT/compose.json and OUT/compose.md; a stopped compose resumes per point.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.comparison.compose import ComposeConfig, compose

        config = ComposeConfig(**values, runs=run)
        with progress_reporter(quiet=quiet) as progress:
            result = compose(config, progress=progress)
    data = result.to_dict()
    if json_output:
        emit_json(data)
        return
    for row in data["interference"]:
        stdout.print(row["finding"], markup=False, soft_wrap=True)
    stdout.print(f"recommended: {data['recommendation']['reason']}", markup=False, soft_wrap=True)
    stdout.print(f"table: {result.out / COMPOSE_TABLE}")


@config_options("autocustom.comparison.compose_export:ComposeExportConfig")
def export_composition_command(
    values: dict[str, Any],  # ComposeExportConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """A composition shipped: one merged model, or its LoRA adapters side by side for llama.cpp.

    Example:

        autocustom export-composition --compose runs/compose --out exports/formal-optimistic --scales 1,0.5

    --format hf: LoRA runs merged at their scales, full fine-tuning changes summed; the export's margins
    on every axis checked against compose's at that point (1e-4); without --scales, the recommendation.
    --format adapters: the base and each adapter as GGUF, each adapter's safe scales (adapters.json),
    the llama-server line with a scale per request, each adapter checked in llama-cpp-python.
    Exit 1 when a check fails.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.comparison.compose_export import ComposeExportConfig, export_composition

        config = ComposeExportConfig(**values)
        with progress_reporter(quiet=quiet) as progress:
            result = export_composition(config, progress=progress)
    if json_output:
        emit_json(result.to_dict())
    else:
        scales = ", ".join(f"{p['axis']} {p['scale']:g}" for p in result.parts)
        stdout.print(
            f"exported to {result.out} ({scales}): {', '.join(result.files)}", markup=False, soft_wrap=True
        )
        for check in result.checks:
            stdout.print(f"check {check.line()}", markup=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)


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
