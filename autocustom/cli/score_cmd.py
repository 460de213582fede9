"""`autocustom shift-score`: score a model on a dataset split and gate on the result (exit 1 on failure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from autocustom.cli.common import (
    EXIT_GATE,
    configure_logging,
    emit_json,
    progress_reporter,
    stderr,
    stdout,
    user_errors,
)


def register(app: typer.Typer) -> None:
    app.command("shift-score")(shift_score_command)


def shift_score_command(
    model: str = typer.Option(
        ..., "--model", help="Run directory, HF model dir, peft adapter, hub id or packaged name."
    ),
    data: Path = typer.Option(..., "--data", help="Dataset directory made by `autocustom generate`."),
    split: str = typer.Option("test", help="Split to score: train, validation or test."),
    base: str | None = typer.Option(
        None, help="Base model for BiasShift; default: the one recorded in the run."
    ),
    toward: str | None = typer.Option(None, help="Target pole; default: the run's recorded target."),
    system_prompt: str | None = typer.Option(
        None, help="Score the model with this system prompt (baseline)."
    ),
    few_shot: int = typer.Option(0, help="Prepend K train pairs answered as the target pole."),
    gen: bool = typer.Option(
        False, "--gen", help="Also report GenLean (generate replies and classify them)."
    ),
    gen_tokens: int = typer.Option(48, help="Max new tokens per reply for --gen."),
    mmlu: bool = typer.Option(
        True, "--mmlu/--no-mmlu", help="Measure MMLU accuracy on the retention subset."
    ),
    mmlu_questions: int | None = typer.Option(None, help="MMLU questions (default 570 on CUDA, 60 on CPU)."),
    drift_texts: int | None = typer.Option(
        None, help="Neutral texts for Drift (default 200 on CUDA, 32 on CPU)."
    ),
    tail: float = typer.Option(0.1, help="Fraction of least-moved questions for TailShift."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    batch_size: int = typer.Option(16, help="Sequences per forward pass."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    min_shift: float | None = typer.Option(None, help="Gate: BiasShift >= this (nats/token)."),
    min_lean: float | None = typer.Option(None, help="Gate: Lean >= this (in [-1, 1])."),
    max_mmlu_drop: float | None = typer.Option(None, help="Gate: MMLU drop vs base <= this (points)."),
    max_drift: float | None = typer.Option(None, help="Gate: Drift <= this (nats/token)."),
    out: Path | None = typer.Option(None, help="Also write the report as JSON to this file."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
) -> None:
    """Score how far a model moved along the axis, with 95% intervals, and gate on it.

    Example:

        autocustom shift-score --model runs/formal --data data/formal --split test --min-shift 0.1 --json

    Exit 0 when every gate passes, 1 when one fails (named on stderr), 2 on bad input.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.fileio import write_json_atomic
        from autocustom.score.shift_score import ScoreConfig, shift_score

        config = ScoreConfig(
            model=model,
            data=str(data),
            split=split,
            base=base,
            toward=toward,
            system_prompt=system_prompt,
            few_shot=few_shot,
            gen=gen,
            gen_tokens=gen_tokens,
            mmlu=mmlu,
            mmlu_questions=mmlu_questions,
            drift_texts=drift_texts,
            tail=tail,
            bootstrap=bootstrap,
            seed=seed,
            batch_size=batch_size,
            device=device,
            min_shift=min_shift,
            min_lean=min_lean,
            max_mmlu_drop=max_mmlu_drop,
            max_drift=max_drift,
        )
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
        stderr.print(f"gate failed: --{gate.name} {gate.threshold} ({gate.metric} = {_number(gate.value)})")
    if not report.passed:
        raise typer.Exit(EXIT_GATE)


def render_score(result: dict[str, Any]) -> None:
    from rich.table import Table

    title = f"{result['model']} toward {result['toward']} on {result['data']} ({result['split']})"
    table = Table(title=title)
    for column in ("metric", "value", "95% interval", "n"):
        table.add_column(column)
    for name, estimate in result["metrics"].items():
        if estimate is None:
            table.add_row(name, "n/a", "", "")
        else:
            interval = f"[{_number(estimate['low'])}, {_number(estimate['high'])}]"
            table.add_row(name, _number(estimate["value"]), interval, str(estimate["n"]))
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
