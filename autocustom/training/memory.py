"""The memory a training run needs, planned from the model's config before any weight is loaded.

`plan_memory` instantiates the model on the meta device (accelerate's `init_empty_weights`: shapes, no
storage), so it knows the exact parameter count, which linear layers LoRA adapts and which weights
4-bit loading quantizes, for any architecture transformers can build from a config. The parts:

  weights      the policy (float32 under full fine-tuning; under LoRA the frozen base in the compute
               dtype, or its linear layers in 4-bit/8-bit and the rest in float32, plus float32 adapters)
  gradients    float32, trainable parameters only
  optimizer    AdamW's two float32 moments per trainable parameter
  reference    a frozen copy in the compute dtype under full fine-tuning; none under LoRA (the base with
               the adapter disabled is the reference)
  activations  what one micro-step keeps for its backward pass: per layer and token, the tensors a
               Llama-style block saves (ACTIVATION_WIDTHS), or only each layer's input under gradient
               checkpointing; plus the scored positions' logits
  evaluation   what a measurement's largest transient (Drift holds both models' logits for its
               largest batch of texts) needs beyond the training step's activations (never both at once)
  runtime      the process itself: Python, torch and the tokenizer on CPU; the CUDA context on a GPU
  buffers      under ZeRO-3, DeepSpeed's own: its gradient bucket (`reduce_bucket_size` elements in the
               compute dtype, allocated whole at start; 5e8 unless a DeepSpeed JSON says otherwise),
               the model's own 1/N partition in the compute dtype beside the float32 master copy, and
               the parameters it keeps gathered between uses (`stage3_max_live_parameters`, 1e9 by
               default: the whole of a smaller model; at least one layer)
  loading      under FSDP or DeepSpeed (`Sharding`), what loading needs beyond the sharded run: each
               process keeps 1/N of the sharded parts, but under ZeRO-1/2 the models (and anywhere a
               4-bit or 8-bit base) first load whole on the device; under FSDP they load whole on the
               host (not counted on a GPU: `fully_shard` moves only each rank's shard there), and
               under ZeRO-3 they are built partitioned (`deepspeed.zero.Init`), never whole

The activation and runtime constants were measured on this project's runs and the plan checked against
measured peaks (docs/training.md, "Memory"; benchmarks/bench_memory.py prints both side by side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from autocustom.errors import UsageError
from autocustom.training.config import DISTILL
from autocustom.training.data import EncodedRun, encode_run
from autocustom.training.sharding import Sharding, launched_sharding

GIB = 2**30
ADAM_STATES = 2  # AdamW keeps exp_avg and exp_avg_sq, float32, per trainable parameter
LOGIT_COPIES = 3  # scored positions' logits, their log-softmax and its gradient, float32
# Saved tensors of one decoder layer per token, in units of (hidden, attention width, intermediate):
# both norms' inputs and outputs (4 hidden), q/k/v after RoPE, the attention output and o_proj's input
# (5 attention widths, k/v counted after GQA's repeat), and the MLP's gate, its SiLU, up and product (4).
ACTIVATION_WIDTHS = (4, 5, 4)
RUNTIME_BYTES = {"cpu": int(0.9 * GIB), "cuda": int(1.0 * GIB)}  # measured: process / CUDA context
FOUR_BIT_BYTES = 0.5 + 0.127 / 8  # NF4 plus double-quantized constants, bytes per quantized weight
KL_TEMPORARIES = 5  # float32 [positions, vocab] tensors of one KL(base || tuned) computation


@dataclass(frozen=True)
class ModelShape:
    """What the memory plan reads from a model's config."""

    parameters: int
    quantizable: int  # weights of the linear layers inside the blocks (4-bit/8-bit loading packs these)
    lora_parameters: int  # adapter parameters at the run's rank and targets
    layers: int
    hidden: int
    attention_width: int  # heads x head_dim
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Workload:
    """How much one micro-step and one evaluation process (rows, tokens)."""

    rows: int  # sequences per micro-step: 2 x pairs, plus the regulariser's rows
    width: int  # padded tokens per row
    scored: int  # positions whose logits are computed in one micro-step
    eval_positions: int  # scored positions of Drift's largest batch (its texts' continuation tokens)
    sampled_rows: int = 0  # on-policy: sequences one micro-step samples at once
    sampled_width: int = 0  # their tokens each: prompt and sampled reply (the KV cache's length)


