"""`autocustom train`: move a model toward one pole of a dataset's axis, on transformers.Trainer.

The Trainer brings the loop, DDP/FSDP/DeepSpeed through accelerate, checkpoints and exact resume (RNG,
optimizer, scheduler, data position); this module adds the pair losses (`compute_loss`), the MMLU
regulariser in the same forward pass, and evaluation with early stopping (callbacks.EvalCallback).

Run directory:
  run_config.json   the resolved TrainConfig (+ axis, lora, lr, sizes): what made this run
  model/            the best model by validation BiasShift (or its LoRA adapter) + tokenizer
  metrics.jsonl     one line per evaluation
  summary.json      the result (TrainResult.to_dict()); its presence means "finished"
  checkpoints/      Trainer checkpoints for --resume; removed once summary.json is written
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from autocustom.data.io import load_dataset_dir, read_json, write_json_atomic
from autocustom.errors import DataError, OutputExistsError
from autocustom.models import RUN_MARKER, RUN_MODEL_SUBDIR, load_model
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.score.stats import Estimate, bootstrap, paired_difference
from autocustom.train.callbacks import EvalCallback, EvalSet, estimate_from
from autocustom.train.config import LORA_AUTO_THRESHOLD, TrainConfig
from autocustom.train.data import EpochShuffleSampler, PairCollator, PairDataset, encode_pairs, pad_sequences
from autocustom.train.losses import (
    contrastive_loss,
    cvar_alpha_at,
    cvar_mean,
    dpo_loss,
    ipo_loss,
    selected_logprobs,
    sequence_logps,
    simpo_loss,
)
from autocustom.train.regularizer import MMLURegularizer, kl_to_base

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    """What a run achieved; `to_dict()` is summary.json."""

    run_dir: str
    best_step: int | None
    bias_shift: Estimate | None  # validation, at the best step
    bias_shift_test: Estimate | None  # held-out test subareas, best model (None without a test split)
    mmlu_before: Estimate
    mmlu_after: Estimate | None
    mmlu_delta: Estimate | None  # paired, after - before
    drift: Estimate | None
    stop_reason: str
    steps: int
    wall_seconds: float
    pairs_per_second: float
    mmlu_questions: int
    drift_texts: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in vars(self).items():
            if isinstance(value, Estimate):
                data[key] = value.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        values = dict(data)
        for key in ("bias_shift", "bias_shift_test", "mmlu_before", "mmlu_after", "mmlu_delta", "drift"):
            values[key] = estimate_from(values.get(key))
        return cls(**values)


class PairTrainer(Trainer):
    """Trainer whose loss is a pair objective (+ MMLU regulariser) over [targets; opposites] batches."""

    loss_is_scaled_for_ga = False  # compute_loss returns a mean: let Trainer divide by grad-accum steps

    def __init__(
        self, *args, config: TrainConfig, regularizer: MMLURegularizer | None, reference, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.config = config
        self.regularizer = regularizer
        self.reference = reference
        self.beta = config.resolved_beta()
        self.loss_log: list[float] = []
        self._micro = (-1, 0)  # (global step, micro-step within it): picks the regulariser batch

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return EpochShuffleSampler(len(dataset), self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pairs = inputs["input_ids"].shape[0] // 2
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        needed = inputs["answer_mask"].bool()  # [2B, T-1]: positions whose next token is an answer token
        reg_batch = self._regularizer_batch(input_ids.device)
        if reg_batch is not None:  # one forward for pairs and regulariser: DDP wants one forward per backward
            reg_ids, reg_attention, reg_answer = reg_batch
            reg_scored = (reg_answer if self.regularizer.kind == "nll" else reg_attention[:, 1:]).bool()
            input_ids, attention_mask = _stack_right_padded(
                [(input_ids, attention_mask), (reg_ids, reg_attention)], self.regularizer.pad_id
            )
            width = input_ids.shape[1] - 1
            needed = torch.cat(
                [_pad_right(needed.long(), width, 0), _pad_right(reg_scored.long(), width, 0)]
            ).bool()
        logps, logits = answer_token_logps(model, input_ids, attention_mask, needed)
        target, opposite = logps[:pairs], logps[pairs : 2 * pairs]
        target_mask, opposite_mask = needed[:pairs], needed[pairs : 2 * pairs]
        mean_t = sequence_logps(target, target_mask, normalize=True)
        mean_o = sequence_logps(opposite, opposite_mask, normalize=True)
        per_pair = self._pair_loss(target, target_mask, opposite, opposite_mask, mean_t, mean_o, inputs)
        alpha = cvar_alpha_at(self.state.global_step, self.config.cvar_alpha, self.config.cvar_warmup)
        loss = cvar_mean(per_pair, mean_t - mean_o, alpha)
        if reg_batch is not None:
            if self.regularizer.kind == "nll":
                reg_loss = -sequence_logps(logps[2 * pairs :], needed[2 * pairs :], normalize=True).mean()
            else:
                with torch.no_grad():
                    keep = _keep(reg_scored)
                    base = self.reference(
                        input_ids=reg_ids, attention_mask=reg_attention, logits_to_keep=keep
                    )
                reg_loss = kl_to_base(logits[int(needed[: 2 * pairs].sum()) :], base.logits)
            loss = loss + self.config.reg_weight * reg_loss
        self.loss_log.append(float(loss.detach()))
        return (loss, {"logits": logits}) if return_outputs else loss

    def _pair_loss(
        self, target, target_mask, opposite, opposite_mask, mean_t, mean_o, inputs
    ) -> torch.Tensor:
        kind = self.config.loss
        if kind == "contrastive":
            return contrastive_loss(target, target_mask, opposite, opposite_mask, self.config.alpha)
        if kind == "simpo":
            return simpo_loss(mean_t, mean_o, self.beta, self.config.simpo_gamma)
        sum_t = sequence_logps(target, target_mask, normalize=False)
        sum_o = sequence_logps(opposite, opposite_mask, normalize=False)
        ref = inputs["reference"].to(sum_t.dtype)
        if kind == "dpo":
            return dpo_loss(sum_t, sum_o, ref[:, 0], ref[:, 1], self.beta)
        return ipo_loss(
            sum_t, sum_o, ref[:, 0], ref[:, 1], target_mask.sum(-1), opposite_mask.sum(-1), self.beta
        )

    def _regularizer_batch(self, device):
        if self.regularizer is None or not self.model.training:
            return None
        step, micro = self._micro
        micro = micro + 1 if step == self.state.global_step else 0
        self._micro = (self.state.global_step, micro)
        return self.regularizer.batch(
            self.state.global_step * self.args.gradient_accumulation_steps + micro, device
        )


def _keep(needed: torch.Tensor) -> torch.Tensor:
    """[R, T-1] mask of positions whose next token is scored -> [R, T] `logits_to_keep` mask."""
    return torch.nn.functional.pad(needed, (0, 1), value=False)


def answer_token_logps(model, input_ids, attention_mask, needed) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [R, T-1] at the `needed` positions (0 elsewhere), and their logits [N, V].

    The vocabulary projection runs only where a scored token is predicted (`logits_to_keep` with a
    boolean mask), not over prompts and padding: on a small model with a 49k vocabulary that projection
    and its log-softmax are most of a training step. Called through the model's own forward, so DDP
    and peft wrappers see an ordinary call.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=_keep(needed)).logits
    logits = logits.reshape(-1, logits.shape[-1])  # [N, V], rows in (row, position) order
    flat = selected_logprobs(logits, input_ids[:, 1:][needed])
    return torch.zeros(needed.shape, dtype=flat.dtype, device=flat.device).masked_scatter(
        needed, flat
    ), logits


def _stack_right_padded(parts, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate right-padded (ids, mask) batches of different widths along the batch axis."""
    width = max(ids.shape[1] for ids, _ in parts)
    ids = torch.cat([_pad_right(i, width, pad_id) for i, _ in parts])
    return ids, torch.cat([_pad_right(m, width, 0) for _, m in parts])


