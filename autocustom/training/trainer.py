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

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from autocustom.data.io import Dataset, load_dataset_dir
from autocustom.errors import DataError, OutputExistsError, UsageError
from autocustom.fileio import read_json
from autocustom.layout import (
    CHECKPOINTS,
    RUN_CONFIG,
    RUN_MODEL,
    TRAIN_LOGS,
    read_summary,
    split_file,
    truncate_metrics,
    write_run_config,
    write_summary,
)
from autocustom.llm.models import AdapterDisabled, load_model
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.contrast import ContrastJudge
from autocustom.scoring.judge import CONTRAST, JudgeOptions
from autocustom.scoring.measure import Reference, measure
from autocustom.scoring.plan import EvalPlan, make_plan
from autocustom.scoring.stats import Estimate, estimate_from
from autocustom.tensors import answer_token_logps, keep_mask, kl_per_position, pad_width, padding_id
from autocustom.training.callbacks import CheckpointPolicy, EvalCallback, plain_estimate
from autocustom.training.config import CHECKPOINT_MINUTES, DISTILL, TrainConfig
from autocustom.training.data import (
    EpochShuffleSampler,
    PairCollator,
    PairDataset,
    encode_pairs,
    nested_subset,
    pad_sequences,
)
from autocustom.training.losses import (
    contrastive_loss,
    cvar_alpha_at,
    cvar_mean,
    dpo_loss,
    ipo_loss,
    sequence_logps,
    simpo_loss,
)
from autocustom.training.memory import MemoryPlan, launched_sharding
from autocustom.training.onpolicy import OnPolicyBatches, Sampling
from autocustom.training.regularizer import MMLURegularizer

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "autocustom.train-summary/2"  # 2: final figures measured on the kept model; plans recorded
REPLY_FIGURES = (
    "reply_share",
    "base_reply_share",
    "reply_shift",
    "fluency_vs_prompted",
    "repetition",
    "judge_accuracy",
)
ESTIMATES = ("bias_shift", "bias_shift_test", "mmlu_before", "mmlu_after", "mmlu_delta_points", "drift")


@dataclass
class TrainResult:
    """What a run achieved; `to_dict()` is summary.json."""

    run_dir: str
    best_step: int | None
    bias_shift: Estimate | None  # validation, at the kept step
    bias_shift_test: Estimate | None  # held-out test subareas, kept model (None without a test split)
    mmlu_before: Estimate | None  # the base model, on the final plan's MMLU questions
    mmlu_after: Estimate | None  # the kept model, same questions
    mmlu_delta_points: Estimate | None  # paired, after - before, accuracy points
    drift: Estimate | None  # the kept model against the base
    stop_reason: str
    steps: int
    wall_seconds: float
    pairs_per_second: float
    mmlu_questions: int
    drift_texts: int
    improved: bool = False  # the kept checkpoint beat the base on validation (see `improved`)
    selection: str = ""  # one plain line on how far the kept checkpoint can be trusted
    plans: dict[str, Any] = field(default_factory=dict)  # EvalPlan.describe() of validation and final
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"schema": SUMMARY_SCHEMA, **asdict(self)}
        for key in ESTIMATES:
            value = getattr(self, key)
            data[key] = value.to_dict() if value is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        values = {k: v for k, v in data.items() if k != "schema"}
        for key in ESTIMATES:
            values[key] = estimate_from(values.get(key))
        return cls(**values)


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


