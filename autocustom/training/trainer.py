"""`autocustom train`: move a model toward one pole of a dataset's axis, on transformers.Trainer.

This module is the run's order of work, torchtune's recipe verbs: check the inputs and the memory plan,
`prepare` the models and data (setup.py), build the Trainer (pair_trainer.py), train with evaluation and
early stopping (callbacks.py), then measure the kept model (kept_model.py) and write the summary
(result.py). Sharding beyond the Trainer's lives in sharding.py, the evaluation plans in plans.py.

Run directory:
  run_config.json   the resolved TrainConfig (+ axis, lora, lr, sizes): what made this run
  model/            the best model by validation BiasShift (or its LoRA adapter) + tokenizer
  metrics.jsonl     one line per evaluation
  summary.json      the result (TrainResult.to_dict()); its presence means "finished"
  checkpoints/      Trainer checkpoints for --resume; removed once summary.json is written
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from autocustom.data.io import Dataset
from autocustom.errors import UsageError
from autocustom.fields import result_settings
from autocustom.layout import (
    CHECKPOINTS,
    RUN_CONFIG,
    SETTINGS,
    claim_output,
    read_summary,
    truncate_metrics,
    write_run_config,
    write_summary,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.measure import measure
from autocustom.scoring.stats import estimate_dict, estimate_from
from autocustom.training.callbacks import EvalCallback
from autocustom.training.config import CHECKPOINT_MINUTES, TrainConfig
from autocustom.training.data import EncodedRun, encode_run
from autocustom.training.kept_model import (
    callback_state,
    checkpoint_step,
    kept_model,
    last_checkpoint,
    save_best,
    wait_for_writer,
)
from autocustom.training.memory import MemoryPlan
from autocustom.training.pair_trainer import ReferenceLogps, build_trainer, training_args
from autocustom.training.result import REPLY_FIGURES, TrainResult, improved, selection_line
from autocustom.training.setup import Setup, device_for, prepare, training_data
from autocustom.training.sharding import launched_sharding, partitioned, sharded_as

log = logging.getLogger(__name__)


def train(config: TrainConfig, *, progress: ProgressCallback = no_progress) -> TrainResult:
    """Train `config.model` toward `config.toward` on `config.data`; writes the run directory `config.out`.

    Raises UsageError/DataError/AxisError/ModelLoadError/OutputExistsError (exit 2) before writing
    anything when the input cannot work. With `resume`, a finished run returns its summary untouched.
    """
    from accelerate import PartialState

    config.validate()
    # cpu=True lets accelerate see a CPU-only multi-process launch as DDP over gloo (else it runs N copies)
    distributed = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    out = Path(config.out)
    settings = result_settings(config)  # as asked, before defaults resolve: what a resume must match
    finished = _finished_run(config, out, settings, distributed)
    if finished is not None:
        return finished
    dataset = training_data(config)
    device = device_for(config, distributed)
    config.check_loading(device)
    run = encode_run(config, dataset)  # once: the memory plan measures these rows, training trains on them
    memory = _check_memory(config, dataset, device, run)
    checkpointing = memory.options["gradient_checkpointing"]  # "auto" resolved by the plan
    config = replace(config, gradient_checkpointing=checkpointing)
    distributed.wait_for_everyone()  # every rank has checked --out before rank 0 writes into it
    started = time.monotonic()
    use_lora = memory.options["lora"]
    # before any model loads: under ZeRO-3 the arguments register DeepSpeed's config with transformers,
    # which then builds each model partitioned (deepspeed.zero.Init) instead of whole on every rank
    args = training_args(config, out, device, use_lora)
    setup = prepare(config, dataset, device, use_lora, run, progress)
    checkpoint = last_checkpoint(out / CHECKPOINTS) if config.resume else None
    if distributed.is_main_process:
        write_run_config(out, _resolved(config, dataset, setup, distributed.num_processes, settings))
        truncate_metrics(out, checkpoint_step(checkpoint) if checkpoint else 0)
    distributed.wait_for_everyone()
    trainer, callback = build_trainer(config, args, setup, out, distributed.is_main_process, progress)
    if checkpoint is not None:
        callback.restore(callback_state(checkpoint))
        log.info("resuming from %s", checkpoint)
    train_started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    log.info("training done: %s", output.metrics)
    # no evaluation passed the guardrails: keep the last model (before release: ZeRO-3 gathers via its engine)
    if callback.best_step is None:
        save_best(trainer, setup.tokenizer, out, config.model)
    if not partitioned(setup.model):  # ZeRO-3's engine, released, would take its forward hooks with it
        _release_optimizer(trainer)
    trained_seconds = time.monotonic() - train_started - callback.eval_seconds - _reference_seconds(trainer)
    steps = trainer.state.global_step
    new_steps = steps - (checkpoint_step(checkpoint) if checkpoint else 0)
    trained_pairs = new_steps * config.batch_size * config.grad_accum * trainer.args.world_size
    result = _result(config, setup, callback, out, steps, sharded_as(trainer, distributed.num_processes))
    result.wall_seconds = round(callback.elapsed_before + time.monotonic() - started, 2)
    result.pairs_per_second = round(trained_pairs / max(trained_seconds, 1e-9), 4)
    if distributed.is_main_process:
        write_summary(out, result.to_dict())
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    distributed.wait_for_everyone()
    progress(ProgressEvent("train", steps, steps, f"stopped: {result.stop_reason}"))
    return result


class MemoryPlanError(UsageError):
    """The run would not fit the device's memory (exit 2: change the options, as the message says)."""