def _pad_right(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)


def train(config: TrainConfig, *, progress: ProgressCallback = no_progress) -> TrainResult:
    """Train `config.model` toward `config.toward` on `config.data`; writes the run directory `config.out`.

    Raises UsageError/DataError/AxisError/ModelLoadError/OutputExistsError (exit 2) before writing
    anything when the input cannot work. With `resume`, a finished run returns its summary untouched.
    """
    from accelerate import PartialState

    from autocustom.runtime import resolve_device, resolve_dtype, seed_everything
    from autocustom.score.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, evaluation_size

    config.validate()
    # cpu=True lets accelerate see a CPU-only multi-process launch as DDP over gloo (else it runs N copies)
    distributed = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    out = Path(config.out)
    if config.resume and (out / SUMMARY).is_file():
        log.info("%s is finished; returning its summary", out)
        return TrainResult.from_dict(read_json(out / SUMMARY))
    if not config.resume and out.exists() and any(out.iterdir()):
        what = "holds another run" if (out / RUN_MARKER).is_file() else "is not empty"
        raise OutputExistsError(
            f"output directory {out} {what}", "pass --resume to continue it, or a new --out"
        )
    dataset = load_dataset_dir(config.data)
    axis = dataset.axis
    opposite = axis.opposite(config.toward)
    train_pairs, val_pairs = dataset.splits.get("train", []), dataset.splits.get("validation", [])
    for split, pairs in (("train", train_pairs), ("validation", val_pairs)):
        if not pairs:
            raise DataError(Path(config.data) / f"{split}.jsonl", "has no pairs", "regenerate the dataset")
    distributed.wait_for_everyone()  # every rank has checked --out before rank 0 writes into it

    started = time.monotonic()
    device = distributed.device if distributed.num_processes > 1 else resolve_device(config.device)
    is_writer = distributed.is_main_process
    seed_everything(config.seed)
    progress(ProgressEvent("load model", 0, 2, config.model))
    loaded = load_model(config.model, device=device, dtype=torch.float32)
    reference = load_model(config.model, device=device, dtype=resolve_dtype(device)).model
    reference.requires_grad_(False)
    tokenizer = loaded.tokenizer
    progress(ProgressEvent("load model", 2, 2, config.model))
    n_params = sum(p.numel() for p in loaded.model.parameters())
    use_lora = config.lora if config.lora is not None else n_params > LORA_AUTO_THRESHOLD
    model = _with_lora(loaded.model, config) if use_lora else loaded.model
    on_cuda = device.type == "cuda"
    mmlu_n, mmlu_source = evaluation_size(config.mmlu_questions, MMLU_QUESTIONS, device.type)
    drift_n, _ = evaluation_size(config.drift_texts, DRIFT_TEXTS, device.type)
    if not on_cuda and config.mmlu_questions is None:
        log.warning("MMLU retention measured on %d questions (%s); set --mmlu-questions", mmlu_n, mmlu_source)

    examples = encode_pairs(tokenizer, train_pairs, config.toward, opposite, config.max_length)
    ref_logps = (
        _reference_logps(reference, examples, tokenizer, config) if config.loss in ("dpo", "ipo") else None
    )
    evalset = _evalset(reference, tokenizer, val_pairs, config, mmlu_n, drift_n, progress)
    regularizer = None
    if config.reg_weight > 0:
        from autocustom.score.mmlu import regularizer_pool

        pool = regularizer_pool(config.reg_subjects, seed=config.seed)
        regularizer = MMLURegularizer(tokenizer, pool, config.reg, config.reg_batch_size, config.max_length)

    checkpoint = _last_checkpoint(out / CHECKPOINTS) if config.resume else None
    resolved = {
        **config.to_dict(),
        "axis": axis.label,
        "opposite": opposite,
        "lora": use_lora,
        "lr": config.resolved_lr(use_lora),
        "beta": config.resolved_beta(),
        "save_steps": config.save_steps or config.eval_steps,
        "mmlu_questions": mmlu_n,
        "drift_texts": drift_n,
        "device": str(device),
        "processes": distributed.num_processes,
        "parameters": n_params,
    }
    if is_writer:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RUN_MARKER, resolved)
        _truncate_metrics(out / METRICS, _checkpoint_step(checkpoint) if checkpoint else 0)
    distributed.wait_for_everyone()

    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=resolved["lr"],
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        lr_scheduler_type="constant",  # the stop comes from early stopping, not from a schedule's end
        save_strategy="steps",
        save_steps=resolved["save_steps"],
        save_total_limit=2,
        logging_strategy="no",
        report_to="none",
        seed=config.seed,
        bf16=on_cuda and resolve_dtype(device) == torch.bfloat16,
        use_cpu=not on_cuda,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    callback = EvalCallback(
        evalset,
        eval_steps=config.eval_steps,
        patience=config.patience,
        max_mmlu_drop=config.max_mmlu_drop,
        max_drift=config.max_drift,
        save_best=lambda m, step: _save_best(m, tokenizer, out, config.model) if is_writer else None,
        metrics_path=out / METRICS,
        is_writer=is_writer,
        progress=progress,
    )
    trainer = PairTrainer(
        model=model,
        args=args,
        train_dataset=PairDataset(examples, ref_logps),
        data_collator=PairCollator(tokenizer.pad_token_id),
        callbacks=[callback],
        config=config,
        regularizer=regularizer,
        reference=reference,
    )
    trainer.remove_callback(
        PrinterCallback
    )  # with tqdm off, Trainer prints its logs to stdout; we never print
    callback.loss_log = trainer.loss_log
    if checkpoint is not None:
        callback.restore(_callback_state(checkpoint))
        log.info("resuming from %s", checkpoint)
    train_started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.monotonic() - train_started - callback.eval_seconds
    steps = trainer.state.global_step
    stop = callback.stop_reason or ("max-steps" if config.max_steps else "epochs")
    trained_pairs = (
        (steps - (_checkpoint_step(checkpoint) if checkpoint else 0))
        * config.batch_size
        * config.grad_accum
        * args.world_size
    )
    log.info("training done: %s", output.metrics)

    result = _result(out, callback, evalset, stop, steps, mmlu_n, drift_n)
    result.wall_seconds = round(callback.elapsed_before + time.monotonic() - started, 2)
    result.pairs_per_second = round(trained_pairs / max(train_seconds, 1e-9), 4)
    if is_writer:
        if callback.best_step is None:  # no evaluation passed the guardrails: keep the last model, say so
            _save_best(model, tokenizer, out, config.model)
            result.extra["best_rejected"] = True
        test_pairs = dataset.splits.get("test", [])
        if test_pairs:
            result.bias_shift_test = _test_shift(out, test_pairs, config, reference, tokenizer, device)
        write_json_atomic(out / SUMMARY, result.to_dict())
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    distributed.wait_for_everyone()
    progress(ProgressEvent("train", steps, steps, f"stopped: {stop}"))
    return result