@dataclass
class MemoryPlan:
    """Expected peak memory by part (bytes), and whether it fits the device."""

    parts: dict[str, int]
    device: str
    available: int | None  # bytes the device can give, None when unknown
    options: dict[str, Any]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if self.available is None else self.total <= self.available

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts_gib": {k: round(v / GIB, 3) for k, v in self.parts.items()},
            "total_gib": round(self.total / GIB, 3),
            "device": self.device,
            "available_gib": None if self.available is None else round(self.available / GIB, 3),
            "fits": self.fits,
            "options": self.options,
        }

    def table(self) -> str:
        rows = [f"  {name:<12} {value / GIB:8.2f} GiB" for name, value in self.parts.items()]
        if "sharding" in self.options:
            split = self.options["sharding"]
            rows.insert(0, f"  per process, {split['strategy']} over {split['processes']} processes:")
        rows.append(f"  {'total':<12} {self.total / GIB:8.2f} GiB")
        if self.available is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            rows.append(f"  {self.device}: {self.available / GIB:.2f} GiB available: {verdict}")
        return "\n".join(rows)


def model_shape(config: Any, lora_rank: int = 16, lora_targets: list[str] | None = None) -> ModelShape:
    """Shapes from a transformers config, through a model built on the meta device (no storage)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # a tied head shares the embedding's storage: count it once
    head = model.get_output_embeddings()
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    ]
    adapted = [m for n, m in linears if lora_targets is None or n.rsplit(".", 1)[-1] in lora_targets]
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        quantizable=sum(m.weight.numel() for _, m in linears),
        lora_parameters=sum(lora_rank * (m.in_features + m.out_features) for m in adapted),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        attention_width=heads * head_dim,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        vocab=text.vocab_size,
    )


def plan_memory(
    shape: ModelShape,
    workload: Workload,
    *,
    lora: bool,
    device: str,
    compute_bytes: int,
    quantized_bits: int | None = None,
    checkpointing: bool = True,
    reference: bool = True,
    available: int | None = None,
    sharding: Sharding | None = None,
) -> MemoryPlan:
    """The peak of one process: static parts plus the larger of a training micro-step and an evaluation.

    Under `sharding` the sharded parts are 1/N each, and `loading` adds what the whole models, loaded
    on every rank before sharding, need beyond the sharded run's peak, where they load on the device.
    """
    trainable = shape.lora_parameters if lora else shape.parameters
    activation_bytes = compute_bytes if device == "cuda" else 4  # CPU computes in the weights' dtype
    step = _step_activations(shape, workload, activation_bytes, checkpointing)
    evaluation = _evaluation_transient(shape, workload)
    parts = {
        "weights": _weight_bytes(shape, lora, compute_bytes, quantized_bits),
        "gradients": trainable * 4,
        "optimizer": trainable * 4 * ADAM_STATES,
        "reference": shape.parameters * compute_bytes if reference and not lora else 0,
        "activations": step,
        "evaluation": max(evaluation - step, 0),  # the two never coexist: only the excess counts
        "runtime": RUNTIME_BYTES["cuda" if device == "cuda" else "cpu"],
    }
    if workload.sampled_rows:  # on-policy sampling ends before the step's forward: only its excess counts
        sampling = _sampling_transient(shape, workload, compute_bytes)
        parts["sampling"] = max(sampling - max(step, evaluation), 0)
    options: dict[str, Any] = {
        "lora": lora,
        "quantized_bits": quantized_bits,
        "gradient_checkpointing": checkpointing,
    }
    if sharding is not None:
        loaded = ("weights", "reference")  # what loading holds whole, beside the runtime
        whole = sum(parts[name] for name in loaded)
        for name in sharding.parts:
            if name == "weights" and quantized_bits is not None:
                continue  # accelerate leaves bitsandbytes' packed weights out of FSDP's sharding
            parts[name] = math.ceil(parts[name] / sharding.processes)
        if sharding.strategy == "deepspeed-zero3":
            models = 2 if parts["reference"] else 1  # the reference's engine gathers its own weights
            parts["buffers"] = _zero3_buffers(shape, trainable, compute_bytes, device, sharding, models)
        after = sum(v for k, v in parts.items() if k not in (*loaded, "runtime"))
        excess = max(whole - sum(parts[n] for n in loaded) - after, 0)
        parts["loading"] = excess if sharding.loads_whole(device, quantized_bits is not None) else 0
        options["sharding"] = {"strategy": sharding.strategy, "processes": sharding.processes}
    return MemoryPlan(parts, device, available, options)


def _zero3_buffers(
    shape: ModelShape, trainable: int, compute_bytes: int, device: str, sharding: Sharding, models: int
) -> int:
    """What DeepSpeed's ZeRO-3 allocates beyond the 1/N parts, read from its stage-3 optimizer's code.

    Its gradient bucket is `torch.empty(reduce_bucket_size)` in the gradients' dtype: a GPU commits it
    whole, while the host makes resident only the pages it fills (at most the trainable parameters).
    Beside the float32 master partition the model keeps its own partition in the compute dtype. Its
    parameter coordinator keeps gathered weights until `stage3_max_live_parameters` are live (and
    while they are reused soon after), so a model under 1e9 parameters stays gathered whole after
    its first forward pass; a forward pass gathers at least one layer. Each of the `models` engines
    (the policy's, and the reference's under full fine-tuning) keeps its own. Measured on CPU
    (docs/benchmarks.md): a bucket of 1e6 instead of 5e8 elements saved 0.8 GB a rank, and keeping
    no parameter gathered saved about the gathered model's size.
    """
    bucket = shape.hidden**2 if sharding.reduce_bucket is None else sharding.reduce_bucket
    if device != "cuda":
        bucket = min(bucket, trainable)
    layer = shape.quantizable // shape.layers
    gathered = min(max(sharding.max_live, layer), shape.parameters)
    partition = math.ceil(trainable * compute_bytes / sharding.processes)
    return (bucket + gathered * models) * compute_bytes + partition


def _weight_bytes(shape: ModelShape, lora: bool, compute_bytes: int, quantized_bits: int | None) -> int:
    if not lora:
        return shape.parameters * 4  # float32 master weights: AdamW's small steps vanish in bf16
    adapters = shape.lora_parameters * 4
    if quantized_bits is None:
        return shape.parameters * compute_bytes + adapters
    per_weight = FOUR_BIT_BYTES if quantized_bits == 4 else 1.0
    rest = shape.parameters - shape.quantizable  # embeddings, norms, head: peft's k-bit preparation
    return int(shape.quantizable * per_weight) + rest * 4 + adapters  # casts them to float32


def _step_activations(shape: ModelShape, workload: Workload, element_bytes: int, checkpointing: bool) -> int:
    h, a, i = ACTIVATION_WIDTHS
    per_token_layer = h * shape.hidden + a * shape.attention_width + i * shape.intermediate
    tokens = workload.rows * workload.width
    if checkpointing:  # each layer's input is kept; one layer at a time is recomputed in full
        kept = shape.layers * tokens * shape.hidden + tokens * per_token_layer
    else:
        kept = shape.layers * tokens * per_token_layer
    return kept * element_bytes + workload.scored * shape.vocab * 4 * LOGIT_COPIES


def _sampling_transient(shape: ModelShape, workload: Workload, compute_bytes: int) -> int:
    """On-policy sampling: the KV cache of every sampled sequence (keys and values per layer, at the
    full attention width: an upper bound under grouped-query attention) and each step's float32
    next-token logits with their softmax."""
    tokens = workload.sampled_rows * workload.sampled_width
    cache = tokens * shape.layers * 2 * shape.attention_width * compute_bytes
    return cache + workload.sampled_rows * shape.vocab * 4 * 2


def _evaluation_transient(shape: ModelShape, workload: Workload) -> int:
    """Drift's batch: the base's and the model's logits over its tokens, and one KL chunk's temporaries."""
    from autocustom.scoring.drift import KL_CHUNK

    logits = workload.eval_positions * shape.vocab * 4 * 2
    return logits + KL_CHUNK * shape.vocab * 4 * KL_TEMPORARIES


def workload_for(config: Any, examples: list | None, drift_lengths: list[int] | None = None) -> Workload:
    """The micro-step of `config` on its encoded pairs (the longest ones: a plan is an upper bound).

    The regulariser's MMLU rows are at most `reg_max_tokens` long, so with them a row is at least that.
    Without examples (a table for a model and no dataset), every row is `max_length` long and half of
    it is answer; without the Drift texts' lengths, every text is as long as Drift allows.
    """
    from autocustom.scoring.drift import MAX_LENGTH

    reg_rows = config.reg_batch_size if config.reg_weight > 0 else 0
    if examples:
        pair_width = max(max(len(e.target_ids), len(e.opposite_ids)) for e in examples)
        answers = sorted(
            len(e.target_ids) - e.target_prompt + len(e.opposite_ids) - e.opposite_prompt for e in examples
        )
        scored = sum(answers[-config.batch_size :])
    else:
        pair_width = config.max_length
        scored = 2 * config.batch_size * math.ceil(config.max_length / 2)
    width = max(pair_width, config.reg_max_tokens) if reg_rows else pair_width
    drift = sorted(drift_lengths or [MAX_LENGTH] * config.eval_batch_size, reverse=True)
    rows, sampled = 2 * config.batch_size, 0
    if config.samples_replies:  # up to two pairs per question, or one student row per sample
        sampled = config.batch_size * config.samples
        rows = sampled if config.loss == DISTILL else 4 * config.batch_size
        width = max(width, config.max_length)
        scored = rows * config.sample_tokens
    return Workload(
        rows=rows + reg_rows,
        width=width,
        scored=scored + reg_rows * (width if config.reg == "kl" else 1),
        eval_positions=sum(drift[: config.eval_batch_size]),
        sampled_rows=sampled,
        sampled_width=config.max_length + config.sample_tokens if sampled else 0,
    )


def available_bytes(device: Any) -> int | None:
    """What the device can give a new allocation now: free GPU memory, or the OS's available RAM."""
    import psutil
    import torch

    if getattr(device, "type", device) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def plan_training(
    config: Any, dataset: Any = None, device: Any = None, run: EncodedRun | None = None
) -> MemoryPlan:
    """The memory plan of `train(config)` from the model's config and the dataset's pairs; loads no weights.

    `run`: the dataset's train pairs already encoded (`train` encodes them once, for this and for training).

    `options` of the plan also lists the changes of settings that would make a plan that does not fit
    fit this device (`fitting_changes`).
    """
    from autocustom.llm.models import load_config
    from autocustom.runtime import resolve_device

    device = device if device is not None else resolve_device(config.device)
    shape = model_shape(load_config(config.model), config.lora_rank, config.lora_targets)
    measured = _measured_lengths(config, dataset, device, run) if dataset is not None else None
    available = available_bytes(device)
    sharding = launched_sharding()
    if sharding is not None and sharding.checkpoints_activations:
        if config.gradient_checkpointing:
            raise UsageError(
                "the launch turns on FSDP's activation checkpointing (fsdp_activation_checkpointing: true) "
                "and --gradient-checkpointing asks for the Trainer's too; the Trainer refuses both",
                "pass --no-gradient-checkpointing, or set fsdp_activation_checkpointing: false",
            )
        config = replace(config, gradient_checkpointing=False)  # FSDP checkpoints the layers itself
    if config.gradient_checkpointing is None:
        config = replace(
            config, gradient_checkpointing=_needs_checkpointing(config, shape, measured, device, available)
        )
    plan = _plan_for(config, shape, measured, device, available)
    if plan.fits is False:
        plan.options["would_fit"] = fitting_changes(config, shape, measured, device, available)
    return plan


