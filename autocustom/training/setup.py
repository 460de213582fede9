"""A run's setup, checked and loaded once: the dataset, the device, the policy and its reference,
the encoded pairs, the regulariser, the on-policy sampler and the evaluation plans (`prepare`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autocustom.axis import Poles
from autocustom.data.io import Dataset, load_dataset_dir
from autocustom.errors import DataError, UsageError
from autocustom.layout import split_file
from autocustom.llm.models import AdapterDisabled, load_model
from autocustom.progress import ProgressCallback, ProgressEvent
from autocustom.scoring.measure import Reference
from autocustom.scoring.plan import EvalPlan
from autocustom.training.config import TrainConfig
from autocustom.training.data import EncodedRun, nested_subset
from autocustom.training.onpolicy import OnPolicyBatches, Sampling
from autocustom.training.plans import reply_judge, selection_plan, training_plan
from autocustom.training.regularizer import MMLURegularizer
from autocustom.training.sharding import (
    launched_sharding,
    numel,
    partitioned,
    partitioned_engine,
    shard_frozen,
)


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
    poles: Poles  # the target pole and its opposite, checked once (EncodedRun)
    examples: list
    regularizer: MMLURegularizer | None
    validation_plan: EvalPlan
    final_plan: EvalPlan  # the test split (or validation without one), measured on the kept model
    on_policy: OnPolicyBatches | None = None  # --on-policy and distill: the policy's own samples


def device_for(config: TrainConfig, distributed) -> torch.device:
    """Where this process computes: its launched device, or --device for one process."""
    from autocustom.runtime import resolve_device

    _check_processes(config, distributed.num_processes)
    return distributed.device if distributed.num_processes > 1 else resolve_device(config.device)


def _check_processes(config: TrainConfig, processes: int) -> None:
    if config.samples_replies and processes > 1:
        raise UsageError(
            "--on-policy and --loss distill run on one process: sampling is not sharded yet",
            "launch without accelerate (one GPU), or train offline with --loss dpo",
        )


def training_data(config: TrainConfig) -> Dataset:
    dataset = load_dataset_dir(config.data)
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


def prepare(
    config: TrainConfig,
    dataset: Dataset,
    device: torch.device,
    use_lora: bool,
    run: EncodedRun,
    progress: ProgressCallback,
) -> Setup:
    """Load the policy once; under LoRA its base with the adapter disabled is the reference (no copy).
    `run`: the tokenizer and train pairs the memory plan already encoded."""
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
    dtype = compute if use_lora else torch.float32
    loaded = load_model(config.model, device=load_on, dtype=dtype, options=config, tokenizer=run.tokenizer)
    tokenizer = run.tokenizer
    n_params = sum(numel(p) for p in loaded.model.parameters())  # before LoRA adds its own
    if use_lora:
        model = with_lora(loaded.model, config)
        base: Any = AdapterDisabled(model)
    else:
        model = loaded.model
        # without autocast (CPU) the policy computes in float32, so its reference must too
        reference_dtype = compute if device.type == "cuda" else torch.float32
        base = load_model(
            config.model, device=load_on, dtype=reference_dtype, options=config, tokenizer=tokenizer
        ).model
        base.requires_grad_(False)
        if fsdp:
            shard_frozen(base, device)
        elif partitioned(base):
            base = partitioned_engine(base)
    progress(ProgressEvent("load model", 1, 1, config.model))
    final_split = "test" if dataset.splits.get("test") else "validation"
    return Setup(
        device=device,
        tokenizer=tokenizer,
        model=model,
        reference=Reference(base, tokenizer, reply_judge(config, dataset)),
        compute_dtype=compute,
        use_lora=use_lora,
        n_params=n_params,
        poles=run.poles,
        examples=run.examples,
        regularizer=_regularizer(config, tokenizer),
        validation_plan=selection_plan(config, dataset, device.type),
        final_plan=training_plan(config, dataset, final_split, device.type),
        on_policy=_on_policy(config, dataset, run),
    )


def with_lora(model, config: TrainConfig):
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


def _regularizer(config: TrainConfig, tokenizer) -> MMLURegularizer | None:
    if config.reg_weight <= 0:
        return None
    from autocustom.scoring.mmlu import regularizer_pool

    pool = regularizer_pool(config.reg_subjects, seed=config.seed)
    return MMLURegularizer(tokenizer, pool, config.reg, config.reg_batch_size, config.reg_max_tokens)


def _on_policy(config: TrainConfig, dataset: Dataset, run: EncodedRun) -> OnPolicyBatches | None:
    if not config.samples_replies:
        return None
    sampling = Sampling(config.samples, config.sample_temperature, config.sample_tokens, config.seed)
    return OnPolicyBatches(
        run.tokenizer,
        dataset.splits["train"],
        run.poles,
        reply_judge(config, dataset),
        sampling,
        max_length=config.max_length,
        eval_batch_size=config.eval_batch_size,
    )