def _with_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=config.lora_targets or "all-linear",
        lora_dropout=0.0,  # no dropout: a resumed run and a DDP run reproduce the single run exactly
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


@torch.no_grad()
def _reference_logps(reference, examples, tokenizer, config: TrainConfig) -> torch.Tensor:
    """Summed answer log-probs of the frozen base for every training pair, once: [N, 2] (target, opposite)."""
    device = next(reference.parameters()).device
    rows: list[torch.Tensor] = []
    for start in range(0, len(examples), config.eval_batch_size):
        chunk = examples[start : start + config.eval_batch_size]
        seqs = [(e.target_ids, e.target_prompt) for e in chunk] + [
            (e.opposite_ids, e.opposite_prompt) for e in chunk
        ]
        ids, mask, answer = (t.to(device) for t in pad_sequences(seqs, tokenizer.pad_token_id))
        logps, _ = answer_token_logps(reference, ids, mask, answer.bool())
        sums = sequence_logps(logps, answer, normalize=False).float().cpu()
        rows.append(torch.stack([sums[: len(chunk)], sums[len(chunk) :]], dim=1))
    return torch.cat(rows)


def _evalset(reference, tokenizer, val_pairs, config, mmlu_n, drift_n, progress) -> EvalSet:
    from autocustom.score.drift import neutral_texts
    from autocustom.score.logprobs import pair_margins
    from autocustom.score.mmlu import mmlu_correct, retention_subset

    progress(ProgressEvent("baseline", 0, 2, "base model margins and MMLU"))
    base_margins = pair_margins(
        reference,
        tokenizer,
        val_pairs,
        config.toward,
        batch_size=config.eval_batch_size,
        max_length=config.max_length,
    )
    questions = retention_subset(mmlu_n, seed=config.seed)
    base_mmlu = mmlu_correct(reference, tokenizer, questions, batch_size=config.eval_batch_size)
    progress(ProgressEvent("baseline", 2, 2, f"base MMLU {base_mmlu.mean():.3f} on {len(questions)}"))
    return EvalSet(
        tokenizer,
        reference,
        val_pairs,
        config.toward,
        base_margins,
        questions,
        base_mmlu,
        neutral_texts(drift_n, seed=config.seed),
        config.eval_batch_size,
        config.max_length,
    )