CHECKPOINTING_SHARE = (
    0.5  # auto: checkpoint unless the plan without it takes at most this share of free memory
)


def _needs_checkpointing(
    config: Any, shape: ModelShape, measured, device: Any, available: int | None
) -> bool:
    """Gradient checkpointing by default only where memory asks for it: it costs ~30% of every step.

    Off when the plan without it leaves half the device's free memory unused (room for the plan's
    error, measured within 25%, and for whatever else runs there); on when the free memory is unknown.
    """
    if available is None:
        return True
    without = _plan_for(replace(config, gradient_checkpointing=False), shape, measured, device, available)
    return without.total > CHECKPOINTING_SHARE * available


def fitting_changes(config: Any, shape: ModelShape, measured, device: Any, available: int) -> list[str]:
    """Options that would make the run fit `available` bytes, each tried alone, cheapest first."""
    changes: list[tuple[str, dict[str, Any]]] = []
    if not config.gradient_checkpointing:
        changes.append(("--gradient-checkpointing", {"gradient_checkpointing": True}))
    if config.lora is not True and not config.quantized:
        changes.append(("--lora", {"lora": True}))
    if getattr(device, "type", device) == "cuda" and not config.load_in_4bit:
        changes.append(("--lora --load-in-4bit", {"lora": True, "load_in_4bit": True, "load_in_8bit": False}))
    size = config.batch_size
    while size > 1:
        size //= 2
        accum = config.grad_accum * config.batch_size // size
        changes.append(
            (f"--batch-size {size} --grad-accum {accum}", {"batch_size": size, "grad_accum": accum})
        )
    return [
        flags
        for flags, values in changes
        if _plan_for(replace(config, **values), shape, measured, device, available).fits
    ]


