"""`autocustom train`: fine-tune a model toward one pole of a dataset (see autocustom.training.trainer)."""

from __future__ import annotations

from typing import Any

import typer

from autocustom.cli.common import (
    EXIT_GATE,
    JSON_OUTPUT,
    QUIET,
    VERBOSE,
    configure_logging,
    emit_json,
    progress_reporter,
    stderr,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


@config_options("autocustom.training.config:TrainConfig")
def train_command(
    values: dict[str, Any],  # TrainConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Fine-tune a model toward one pole; keep the best checkpoint by validation BiasShift.

    Example:

        autocustom train --data data/formal --toward formal --out runs/formal --max-steps 60 --eval-steps 20

    Exit 1 with --require-improvement when no checkpoint beat the base on validation. `--dry-run` prints
    the memory plan by part and loads no weights (exit 1 when it does not fit this device).

    Writes OUT/model (loadable by `autocustom shift-score --model OUT`), metrics.jsonl, summary.json and
    run_config.json. Under `accelerate launch -m autocustom train ...` it runs data-parallel unchanged.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.training.config import TrainConfig
        from autocustom.training.trainer import memory_plan, train

        config = TrainConfig(**values)
        if config.dry_run:
            _dry_run(memory_plan(config), json_output)
            return
        with progress_reporter(quiet) as progress:
            result = train(config, progress=progress)
    if json_output:
        emit_json(result.to_dict())
    else:
        _render(result, config.out, config.toward)
    if config.require_improvement and not result.improved:
        stderr.print(f"gate failed: --require-improvement ({result.selection})", soft_wrap=True)
        raise typer.Exit(EXIT_GATE)


def _dry_run(plan: Any, json_output: bool) -> None:
    """Print the memory plan; exit 1 (a failed gate) when it does not fit the device."""
    if json_output:
        emit_json(plan.to_dict())
    else:
        stderr.print(
            f"memory plan ({', '.join(f'{k}={v}' for k, v in plan.options.items() if k != 'would_fit')}):"
        )
        stderr.print(plan.table(), soft_wrap=True)
        if plan.fits is False:
            stderr.print(
                f"would fit with: {', '.join(plan.options['would_fit']) or 'none of the tried options'}"
            )
    if plan.fits is False:
        raise typer.Exit(EXIT_GATE)


def _render(result: Any, out: str, toward: str) -> None:
    stderr.print(result.selection, soft_wrap=True)
    shift, test = result.bias_shift, result.bias_shift_test
    stderr.print(f"best step {result.best_step}; stopped by {result.stop_reason}; run in {out}")
    stderr.print(f"BiasShift (validation): {shift}")
    if test is not None:
        stderr.print(f"BiasShift (test, held-out subareas): {test}")
    stderr.print(
        f"MMLU {result.mmlu_before} -> {result.mmlu_after} (n={result.mmlu_questions}); Drift {result.drift}"
    )
    replies = result.extra.get("replies")  # a fluency budget or on-policy training: the kept model's replies
    if replies:
        from autocustom.scoring.contrast import reply_lines

        for line in reply_lines(result.plans["final"]["judge"], replies, toward):
            stderr.print(line, soft_wrap=True)
