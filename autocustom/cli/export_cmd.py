"""`autocustom export-data`: a dataset in TRL's prompt/chosen/rejected format (see autocustom.data.export)."""

from __future__ import annotations

from pathlib import Path

import typer

from autocustom.cli.common import configure_logging, emit_json, stderr, user_errors


def register(app: typer.Typer) -> None:
    app.command("export-data")(export_data_command)


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
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
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

        result = export_data(data, toward, out, format=format, plain=plain, push_to_hub=push_to_hub)
    if json_output:
        emit_json(result.to_dict())
        return
    rows = ", ".join(f"{n} {split}" for split, n in result.rows.items())
    stderr.print(f"wrote {rows} rows ({result.format}) to {result.out}")
