"""`autocustom train`: fine-tune a model toward one pole of a dataset (see autocustom.train.trainer)."""

from __future__ import annotations

from pathlib import Path

import typer

from autocustom.cli.common import configure_logging, emit_json, progress_reporter, stderr, user_errors


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def train_command(
    data: Path = typer.Option(..., "--data", help="Dataset directory made by `autocustom generate`."),
    toward: str = typer.Option(..., "--toward", help="The pole to move the model toward."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    model: str = typer.Option(
        "smollm2-135m", "--model", help="Packaged name, model/run directory or hub id."
    ),
    loss: str = typer.Option("contrastive", "--loss", help="contrastive, dpo, ipo or simpo."),
    alpha: float = typer.Option(1.0, "--alpha", help="contrastive: weight of the unlikelihood term."),
    beta: float | None = typer.Option(None, "--beta", help="dpo/ipo/simpo beta (0.1; simpo 2.0)."),
    simpo_gamma: float = typer.Option(0.5, "--simpo-gamma", help="simpo: target reward margin."),
    cvar_alpha: float = typer.Option(1.0, "--cvar-alpha", help="CVaR level (1.0 = plain mean)."),
    cvar_warmup: int = typer.Option(20, "--cvar-warmup", help="Steps to anneal CVaR from 1.0."),
    reg: str = typer.Option("nll", "--reg", help="MMLU regulariser: nll or kl."),
    reg_weight: float = typer.Option(0.5, "--reg-weight", help="Regulariser weight; 0 disables it."),
    reg_subjects: str | None = typer.Option(None, "--reg-subjects", help="Comma-separated MMLU subjects."),
    reg_batch_size: int = typer.Option(4, "--reg-batch-size", help="MMLU questions per micro-step."),
    lora: bool | None = typer.Option(
        None, "--lora/--full", help="LoRA or full fine-tuning (auto: >1B LoRA)."
    ),
    lora_rank: int = typer.Option(16, "--lora-rank", help="LoRA rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", help="LoRA alpha."),
    lora_targets: str | None = typer.Option(None, "--lora-targets", help="Comma-separated module names."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs)."),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the training pairs."),
    batch_size: int = typer.Option(4, "--batch-size", help="Pairs per device per micro-step."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-steps per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (2e-5 full, 2e-4 LoRA)."),
    max_length: int = typer.Option(256, "--max-length", help="Max tokens of prompt + answer."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    eval_steps: int = typer.Option(20, "--eval-steps", help="Evaluate every N steps."),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps (= eval)."),
    patience: int = typer.Option(3, "--patience", help="Evaluations without improvement before stopping."),
    max_mmlu_drop: float | None = typer.Option(
        None, "--max-mmlu-drop", help="Stop if MMLU drops > N points."
    ),
    max_drift: float | None = typer.Option(None, "--max-drift", help="Stop if Drift > N nats/token."),
    mmlu_questions: int | None = typer.Option(
        None, "--mmlu-questions", help="MMLU subset (570 GPU, 60 CPU)."
    ),
    drift_texts: int | None = typer.Option(None, "--drift-texts", help="Drift texts (128 GPU, 32 CPU)."),
    eval_batch_size: int = typer.Option(16, "--eval-batch-size", help="Evaluation batch size."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run; a finished one is kept."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens to stderr."),
) -> None:
    """Fine-tune a model toward one pole; keep the best checkpoint by validation BiasShift.

    Example:

        autocustom train --data data/formal --toward formal --out runs/formal --max-steps 60 --eval-steps 20

    Writes OUT/model (loadable by `autocustom shift-score --model OUT`), metrics.jsonl, summary.json and
    run_config.json. Under `accelerate launch -m autocustom train ...` it runs data-parallel unchanged.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.train.config import TrainConfig
        from autocustom.train.trainer import train

        config = TrainConfig(
            data=str(data),
            toward=toward,
            out=str(out),
            model=model,
            loss=loss,
            alpha=alpha,
            beta=beta,
            simpo_gamma=simpo_gamma,
            cvar_alpha=cvar_alpha,
            cvar_warmup=cvar_warmup,
            reg=reg,
            reg_weight=reg_weight,
            reg_subjects=_split(reg_subjects),
            reg_batch_size=reg_batch_size,
            lora=lora,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=_split(lora_targets),
            max_steps=max_steps,
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            max_length=max_length,
            seed=seed,
            device=device,
            eval_steps=eval_steps,
            save_steps=save_steps,
            patience=patience,
            max_mmlu_drop=max_mmlu_drop,
            max_drift=max_drift,
            mmlu_questions=mmlu_questions,
            drift_texts=drift_texts,
            eval_batch_size=eval_batch_size,
            resume=resume,
        )
        with progress_reporter(quiet) as progress:
            result = train(config, progress=progress)
    summary = result.to_dict()
    if json_output:
        emit_json(summary)
        return
    shift, test = result.bias_shift, result.bias_shift_test
    stderr.print(f"best step {result.best_step}; stopped by {result.stop_reason}; run in {out}")
    stderr.print(f"BiasShift (validation): {shift}")
    if test is not None:
        stderr.print(f"BiasShift (test, held-out subareas): {test}")
    stderr.print(
        f"MMLU {result.mmlu_before} -> {result.mmlu_after} (n={result.mmlu_questions}); Drift {result.drift}"
    )
