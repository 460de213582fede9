"""The Trainer subclass (`PairTrainer`: pair losses, distillation, the regulariser in one forward
pass) and how a run builds it (`training_args`, `build_trainer`), with the DPO reference log-probs.

The Trainer brings the loop, DDP/FSDP/DeepSpeed through accelerate, checkpoints and exact resume (RNG,
optimizer, scheduler, data position); this module adds only what a pair objective needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from autocustom.layout import CHECKPOINTS, TRAIN_LOGS
from autocustom.progress import ProgressCallback
from autocustom.scoring.measure import measure
from autocustom.tensors import answer_token_logps, keep_mask, kl_per_position, pad_width, padding_id
from autocustom.training.callbacks import CheckpointPolicy, EvalCallback
from autocustom.training.config import CHECKPOINT_MINUTES, DISTILL, TrainConfig
from autocustom.training.data import EpochShuffleSampler, PairCollator, PairDataset, pad_sequences
from autocustom.training.kept_model import save_best
from autocustom.training.losses import (
    contrastive_loss,
    cvar_alpha_at,
    cvar_mean,
    dpo_loss,
    ipo_loss,
    sequence_logps,
    simpo_loss,
)
from autocustom.training.onpolicy import OnPolicyBatches
from autocustom.training.regularizer import MMLURegularizer
from autocustom.training.setup import Setup


class PairTrainer(Trainer):
    """Trainer whose loss is a pair objective (+ MMLU regulariser) over [targets; opposites] batches."""

    loss_is_scaled_for_ga = False  # compute_loss returns a mean: let Trainer divide by grad-accum steps

    def __init__(
        self,
        *args,
        config: TrainConfig,
        regularizer: MMLURegularizer | None,
        reference,
        on_policy: OnPolicyBatches | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.config = config
        self.regularizer = regularizer
        self.reference = reference
        self.on_policy = on_policy  # samples the policy's own replies each step (None: offline)
        self.beta = config.resolved_beta()
        self.loss_log: list[float] = []
        self.pending_logs: dict[str, float] = {}  # the evaluation callback's figures, logged with the loss
        self._micro = (-1, 0)  # (global step, micro-step within it): picks the regulariser batch

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """The Trainer's log, with the latest evaluation's figures (eval/bias_shift, ...) added once.

        The callback cannot log itself: a log from `on_step_end` would cancel the step's loss log.
        """
        logs = {**logs, **self.pending_logs}
        self.pending_logs.clear()
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return EpochShuffleSampler(len(dataset), self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        micro = self._next_micro() if model.training else None
        if self.on_policy is not None and micro is not None:
            inputs = self._on_policy_inputs(model, inputs, micro)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        rows = input_ids.shape[0]
        needed = inputs["answer_mask"].bool()  # [R, T-1]: positions whose next token is an answer token
        reg_batch = self._regularizer_batch(input_ids.device, micro)
        if reg_batch is not None:  # one forward for pairs and regulariser: DDP wants one forward per backward
            reg_ids, reg_attention, reg_answer = reg_batch
            reg_scored = (reg_answer if self.regularizer.kind == "nll" else reg_attention[:, 1:]).bool()
            width = max(input_ids.shape[1], reg_ids.shape[1])
            pad = self.regularizer.pad_id
            input_ids = torch.cat([pad_width(input_ids, width, pad), pad_width(reg_ids, width, pad)])
            attention_mask = torch.cat(
                [pad_width(attention_mask, width, 0), pad_width(reg_attention, width, 0)]
            )
            needed = torch.cat([pad_width(needed, width - 1, False), pad_width(reg_scored, width - 1, False)])
        logps, logits = answer_token_logps(model, input_ids, attention_mask, needed)
        loss = self._objective(logps[:rows], needed[:rows], logits, inputs)
        if reg_batch is not None:
            if self.regularizer.kind == "nll":
                reg_loss = -sequence_logps(logps[rows:], needed[rows:], normalize=True).mean()
            else:
                with torch.no_grad():
                    keep = keep_mask(reg_scored)
                    base = self.reference(
                        input_ids=reg_ids, attention_mask=reg_attention, logits_to_keep=keep
                    )
                reg_loss = kl_per_position(base.logits, logits[int(needed[:rows].sum()) :]).mean()
            loss = loss + self.config.reg_weight * reg_loss
        self.loss_log.append(float(loss.detach()))
        return (loss, {"logits": logits}) if return_outputs else loss

    def _objective(self, logps, needed, logits, inputs) -> torch.Tensor:
        """The batch's own loss: the pair objective under CVaR, or distillation's reverse KL."""
        if self.config.loss == DISTILL:  # KL(student || teacher) at every sampled token
            return kl_per_position(logits[: int(needed.sum())], inputs["teacher_logits"]).mean()
        pairs = logps.shape[0] // 2
        target, opposite = logps[:pairs], logps[pairs:]
        target_mask, opposite_mask = needed[:pairs], needed[pairs:]
        mean_t = sequence_logps(target, target_mask, normalize=True)
        mean_o = sequence_logps(opposite, opposite_mask, normalize=True)
        per_pair = self._pair_loss(target, target_mask, opposite, opposite_mask, mean_t, mean_o, inputs)
        alpha = cvar_alpha_at(self.state.global_step, self.config.cvar_alpha, self.config.cvar_warmup)
        return cvar_mean(per_pair, mean_t - mean_o, alpha)

    def _on_policy_inputs(self, model, inputs, micro: int) -> dict[str, Any]:
        """The batch's questions answered by the policy itself (training/onpolicy.py); the written pairs
        when no sample pair could be made this step."""
        indices = inputs["index"].tolist()
        if self.config.loss == DISTILL:
            batch = self.on_policy.distill_batch(model, self.reference, indices, micro)
        else:
            batch = self.on_policy.preference_batch(model, self.reference, indices, micro)
        if batch is None:
            return inputs
        return {name: value.to(inputs["input_ids"].device) for name, value in batch.items()}

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

    def _next_micro(self) -> int:
        """This training micro-step's index over the run (step x accumulation + micro-step): what
        picks the regulariser batch and seeds the on-policy samples, the same after a resume."""
        step, micro = self._micro
        micro = micro + 1 if step == self.state.global_step else 0
        self._micro = (self.state.global_step, micro)
        return self.state.global_step * self.args.gradient_accumulation_steps + micro

    def _regularizer_batch(self, device, micro: int | None):
        if self.regularizer is None or micro is None:
            return None
        return self.regularizer.batch(micro, device)


class ReferenceLogps(TrainerCallback):
    """Puts the DPO/IPO reference log-probs into the training pairs when training begins, once.

    Not before: the Trainer wraps the policy only inside `train()`, and under FSDP and ZeRO-3 a LoRA
    base, loaded on the host or partitioned, runs on the device only once it is sharded there. Every
    batch is drawn after `on_train_begin`, so every one carries them. The reference is frozen (a copy
    of the base, or the base with its adapter disabled), so a resumed run gets the figures the run
    it continues had.
    """

    def __init__(self, pairs: PairDataset, compute: Callable[[], torch.Tensor]) -> None:
        self.pairs = pairs
        self.compute = compute
        self.seconds = 0.0  # not training time: pairs per second leaves it out, as it does evaluations

    def on_train_begin(self, args, state, control, **kwargs):
        started = time.monotonic()
        self.pairs.reference = self.compute()
        self.seconds = time.monotonic() - started


@torch.no_grad()
def reference_logps(reference, examples, tokenizer, config: TrainConfig) -> torch.Tensor:
    """Summed answer log-probs of the frozen base for every training pair, once: [N, 2] (target, opposite)."""
    device = next(reference.parameters()).device
    rows: list[torch.Tensor] = []
    for start in range(0, len(examples), config.eval_batch_size):
        chunk = examples[start : start + config.eval_batch_size]
        seqs = [(e.target_ids, e.target_prompt) for e in chunk] + [
            (e.opposite_ids, e.opposite_prompt) for e in chunk
        ]
        ids, mask, answer = (t.to(device) for t in pad_sequences(seqs, padding_id(tokenizer)))
        logps, _ = answer_token_logps(reference, ids, mask, answer.bool())
        sums = sequence_logps(logps, answer, normalize=False).float().cpu()
        rows.append(torch.stack([sums[: len(chunk)], sums[len(chunk) :]], dim=1))
    return torch.cat(rows)


def training_args(config: TrainConfig, out: Path, device: torch.device, use_lora: bool) -> TrainingArguments:
    from autocustom.runtime import resolve_dtype

    on_cuda = device.type == "cuda"
    compute = resolve_dtype(device, config.dtype)
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.resolved_lr(use_lora),
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        lr_scheduler_type="constant",  # the stop comes from early stopping, not from a schedule's end
        save_strategy="steps",
        save_steps=config.save_steps or config.eval_steps,
        save_total_limit=2,
        logging_strategy="no" if config.report_to == "none" else "steps",
        logging_steps=1,
        report_to=config.report_to,
        seed=config.seed,
        bf16=on_cuda and compute == torch.bfloat16,
        fp16=on_cuda and compute == torch.float16,
        activation_checkpointing=config.gradient_checkpointing,
        # non-reentrant: gradients reach LoRA adapters even though the frozen embeddings take none
        activation_checkpointing_kwargs={"use_reentrant": False},
        use_cpu=not on_cuda,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def build_trainer(
    config: TrainConfig,
    args: TrainingArguments,
    setup: Setup,
    out: Path,
    is_writer: bool,
    progress: ProgressCallback,
) -> tuple[PairTrainer, EvalCallback]:
    plan, reference = setup.validation_plan, setup.reference
    callback = EvalCallback(
        lambda model: measure(model, reference, plan, tokenizer=setup.tokenizer),
        eval_steps=config.eval_steps,
        patience=config.patience,
        max_mmlu_drop=config.max_mmlu_drop,
        max_drift=config.max_drift,
        max_fluency_drop=config.max_fluency_drop,
        run_dir=out,
        is_writer=is_writer,
        progress=progress,
    )
    pairs = PairDataset(setup.examples)
    callbacks: list[TrainerCallback] = []
    if config.loss in ("dpo", "ipo"):  # first: the checkpoint policy's clock starts after it
        compute = partial(reference_logps, reference.model, setup.examples, setup.tokenizer, config)
        callbacks.append(ReferenceLogps(pairs, compute))
    callbacks += [callback, CheckpointPolicy(_checkpoint_seconds(config, args.world_size))]
    trainer = PairTrainer(
        model=setup.model,
        args=args,
        train_dataset=pairs,
        data_collator=PairCollator(padding_id(setup.tokenizer)),
        callbacks=callbacks,
        config=config,
        regularizer=setup.regularizer,
        reference=reference.model,
        on_policy=setup.on_policy,
    )
    # every rank saves: gathering sharded weights (FSDP, ZeRO-3) is a collective; rank 0 writes
    callback.save_best = lambda _model, _step: save_best(trainer, setup.tokenizer, out, config.model)
    trainer.remove_callback(
        PrinterCallback
    )  # with tqdm off, Trainer prints its logs to stdout; we never print
    callback.loss_log = trainer.loss_log
    callback.pending_logs = trainer.pending_logs
    _log_to(trainer, out / TRAIN_LOGS)
    return trainer, callback


def _checkpoint_seconds(config: TrainConfig, processes: int) -> float | None:
    """The default checkpoint policy's interval; None (every save step) for --save-steps or DDP.

    Ranks decide by their own clocks, and a checkpoint some ranks write and others skip would hang
    the collective inside it, so a multi-process run checkpoints by steps alone.
    """
    return None if config.save_steps or processes > 1 else CHECKPOINT_MINUTES * 60


def _log_to(trainer: Trainer, folder: Path) -> None:
    """TensorBoard's events go to OUT/logs (its default is under checkpoints/, deleted after the run)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(folder)