@dataclass
class Setup:
    """Everything a run needs once its inputs are checked: loaded models, encoded data, the plans."""

    device: torch.device
    tokenizer: Any
    model: Any  # the policy (peft-wrapped under LoRA)
    reference: Reference  # the base, for the DPO reference, the KL regulariser and measurements
    compute_dtype: torch.dtype
    use_lora: bool
    n_params: int
    examples: list
    regularizer: MMLURegularizer | None
    validation_plan: EvalPlan
    final_plan: EvalPlan  # the test split (or validation without one), measured on the kept model
    on_policy: OnPolicyBatches | None = None  # --on-policy and distill: the policy's own samples


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
    finished = _finished_run(config, out)
    if finished is not None:
        return finished
    dataset = _training_data(config)
    device = _device(config, distributed)
    config.check_loading(device)
    memory = _check_memory(config, dataset, device)
    config = replace(
        config, gradient_checkpointing=memory.options["gradient_checkpointing"]
    )  # auto, resolved
    distributed.wait_for_everyone()  # every rank has checked --out before rank 0 writes into it
    started = time.monotonic()
    use_lora = memory.options["lora"]
    # before any model loads: under ZeRO-3 the arguments register DeepSpeed's config with transformers,
    # which then builds each model partitioned (deepspeed.zero.Init) instead of whole on every rank
    args = _training_args(config, out, device, use_lora)
    setup = _setup(config, dataset, device, use_lora, progress)
    checkpoint = _last_checkpoint(out / CHECKPOINTS) if config.resume else None
    if distributed.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out, _resolved(config, dataset, setup, distributed.num_processes))
        truncate_metrics(out, _checkpoint_step(checkpoint) if checkpoint else 0)
    distributed.wait_for_everyone()
    trainer, callback = _trainer(config, args, setup, out, distributed.is_main_process, progress)
    if checkpoint is not None:
        callback.restore(_callback_state(checkpoint))
        log.info("resuming from %s", checkpoint)
    train_started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    log.info("training done: %s", output.metrics)
    # no evaluation passed the guardrails: keep the last model (before release: ZeRO-3 gathers via its engine)
    if callback.best_step is None:
        _save_best(trainer, setup.tokenizer, out, config.model)
    if not _partitioned(setup.model):  # ZeRO-3's engine, released, would take its forward hooks with it
        _release_optimizer(trainer)
    trained_seconds = time.monotonic() - train_started - callback.eval_seconds - _reference_seconds(trainer)
    steps = trainer.state.global_step
    new_steps = steps - (_checkpoint_step(checkpoint) if checkpoint else 0)
    trained_pairs = new_steps * config.batch_size * config.grad_accum * trainer.args.world_size
    result = _result(config, setup, callback, out, steps, _sharded_as(trainer, distributed.num_processes))
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


def _finished_run(config: TrainConfig, out: Path) -> TrainResult | None:
    """A finished run's result under --resume; refuses an occupied --out otherwise."""
    summary = read_summary(out) if config.resume else None
    if summary is not None:
        log.info("%s is finished; returning its summary", out)
        return TrainResult.from_dict(summary)
    if not config.resume and out.exists() and any(out.iterdir()):
        what = "holds another run" if (out / RUN_CONFIG).is_file() else "is not empty"
        raise OutputExistsError(
            f"output directory {out} {what}", "pass --resume to continue it, or a new --out"
        )
    return None


def _device(config: TrainConfig, distributed) -> torch.device:
    """Where this process computes: its launched device, or --device for one process."""
    from autocustom.runtime import resolve_device

    _check_processes(config, distributed.num_processes)
    return distributed.device if distributed.num_processes > 1 else resolve_device(config.device)


def memory_plan(config: TrainConfig) -> MemoryPlan:
    """`train --dry-run`: the memory plan of `config` on its dataset and this device; loads no weights."""
    from accelerate import PartialState

    from autocustom.training.memory import plan_training

    config.validate()
    dataset = _training_data(config)
    device = _device(config, PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available()))
    config.check_loading(device)
    return plan_training(config, dataset, device)


def _check_memory(config: TrainConfig, dataset: Dataset, device: torch.device) -> MemoryPlan:
    """Refuse, before any weight is loaded, a run whose memory plan (per process) does not fit the device."""
    from autocustom.training.memory import plan_training

    plan = plan_training(config, dataset, device)
    log.info("memory plan:\n%s", plan.table())
    if plan.fits is False:
        fixes = plan.options.get("would_fit") or []
        raise MemoryPlanError(
            f"this run needs about {plan.total / 2**30:.1f} GiB and {device} has "
            f"{plan.available / 2**30:.1f} GiB (train --dry-run shows the plan by part)",
            f"pass {' or '.join(fixes)}" if fixes else "use a smaller model or a larger device",
        )
    return plan