def _finished_run(
    config: TrainConfig, out: Path, settings: dict[str, Any], distributed
) -> TrainResult | None:
    """A finished run's result under --resume with the same settings; refuses any other occupied --out
    (`claim_output`; run_config.json is written once the inputs are checked, so this only checks)."""
    if config.force_restart and distributed.is_main_process:  # one process deletes, then all check
        claim_output(out, RUN_CONFIG, {}, command="train", restart=True, write=False)
    distributed.wait_for_everyone()
    if not claim_output(out, RUN_CONFIG, settings, command="train", resume=config.resume, write=False):
        return None
    summary = read_summary(out)
    if summary is not None:
        log.info("%s is finished; returning its summary", out)
        return TrainResult.from_dict(summary)
    return None


def memory_plan(config: TrainConfig) -> MemoryPlan:
    """`train --dry-run`: the memory plan of `config` on its dataset and this device; loads no weights."""
    from accelerate import PartialState

    from autocustom.training.memory import plan_training

    config.validate()
    dataset = training_data(config)
    device = device_for(config, PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available()))
    config.check_loading(device)
    return plan_training(config, dataset, device)


def _check_memory(config: TrainConfig, dataset: Dataset, device: torch.device, run: EncodedRun) -> MemoryPlan:
    """Refuse, before any weight is loaded, a run whose memory plan (per process) does not fit the device."""
    from autocustom.training.memory import plan_training

    plan = plan_training(config, dataset, device, run)
    log.info("memory plan:\n%s", plan.table())
    if plan.fits is False:
        fixes = plan.options.get("would_fit") or []
        raise MemoryPlanError(
            f"this run needs about {plan.total / 2**30:.1f} GiB and {device} has "
            f"{plan.available / 2**30:.1f} GiB (train --dry-run shows the plan by part)",
            f"pass {' or '.join(fixes)}" if fixes else "use a smaller model or a larger device",
        )
    return plan


def _reference_seconds(trainer: Trainer) -> float:
    """The time this run spent computing reference log-probs (`ReferenceLogps`): not training time."""
    return sum(c.seconds for c in trainer.callback_handler.callbacks if isinstance(c, ReferenceLogps))


def _release_optimizer(trainer: Trainer) -> None:
    """Free the optimizer state before the final measurement: the kept model is measured without it."""
    trainer.accelerator.free_memory()
    trainer.optimizer = trainer.lr_scheduler = None


def _resolved(
    config: TrainConfig, dataset: Dataset, setup: Setup, processes: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """run_config.json: the config with every default resolved, what the run found, and the settings as
    asked (what a resume must match, `claim_output`)."""
    return {
        SETTINGS: settings,
        **config.to_dict(),
        "axis": dataset.axis.label,
        "opposite": setup.poles.opposite,
        "lora": setup.use_lora,
        "lr": config.resolved_lr(setup.use_lora),
        "beta": config.resolved_beta(),
        "save_steps": config.save_steps or f"{config.eval_steps}, once {CHECKPOINT_MINUTES:g} min passed",
        "mmlu_questions": len(setup.final_plan.mmlu),
        "drift_texts": len(setup.final_plan.drift_texts),
        "device": str(setup.device),
        "processes": processes,
        "sharding": sharding.strategy if (sharding := launched_sharding()) else None,
        "parameters": setup.n_params,
    }


def _result(
    config: TrainConfig, setup: Setup, callback: EvalCallback, out: Path, steps: int, sharding: str | None
) -> TrainResult:
    """The summary: validation BiasShift at the kept step, then the kept model measured on the final plan.

    The final figures come from `measure` on the saved model, with the plan `shift-score` makes for the
    same split and sizes, so `summary.json` and `shift-score` report the same numbers.
    """
    extra: dict[str, Any] = {"sharding": sharding} if sharding else {}
    if callback.best_step is None:  # the last model was saved instead of a selected one
        extra["best_rejected"] = True
    wait_for_writer()
    final: dict[str, Any] = {}
    if config.measure_final:
        kept = kept_model(setup.model, out, adapter=setup.use_lora, device=setup.device)
        final = measure(kept, setup.reference, setup.final_plan, tokenizer=setup.tokenizer).metrics
    else:
        extra["final_measurement"] = "skipped: the caller measures the kept model itself (`run`: score.json)"
    if (
        final and setup.final_plan.judge
    ):  # --max-fluency-drop: the kept model's own replies on the final split
        extra["replies"] = {name: estimate_dict(final[name]) for name in REPLY_FIGURES}
    row = callback.best_row
    best = estimate_from(row["bias_shift"]) if row else None
    return TrainResult(
        run_dir=str(out),
        best_step=callback.best_step,
        bias_shift=best,
        bias_shift_test=final.get("bias_shift") if setup.final_plan.split == "test" else None,
        mmlu_before=final.get("mmlu_base_accuracy"),
        mmlu_after=final.get("mmlu_accuracy"),
        mmlu_delta_points=final.get("mmlu_delta_points"),
        drift=final.get("drift"),
        stop_reason=callback.stop_reason or ("max-steps" if config.max_steps else "epochs"),
        steps=steps,
        wall_seconds=0.0,
        pairs_per_second=0.0,
        mmlu_questions=len(setup.final_plan.mmlu),
        drift_texts=len(setup.final_plan.drift_texts),
        improved=improved(best),
        selection=selection_line(best, config.toward, callback.budget_note()),
        plans={"validation": setup.validation_plan.describe(), "final": setup.final_plan.describe()},
        extra=extra,
    )


__all__ = ["TrainConfig", "TrainResult", "memory_plan", "train"]
