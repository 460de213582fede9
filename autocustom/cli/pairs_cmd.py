"""`autocustom import` and `export-data`: your pairs in (autocustom.data.importing), your pairs out (data.export)."""

from __future__ import annotations

from pathlib import Path

import typer

from autocustom.cli.common import (
    configure_logging,
    emit_json,
    fail,
    pairs_per_split,
    parse_float_list,
    stderr,
    user_errors,
)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("export-data")(export_data_command)


def import_command(
    source: str = typer.Argument(
        ..., help="CSV/TSV, JSONL/JSON, Parquet, a save_to_disk directory or a hub id."
    ),
    axis: str = typer.Option(..., "--axis", help='Two poles "pole_a:pole_b", or a YAML axis file.'),
    out: Path = typer.Option(..., "--out", help="Dataset directory to create (must not exist or be empty)."),
    question_col: str | None = typer.Option(
        None, "--question-col", help="Question column (default: question, prompt, instruction, input or q)."
    ),
    pole_col: list[str] = typer.Option(
        [],
        "--pole-col",
        help="POLE=COLUMN: a pole's answer column (default: the column named like the pole).",
    ),
    chosen_pole: str | None = typer.Option(
        None, "--chosen-pole", help="prompt/chosen/rejected data: the pole `chosen` answers as."
    ),
    subarea_col: str | None = typer.Option(
        None, "--subarea-col", help="Subarea column (default: subarea, topic or category; else clustered)."
    ),
    clusters: int | None = typer.Option(
        None, "--clusters", help="Subareas to find by clustering (default sqrt(pairs/2), within 3..30)."
    ),
    dedup_threshold: float = typer.Option(
        0.90, "--dedup-threshold", help="Cosine of a near-duplicate question."
    ),
    split: str = typer.Option(
        "0.7,0.15,0.15", "--split", help="train,validation,test fractions, by subarea."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the clustering and the split."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
) -> None:
    """Import pairs you already have as an autocustom dataset: same dedup, split and schema as `generate`.

    Example:

        autocustom import pairs.csv --axis "formal:casual" --out data/mine --pole-col casual=informal_answer

    Every command that takes --data works on the result. Rows with an empty answer or the same text for
    both poles are recorded in OUT/dropped.jsonl with their file:line.
    """
    configure_logging(verbose)
    ratios = parse_float_list(split, "--split", count=3)
    mapping = dict(_pole_column(text) for text in pole_col)
    with user_errors():
        from autocustom.axis import parse_axis
        from autocustom.data.importing import ImportConfig, import_pairs

        config = ImportConfig(
            source=source, axis=parse_axis(axis), out=out, question_column=question_col, pole_columns=mapping,
            chosen_pole=chosen_pole, subarea_column=subarea_col, clusters=clusters,
            dedup_threshold=dedup_threshold, split=tuple(ratios), seed=seed,
        )  # fmt: skip
        result = import_pairs(config)
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