def _check_processes(config: TrainConfig, processes: int) -> None:
    if config.samples_replies and processes > 1:
        raise UsageError(
            "--on-policy and --loss distill run on one process: sampling is not sharded yet",
            "launch without accelerate (one GPU), or train offline with --loss dpo",
        )


def _sharded_as(trainer: Trainer, processes: int) -> str | None:
    """How the Trainer really sharded the model ("fsdp", "deepspeed"), None when it did not.

    A launch can ask for FSDP and get DDP: accelerate enables FSDP for GPU processes only, silently.
    """
    sharding = "fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled else None
    launched = launched_sharding()
    if launched is not None and sharding is None and processes > 1:
        log.warning("the launch asked for %s, but accelerate ran the processes unsharded", launched.strategy)
    return sharding


def _reference_seconds(trainer: Trainer) -> float:
    """The time this run spent computing reference log-probs (`ReferenceLogps`): not training time."""
    return sum(c.seconds for c in trainer.callback_handler.callbacks if isinstance(c, ReferenceLogps))


def _release_optimizer(trainer: Trainer) -> None:
    """Free the optimizer state before the final measurement: the kept model is measured without it."""
    trainer.accelerator.free_memory()
    trainer.optimizer = trainer.lr_scheduler = None


def _training_data(config: TrainConfig) -> Dataset:
    dataset = load_dataset_dir(config.data)
    dataset.axis.opposite(config.toward)  # AxisError (exit 2) when --toward is not a pole
    for split in ("train", "validation"):
        if not dataset.splits.get(split):
            raise DataError(Path(config.data) / split_file(split), "has no pairs", "regenerate the dataset")
    if config.train_pairs is not None:
        train = dataset.splits["train"]
        if config.train_pairs > len(train):
            raise UsageError(
                f"--train-pairs {config.train_pairs} is more than the {len(train)} train pairs of {config.data}",
                f"pass at most --train-pairs {len(train)}",
            )
        dataset.splits["train"] = nested_subset(train, config.train_pairs, config.seed)
    return dataset


def _setup(
    config: TrainConfig, dataset: Dataset, device: torch.device, use_lora: bool, progress: ProgressCallback
) -> Setup:
    """Load the policy once; under LoRA its base with the adapter disabled is the reference (no copy)."""
    from autocustom.runtime import limit_heap_growth, resolve_dtype, seed_everything

    limit_heap_growth(device)
    seed_everything(config.seed)
    compute = resolve_dtype(device, config.dtype)
    sharding = launched_sharding()
    # under FSDP models load whole in host RAM: fully_shard moves only each rank's shard to its device.
    # Under ZeRO-3 they are built partitioned (the Trainer's arguments registered DeepSpeed's config).
    fsdp = sharding is not None and sharding.loads_for(config.quantized) == "host"
    load_on = torch.device("cpu") if fsdp else device
    progress(ProgressEvent("load model", 0, 1, config.model))
    # full fine-tuning keeps float32 master weights (bf16 autocast on CUDA): AdamW's small steps vanish in bf16
    loaded = load_model(
        config.model, device=load_on, dtype=compute if use_lora else torch.float32, options=config
    )
    tokenizer = loaded.tokenizer
    n_params = sum(_numel(p) for p in loaded.model.parameters())  # before LoRA adds its own
    if use_lora:
        model = _with_lora(loaded.model, config)
        base: Any = AdapterDisabled(model)
    else:
        model = loaded.model
        # without autocast (CPU) the policy computes in float32, so its reference must too
        reference_dtype = compute if device.type == "cuda" else torch.float32
        base = load_model(config.model, device=load_on, dtype=reference_dtype, options=config).model
        base.requires_grad_(False)
        if fsdp:
            _shard_frozen(base, device)
        elif _partitioned(base):
            base = _partitioned_engine(base)
    progress(ProgressEvent("load model", 1, 1, config.model))
    opposite = dataset.axis.opposite(config.toward)
    examples = encode_pairs(tokenizer, dataset.splits["train"], config.toward, opposite, config.max_length)
    final_split = "test" if dataset.splits.get("test") else "validation"
    return Setup(
        device=device,
        tokenizer=tokenizer,
        model=model,
        reference=Reference(base, tokenizer, _reply_judge(config, dataset)),
        compute_dtype=compute,
        use_lora=use_lora,
        n_params=n_params,
        examples=examples,
        regularizer=_regularizer(config, tokenizer),
        validation_plan=selection_plan(config, dataset, device.type),
        final_plan=training_plan(config, dataset, final_split, device.type),
        on_policy=_on_policy(config, dataset, tokenizer),
    )


