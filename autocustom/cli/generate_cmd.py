"""`autocustom generate`: an LLM writes a contrastive dataset for one axis (see autocustom.data.generate)."""

from __future__ import annotations

from pathlib import Path

import typer

from autocustom.cli.common import (
    configure_logging,
    emit_json,
    pairs_per_split,
    parse_float_list,
    progress_reporter,
    stderr,
    user_errors,
)
from autocustom.llm.generation import GENERATION_BATCH


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


def generate_command(
    axis: str = typer.Option(..., "--axis", help='Two poles "pole_a:pole_b", or a YAML axis file.'),
    out: Path = typer.Option(..., "--out", help="Dataset directory (created; the same command resumes it)."),
    subareas: int = typer.Option(8, "--subareas", help="Subareas (topics) where the poles differ."),
    questions_per_subarea: int = typer.Option(10, "--questions-per-subarea", help="Questions per subarea."),
    dedup_threshold: float = typer.Option(
        0.90, "--dedup-threshold", help="Cosine at which a question is a near-duplicate."
    ),
    split: str = typer.Option(
        "0.7,0.15,0.15", "--split", help="train,validation,test fractions, by subarea."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling and the split."),
    backend: str = typer.Option(
        "local", "--backend", help="local (transformers) or openai (any compatible server)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model: packaged name, path or hub id (local); served name (openai)."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL; key from OPENAI_API_KEY."
    ),
    concurrency: int = typer.Option(4, "--concurrency", help="Parallel requests (openai)."),
    batch_size: int = typer.Option(
        GENERATION_BATCH, "--batch-size", help="Prompts per generate() batch (local)."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (local)."),
    max_retries: int = typer.Option(
        3, "--max-retries", help="New samples for an unusable reply before it is dropped."
    ),
    max_rounds: int = typer.Option(
        4, "--max-rounds", help="Asks per list when the model returns too few distinct items."
    ),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", help="Token limit of list replies."),
    answer_max_new_tokens: int = typer.Option(96, "--answer-max-new-tokens", help="Token limit of answers."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature."),
    json_output: bool = typer.Option(
        False, "--json", help="Print one JSON object with the counts on stdout."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
) -> None:
    """Generate a contrastive dataset: subareas -> questions -> one answer per pole, deduped and split.

    Example:

        autocustom generate --axis "formal:casual" --out data/formal --subareas 6 --questions-per-subarea 10

    Every LLM call is cached in OUT/cache.sqlite, so the same command resumes a stopped run.

    Rerunning a finished run makes no new LLM call.
    """
    configure_logging(verbose)
    ratios = parse_float_list(split, "--split", count=3)
    with user_errors():
        from autocustom.axis import parse_axis
        from autocustom.data.generate import GenerateConfig, generate

        config = GenerateConfig(
            axis=parse_axis(axis),
            out=out,
            subareas=subareas,
            questions_per_subarea=questions_per_subarea,
            dedup_threshold=dedup_threshold,
            split=tuple(ratios),
            seed=seed,
            backend=backend,
            model=model,
            base_url=base_url,
            concurrency=concurrency,
            batch_size=batch_size,
            device=device,
            max_retries=max_retries,
            max_rounds=max_rounds,
            max_new_tokens=max_new_tokens,
            answer_max_new_tokens=answer_max_new_tokens,
            temperature=temperature,
        )
        with progress_reporter(quiet) as progress:
            result = generate(config, progress=progress)
    if json_output:
        emit_json(result.to_dict())
        return
    counts = result.counts
    per_split = pairs_per_split(counts)
    stderr.print(
        f"wrote {counts['pairs']} pairs ({per_split}) in {counts['subareas']} subareas to {result.out}; "
        f"{counts['calls_made']} LLM calls, {counts['cache_hits']} from the cache"
    )
    short = {k: v for k, v in result.shortfall.items() if v}
    if short:
        stderr.print(f"shortfall against what was asked: {short} (see {result.out / 'dropped.jsonl'})")