def _save_best(model, tokenizer, out: Path, base_reference: str) -> None:
    """Write model (or adapter) + tokenizer to out/model, swapped in whole so a kill leaves one intact."""
    staging = out / f".{RUN_MODEL_SUBDIR}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    adapter_config = staging / "adapter_config.json"
    if adapter_config.is_file():  # name the base as the user did, so load_model resolves it offline
        data = json.loads(adapter_config.read_text())
        data["base_model_name_or_path"] = base_reference
        write_json_atomic(adapter_config, data)
    target, old = out / RUN_MODEL_SUBDIR, out / f".{RUN_MODEL_SUBDIR}-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _test_shift(out: Path, test_pairs, config: TrainConfig, reference, tokenizer, device) -> Estimate:
    """BiasShift of the saved best model on the test split (subareas never seen in training)."""
    from autocustom.score.logprobs import pair_margins
    from autocustom.score.shift import bias_shift

    best = load_model(str(out), device=device, dtype=torch.float32).model
    kwargs = {"batch_size": config.eval_batch_size, "max_length": config.max_length}
    tuned = pair_margins(best, tokenizer, test_pairs, config.toward, **kwargs)
    base = pair_margins(reference, tokenizer, test_pairs, config.toward, **kwargs)
    return bias_shift(tuned, base)