def _shard_frozen(model, device: torch.device) -> None:
    """FSDP2-shard the frozen reference over every process, as accelerate wraps the policy.

    One unit per decoder layer (the launch's `fsdp_transformer_layer_cls_to_wrap`, else the model's
    `_no_split_modules`, as accelerate chooses), then the root; each rank keeps 1/N of it on `device`.
    Every call of it is then a collective, and every rank makes each one: all compute the same DPO
    reference log-probs and evaluate the same items, and the KL regulariser calls it once per
    micro-step on each.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    layers = set(named.split(",") if named else getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _numel(parameter: torch.Tensor) -> int:
    """A parameter's element count, also when ZeRO-3 has partitioned it (its own tensor is then empty)."""
    return getattr(parameter, "ds_numel", parameter.numel())


def _partitioned(model) -> bool:
    """ZeRO-3 has partitioned the model's parameters (built under deepspeed.zero.Init, or by an engine)."""
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def _partitioned_engine(model):
    """The frozen ZeRO-3-partitioned reference inside a DeepSpeed engine of its own, without an optimizer.

    A partitioned model runs only with an engine's hooks, which gather each layer's weights for its
    forward pass; TRL's `prepare_deepspeed` runs its reference the same way. The engine partitions as
    the policy's does (the config the Trainer registered); DeepSpeed's defaults replace "auto" values,
    which the Trainer would fill for the policy's engine only. Every call of it is a collective, as
    under FSDP (see `_shard_frozen`).
    """
    import deepspeed
    from transformers.integrations.deepspeed import deepspeed_config

    registered = deepspeed_config()
    zero = {key: value for key, value in registered["zero_optimization"].items() if value != "auto"}
    dtype = next(model.parameters()).dtype
    config = {
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "train_micro_batch_size_per_gpu": 1,  # required by DeepSpeed, unused: this engine never steps
    }
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def training_plan(
    config: TrainConfig, dataset: Dataset, split: str, device_type: str, **measured: bool
) -> EvalPlan:
    """What `train` measures on `split`: the plan `shift-score` makes for the same split and sizes
    (with `--judge contrast` when a fluency budget asks for the replies).

    `measured` (mmlu=False, drift=False) leaves those figures out, as `make_plan` does.
    """
    judged = config.reads_replies
    return make_plan(
        dataset,
        split,
        config.toward,
        device_type=device_type,
        mmlu_questions=config.mmlu_questions,
        drift_texts=config.drift_texts,
        batch_size=config.eval_batch_size,
        judge=REPLY_JUDGE.judge_label if judged else None,
        check_split=REPLY_JUDGE.check_split if judged else None,
        **measured,
    )


# the judge of a run's own replies (a fluency budget, on-policy training): the base told each pole,
# validated on the validation split
REPLY_JUDGE = JudgeOptions(judge=CONTRAST)


def _reply_judge(config: TrainConfig, dataset: Dataset) -> ContrastJudge | None:
    """The contrast judge when the run reads its own replies (the base of the run reads them)."""
    if not config.reads_replies:
        return None
    return ContrastJudge(dataset.axis, REPLY_JUDGE.judge_label)


def _on_policy(config: TrainConfig, dataset: Dataset, tokenizer) -> OnPolicyBatches | None:
    if not config.samples_replies:
        return None
    sampling = Sampling(config.samples, config.sample_temperature, config.sample_tokens, config.seed)
    return OnPolicyBatches(
        tokenizer,
        dataset.splits["train"],
        config.toward,
        _reply_judge(config, dataset),
        sampling,
        max_length=config.max_length,
        eval_batch_size=config.eval_batch_size,
    )


