"""`autocustom import` and `export-data`: your pairs in (autocustom.data.importing), your pairs out (data.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    JSON_OUTPUT,
    VERBOSE,
    configure_logging,
    emit_json,
    fail,
    pairs_per_split,
    stderr,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options
from autocustom.fields import PUBLIC_HELP


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("inspect")(inspect_command)
    app.command("export-data")(export_data_command)


@config_options("autocustom.data.importing:ImportConfig")
def import_command(
    values: dict[str, Any],  # ImportConfig's fields, one option each (see autocustom.cli.options)
    pole_col: list[str] = typer.Option(
        [],
        "--pole-col",
        help="POLE=COLUMN: a pole's answer column (default: the column named like the pole).",
    ),
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Import pairs you already have as an autocustom dataset: same dedup, split and schema as `generate`.

    Example:

        autocustom import pairs.csv --axis "formal:casual" --out data/mine --pole-col casual=informal_answer

    Every command that takes --data works on the result. Rows with an empty answer or the same text for
    both poles are recorded in OUT/dropped.jsonl with their file:line.
    """
    configure_logging(verbose)
    mapping = dict(_pole_column(text) for text in pole_col)
    with user_errors():
        from autocustom.data.importing import ImportConfig, import_pairs
        from autocustom.data.pair_check import checks_lines
        from autocustom.scoring.pair_lean import lean_reader

        config = ImportConfig(**values, pole_columns=mapping)
        result = import_pairs(config, read_lean=lean_reader(config.lean_judge))
    if json_output:
        emit_json(result.to_dict())
        return
    counts = result.counts
    per_split = pairs_per_split(counts)
    stderr.print(
        f"imported {counts['pairs']} of {counts['rows']} rows ({per_split}) in {counts['subareas']} subareas "
        f"to {result.out}; dropped {counts['dropped'] or 'none'}",
        soft_wrap=True,
    )
    for line in checks_lines(counts):
        stderr.print(line, soft_wrap=True)


@config_options("autocustom.scoring.inspect_data:InspectConfig")
def inspect_command(values: dict[str, Any], json_output: bool = JSON_OUTPUT, verbose: bool = VERBOSE) -> None:
    """Can this dataset be trusted? Its topics, leakage audit, pair check and the answers' lean.

    Example:

        autocustom inspect data/formal --json

    Works on any dataset directory, imports included; computes every figure now and writes nothing.
    Each share comes with its n and a 95% interval (docs/data-format.md: what each check reads).
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.scoring.inspect_data import InspectConfig, inspect_data, inspect_lines

        report = inspect_data(InspectConfig(**values))
    if json_output:
        emit_json(report)
        return
    for line in inspect_lines(report):
        stdout.print(line, soft_wrap=True)


def _pole_column(text: str) -> tuple[str, str]:
    pole, sep, column = text.partition("=")
    if not sep or not pole or not column:
        fail(f"--pole-col '{text}' is not POLE=COLUMN; e.g. --pole-col casual=informal_answer")
    return pole, column


def export_data_command(
    data: Path = typer.Option(..., "--data", help="Dataset directory made by `autocustom generate`."),
    toward: str = typer.Option(..., "--toward", help="The pole whose answers become `chosen`."),
    out: Path = typer.Option(..., "--out", help="Export directory to create (must not exist or be empty)."),
    format: str = typer.Option("trl", "--format", help="Export format: trl (prompt/chosen/rejected)."),
    plain: bool = typer.Option(
        False, "--plain", help="Plain strings instead of TRL's conversational messages."
    ),
    push_to_hub: str | None = typer.Option(
        None, "--push-to-hub", help="Also push the DatasetDict to this Hugging Face Hub dataset repo."
    ),
    public: bool = typer.Option(False, "--public", help=PUBLIC_HELP),
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Export a dataset for the trainer you already run (TRL, axolotl, LLaMA-Factory, OpenRLHF).

    Example:

        autocustom export-data --data data/formal --toward formal --format trl --out data/formal-trl

    Writes OUT/hf (load with `datasets.load_from_disk`) and OUT/{train,validation,test}.jsonl, each row
    `prompt/chosen/rejected` plus the pair's `id` and `subarea`.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.data.export import export_data

        result = export_data(
            data, toward, out, format=format, plain=plain, push_to_hub=push_to_hub, public=public
        )
    if json_output:
        emit_json(result.to_dict())
        return
    rows = ", ".join(f"{n} {split}" for split, n in result.rows.items())
    stderr.print(f"wrote {rows} rows ({result.format}) to {result.out}")