def _result(out: Path, callback: EvalCallback, evalset: EvalSet, stop, steps, mmlu_n, drift_n) -> TrainResult:
    row = callback.best_row
    before = bootstrap(evalset.base_mmlu)
    after = delta = None
    if row is not None:
        after = estimate_from(row["mmlu"])
        if callback.best_mmlu_correct is not None:
            delta = paired_difference(callback.best_mmlu_correct, evalset.base_mmlu)
    return TrainResult(
        run_dir=str(out),
        best_step=callback.best_step,
        bias_shift=estimate_from(row["bias_shift"]) if row else None,
        bias_shift_test=None,
        mmlu_before=before,
        mmlu_after=after,
        mmlu_delta=delta,
        drift=estimate_from(row["drift"]) if row else None,
        stop_reason=stop,
        steps=steps,
        wall_seconds=0.0,
        pairs_per_second=0.0,
        mmlu_questions=mmlu_n,
        drift_texts=drift_n,
    )


def _last_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=_checkpoint_step) if found else None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def _callback_state(checkpoint: Path) -> dict[str, Any]:
    state = read_json(checkpoint / "trainer_state.json").get("stateful_callbacks", {})
    return state.get(EvalCallback.__name__, {}).get("attributes", {})


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop evaluations newer than the checkpoint: the resumed run repeats them exactly."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= step]
    if len(kept) != len(rows):
        from autocustom.data.io import write_text_atomic

        write_text_atomic(path, "".join(line + "\n" for line in kept))


__all__ = ["PairTrainer", "TrainConfig", "TrainResult", "train"]