def selection_plan(config: TrainConfig, dataset: Dataset, device_type: str) -> EvalPlan:
    """What every evaluation during training measures: what picking the checkpoint and stopping read.

    Validation BiasShift always (it picks the kept checkpoint); MMLU and Drift only when a guardrail
    (--max-mmlu-drop, --max-drift) reads them. They cost most of an evaluation (60 MMLU questions and
    32 texts against ~10 pairs on CPU) and the kept model is measured on all of them once, at the end.
    """
    return training_plan(
        config,
        dataset,
        "validation",
        device_type,
        mmlu=config.max_mmlu_drop is not None,
        drift=config.max_drift is not None,
    )


def _regularizer(config: TrainConfig, tokenizer) -> MMLURegularizer | None:
    if config.reg_weight <= 0:
        return None
    from autocustom.scoring.mmlu import regularizer_pool

    pool = regularizer_pool(config.reg_subjects, seed=config.seed)
    return MMLURegularizer(tokenizer, pool, config.reg, config.reg_batch_size, config.reg_max_tokens)


def _resolved(config: TrainConfig, dataset: Dataset, setup: Setup, processes: int) -> dict[str, Any]:
    """run_config.json: the config with every default resolved, and what the run found."""
    return {
        **config.to_dict(),
        "axis": dataset.axis.label,
        "opposite": dataset.axis.opposite(config.toward),
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


def _training_args(config: TrainConfig, out: Path, device: torch.device, use_lora: bool) -> TrainingArguments:
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


def _trainer(
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
        compute = partial(_reference_logps, reference.model, setup.examples, setup.tokenizer, config)
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
    callback.save_best = lambda _model, _step: _save_best(trainer, setup.tokenizer, out, config.model)
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


def _with_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.quantized:  # QLoRA: norms to float32, input gradients on, as peft prescribes for k-bit bases
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        target_modules=config.lora_targets or "all-linear",
        lora_dropout=0.0,  # no dropout: a resumed run and a DDP run reproduce the single run exactly
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


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
def _reference_logps(reference, examples, tokenizer, config: TrainConfig) -> torch.Tensor:
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


def _save_best(trainer: Trainer, tokenizer, out: Path, base_reference: str) -> None:
    """Write the whole model (or adapter) + tokenizer to out/model, swapped in so a kill leaves one intact.

    Every rank calls this: under FSDP and ZeRO-3 gathering the weights is a collective. Only rank 0
    writes.
    """
    state_dict = _gathered(trainer)
    if not trainer.accelerator.is_main_process:
        return
    staging = out / f".{RUN_MODEL}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    if hasattr(trainer.model, "peft_config"):
        _save_adapter(trainer.model, state_dict, staging, base_reference)
    else:
        trainer.model.save_pretrained(staging, state_dict=_without_aliases(state_dict, trainer.model))
    tokenizer.save_pretrained(staging)
    target, old = out / RUN_MODEL, out / f".{RUN_MODEL}-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _gathered(trainer: Trainer) -> dict[str, Any]:
    """The model's whole state dict on rank 0 (empty or partial elsewhere), gathered only where sharded.

    FSDP2 gathers through torch's state-dict API, an adapter's trainable weights alone (not a 140 GB
    base for a 70B adapter); FSDP1 and ZeRO-3 through accelerate's `get_state_dict` (ZeRO-3 on the
    engine). Unsharded (one process, DDP, ZeRO-1/2), rank 0 reads its own copy: no gather, no clone.
    """
    model = trainer.model
    if _fully_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        adapter = hasattr(model, "peft_config")
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=adapter)
        return get_model_state_dict(model, options=options)
    if trainer.is_fsdp_enabled or _partitioned(model):
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return model.state_dict() if trainer.accelerator.is_main_process else {}


CHECKPOINT_WRAPPER = "_checkpoint_wrapped_module."  # torch's activation-checkpoint wrapper, in module names


def _state_dict_name(name: str) -> str:
    """A parameter's module name as state dicts spell it: without the checkpoint wrapper's part."""
    return name.replace(CHECKPOINT_WRAPPER, "")


def _save_adapter(model, state_dict: dict[str, Any], folder: Path, base_reference: str) -> None:
    """The adapter's weights and config, in the files and key format PeftModel.save_pretrained writes.

    Not through save_pretrained: peft picks the adapter's entries by module names, which under FSDP's
    activation checkpointing carry the checkpoint wrapper, and a gathered state dict's names do not, so
    peft would save an empty adapter. The config names the base as the user did (offline resolution).
    """
    from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
    from safetensors.torch import save_file

    names = {_state_dict_name(name): name for name, _ in model.named_parameters()}
    as_modules = {names.get(name, name): tensor for name, tensor in state_dict.items()}
    adapter = get_peft_model_state_dict(model, state_dict=as_modules)
    folder.mkdir(parents=True)
    weights = {_state_dict_name(name): tensor.contiguous() for name, tensor in adapter.items()}
    save_file(weights, folder / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})
    config = replace(model.peft_config[model.active_adapter], base_model_name_or_path=base_reference)
    config.inference_mode = True
    config.save_pretrained(str(folder))