def _plan_for(config: Any, shape: ModelShape, measured, device: Any, available: int | None) -> MemoryPlan:
    """`measured`: (encoded pairs, Drift continuation lengths) of the run's data, or None."""
    from autocustom.runtime import resolve_dtype

    device_type = getattr(device, "type", device)
    sharding = launched_sharding()
    fsdp_checkpoints = sharding is not None and sharding.checkpoints_activations
    plan = plan_memory(
        shape,
        workload_for(config, *(measured or (None, None))),
        lora=config.uses_lora(shape.parameters),
        device=device_type,
        compute_bytes=resolve_dtype(device, config.dtype).itemsize,
        quantized_bits=4 if config.load_in_4bit else 8 if config.load_in_8bit else None,
        checkpointing=bool(config.gradient_checkpointing) or fsdp_checkpoints,
        available=available,
        sharding=sharding,
    )
    plan.options["gradient_checkpointing"] = config.gradient_checkpointing  # the Trainer's, train reads it
    if fsdp_checkpoints:
        plan.options["sharding"]["activation_checkpointing"] = True
    return plan


def _measured_lengths(
    config: Any, dataset: Any, device: Any, run: EncodedRun | None
) -> tuple[list, list[int]]:
    """The run's encoded training pairs (`run`'s, or encoded here), and the continuation lengths of the
    Drift texts it evaluates."""
    from autocustom.scoring.drift import MAX_LENGTH
    from autocustom.scoring.logprobs import encode_context_continuation
    from autocustom.training.plans import training_plan

    run = run or encode_run(config, dataset)
    # the final measurement's Drift texts (every plan of a run draws the same ones)
    texts = training_plan(config, dataset, "validation", getattr(device, "type", device)).drift_texts
    encoded = [encode_context_continuation(run.tokenizer, p, c, MAX_LENGTH) for p, c in texts]
    return run.examples, [len(e.input_ids) - e.prompt_length for e in encoded]
