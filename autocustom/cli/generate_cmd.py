"""`autocustom generate`: an LLM writes a contrastive dataset for one axis (see autocustom.data.generate)."""

from __future__ import annotations

from typing import Any

import typer

from autocustom.cli.common import (
    JSON_OUTPUT,
    QUIET,
    VERBOSE,
    configure_logging,
    emit_json,
    pairs_per_split,
    progress_reporter,
    stderr,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


@config_options("autocustom.data.generate:GenerateConfig")
def generate_command(
    values: dict[str, Any],  # GenerateConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Generate a contrastive dataset: subareas -> questions -> one answer per pole, deduped and split.

    Example:

        autocustom generate --axis "formal:casual" --out data/formal --subareas 6 --questions-per-subarea 10

    Every LLM call is cached in OUT/cache.sqlite, so the same command resumes a stopped run.

    Rerunning a finished run makes no new LLM call.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.data.generate import GenerateConfig, generate
        from autocustom.data.pair_check import checks_lines
        from autocustom.scoring.pair_lean import lean_reader

        config = GenerateConfig(**values)
        with progress_reporter(quiet) as progress:
            result = generate(
                config, read_lean=lean_reader(config.lean_judge, config.device), progress=progress
            )
    if json_output:
        emit_json(result.to_dict())
        return
    counts = result.counts
    per_split = pairs_per_split(counts)
    stderr.print(
        f"wrote {counts['pairs']} pairs ({per_split}) in {counts['subareas']} subareas to {result.out}; "
        f"{counts['calls_made']} LLM calls, {counts['cache_hits']} from the cache"
    )
    if counts.get("rewrite_first"):
        written = ", ".join(f"{n} written {pole}" for pole, n in counts["rewrite_first"].items())
        stderr.print(f"minimal pairs: {written} first, each rewritten into the other pole")
    for line in checks_lines(counts):
        stderr.print(line, soft_wrap=True)
    short = {k: v for k, v in result.shortfall.items() if v}
    if short:
        stderr.print(f"shortfall against what was asked: {short} (see {result.out / 'dropped.jsonl'})")