def _without_aliases(state_dict: dict[str, Any], model) -> dict[str, Any]:
    """Drop the names of tied parameters (lm_head tied to the embeddings) from a gathered state dict.

    save_pretrained finds ties by shared storage, and a gathered state dict holds separate copies, so
    without this a tied model's file would carry its embedding matrix twice.
    """
    aliases = _tied_aliases(model)
    return {name: tensor for name, tensor in state_dict.items() if name not in aliases}


def _tied_aliases(model) -> set[str]:
    """State-dict names of the parameters that are another's second name (a head tied to the embeddings)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    aliases = every - {name for name, _ in model.named_parameters()}
    return {_state_dict_name(name) for name in aliases}


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
    _wait_for_writer()
    final = measure(
        _kept_model(setup, out), setup.reference, setup.final_plan, tokenizer=setup.tokenizer
    ).metrics
    if setup.final_plan.judge:  # --max-fluency-drop: the kept model's own replies on the final split
        extra["replies"] = {name: plain_estimate(final[name]) for name in REPLY_FIGURES}
    row = callback.best_row
    best = estimate_from(row["bias_shift"]) if row else None
    return TrainResult(
        run_dir=str(out),
        best_step=callback.best_step,
        bias_shift=best,
        bias_shift_test=final["bias_shift"] if setup.final_plan.split == "test" else None,
        mmlu_before=final["mmlu_base_accuracy"],
        mmlu_after=final["mmlu_accuracy"],
        mmlu_delta_points=final["mmlu_delta_points"],
        drift=final["drift"],
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


def _kept_model(setup: Setup, out: Path) -> Any:
    """The saved best model. Under LoRA, FSDP or ZeRO-3 its weights are loaded into the policy, not a
    second model."""
    if _fully_sharded(setup.model):
        _load_into_sharded(setup.model, out / RUN_MODEL, adapter=setup.use_lora)
        return setup.model
    if _partitioned(setup.model):
        _load_into_partitioned(setup.model, out / RUN_MODEL, adapter=setup.use_lora)
        return setup.model
    if setup.use_lora:
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        # read to the host (the adapter is small); loading copies it onto the parameters' own devices
        set_peft_model_state_dict(setup.model, load_peft_weights(str(out / RUN_MODEL), device="cpu"))
        return setup.model
    return load_model(str(out), device=setup.device, dtype=torch.float32).model


def _fully_sharded(model) -> bool:
    """FSDP2 has sharded the policy: no rank holds a whole parameter, loading must scatter."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def _load_into_sharded(model, folder: Path, *, adapter: bool) -> None:
    """Load the saved weights into an FSDP2-sharded policy: rank 0 reads them, every rank takes its shard.

    peft's loader copies whole tensors into sharded ones and drops them as size mismatches (a warning,
    no error), so this goes through torch's distributed state-dict API. A second whole model per rank
    (what the unsharded path loads) is what FSDP is used to avoid.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    state = _kept_state(model, folder, adapter=adapter)
    for module in model.modules():  # FSDP2 leaves the root's parameters gathered after a forward pass
        if isinstance(module, FSDPModule):
            module.reshard()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    result = set_model_state_dict(model, state, options=options)
    _refuse_mismatch(model, folder, result.unexpected_keys, result.missing_keys, adapter=adapter)


def _load_into_partitioned(model, folder: Path, *, adapter: bool) -> None:
    """Load the saved weights into a ZeRO-3-partitioned policy: rank 0 reads them and writes each
    parameter gathered, and DeepSpeed hands every rank its partition back.

    peft's loader sees a partitioned parameter as an empty tensor and fails on the size; a second whole
    model per rank is what ZeRO-3 is used to avoid. The Trainer's engine must still be alive: its hooks
    gather the weights for the measurement's forward passes.
    """
    import deepspeed
    import torch.distributed as dist

    state = _kept_state(model, folder, adapter=adapter)
    names = [sorted(state)]
    dist.broadcast_object_list(names, src=0)  # every rank gathers the same parameters, in one order
    parameters = dict(model.named_parameters())
    _refuse_mismatch(
        model, folder, set(names[0]) - set(parameters), set(parameters) - set(names[0]), adapter=adapter
    )
    for name in names[0]:
        with deepspeed.zero.GatheredParameters([parameters[name]], modifier_rank=0):
            if dist.get_rank() == 0:
                parameters[name].data.copy_(state[name])


def _kept_state(model, folder: Path, *, adapter: bool) -> dict[str, torch.Tensor]:
    """The kept weights under the policy's parameter names, on rank 0 (which alone reads them); {} elsewhere."""
    import torch.distributed as dist
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    if dist.get_rank() != 0:
        return state
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    if adapter:  # the file leaves out the adapter's name ("lora_A.weight"; "lora_A.default.weight" here)
        marker = f".{model.active_adapter}."
        names = {name.replace(marker, "."): name for name in model.state_dict() if marker in name}
        state = {names.get(name, name): tensor for name, tensor in state.items()}
    return state


def _refuse_mismatch(model, folder: Path, unexpected, missing, *, adapter: bool) -> None:
    """Every saved weight must find its parameter, and a whole model must cover every parameter but
    tied aliases (an adapter covers only its own): otherwise the final figures would silently be the
    last step's."""
    missing = set() if adapter else set(missing) - _tied_aliases(model)
    if unexpected or missing:
        raise RuntimeError(
            f"the kept model in {folder} does not match the policy: "
            f"unexpected {sorted(unexpected)[:5]}, missing {sorted(missing)[:5]}"
        )


MIN_SELECTION_PAIRS = 10  # fewer validation pairs than this cannot tell checkpoints apart reliably
NO_SHIFT = 1e-6  # nats/token: below this a BiasShift is float noise (the precision figures agree to)


def improved(best: Estimate | None) -> bool:
    """The kept checkpoint moved the model toward the target on validation by more than float noise."""
    return best is not None and best.value > NO_SHIFT


def selection_line(best: Estimate | None, toward: str, budget: str = "") -> str:
    """How far the kept checkpoint can be trusted, in one line a user reads before the figures;
    `budget` says what the fluency budget ruled out (EvalCallback.budget_note)."""
    return _selection(best, toward) + (f"; {budget}" if budget else "")


def _selection(best: Estimate | None, toward: str) -> str:
    if best is None:
        return "no evaluation passed the guardrails: the last model was kept, not a selected one"
    if not improved(best):
        return (
            f"no evaluated checkpoint moved the model toward {toward} on validation (best BiasShift {best}): "
            "the kept model is not better than the base"
        )
    if best.low <= 0:
        return (
            f"the kept checkpoint's validation BiasShift {best} does not exclude 0: it may not beat the base"
            + (
                f"; {best.n} validation pairs are too few to select on"
                if best.n < MIN_SELECTION_PAIRS
                else ""
            )
        )
    return f"the kept checkpoint beat the base on validation: BiasShift {best}"


def _wait_for_writer() -> None:
    """Every rank reads the kept model only after rank 0 has written it."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _last_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=_checkpoint_step) if found else None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def _callback_state(checkpoint: Path) -> dict[str, Any]:
    state = read_json(checkpoint / "trainer_state.json").get("stateful_callbacks", {})
    return state.get(EvalCallback.__name__, {}).get("attributes", {})


__all__ = ["PairTrainer", "TrainConfig", "TrainResult", "train"]
