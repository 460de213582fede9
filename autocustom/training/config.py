"""TrainConfig: every knob of `autocustom train`, with its help text and the reason for its default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL, force_restart
from autocustom.llm.models import LoadOptions
from autocustom.scoring.contrast import DEFAULT_FLUENCY_BUDGET
from autocustom.scoring.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, size_help

DISTILL = "distill"  # pole-prompt distillation on the model's own samples (training/onpolicy.py)
LOSSES = ("contrastive", "dpo", "ipo", "simpo", DISTILL)  # the objectives of training/losses.py, and DISTILL
REGULARIZERS = ("nll", "kl")
REPORT_TO = ("none", "tensorboard", "wandb")  # what Trainer's report_to takes that autocustom documents
CHECKPOINT_MINUTES = 5.0  # default: a kill loses at most ~5 minutes of training; a shorter run writes none
LORA_AUTO_THRESHOLD = 1_000_000_000  # parameters: above this, full fine-tuning stops fitting on one GPU


@dataclass
class TrainConfig(LoadOptions):
    """The resolved settings of one training run; written to run_config.json.

    The loading options (`--dtype`, `--load-in-4bit`, ...) come from `LoadOptions`, shared with scoring.
    """

    data: str = field(
        default="",
        metadata={
            "help": "dataset directory made by `autocustom generate` "
            "(train.jsonl, validation.jsonl, optionally test.jsonl)",
            "required": True,
        },
    )
    toward: str = field(
        default="",
        metadata={
            "help": "the pole to move the model toward; must be one of the dataset's two poles",
            "required": True,
        },
    )
    out: str = field(
        default="",
        metadata={
            NEUTRAL: True,
            "help": "run directory to create, or to continue with --resume "
            "(model/, metrics.jsonl, summary.json, run_config.json)",
            "required": True,
        },
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "base model: packaged name, local directory, run directory or hub id"},
    )
    loss: str = field(
        default="contrastive",
        metadata={
            "help": "contrastive (NLL on target + unlikelihood on opposite), dpo, ipo, simpo, or distill "
            "(on the model's own samples, the reverse KL to the base told the target pole's way)"
        },
    )
    on_policy: bool = field(
        default=False,
        metadata={
            "help": "each step the model samples --samples replies per train question, the base told "
            "each pole scores them, and --loss trains on its best against its worst reply (and the "
            "written target answer against a reply that leans the wrong way)",
            "flag": "--on-policy/--offline",
        },
    )
    samples: int = field(
        default=4,
        metadata={
            "help": "on-policy and distill: replies sampled per train question each step (4: a best and "
            "a worst that differ, at 4x the generation of one)"
        },
    )
    sample_tokens: int = field(
        default=48, metadata={"help": "on-policy and distill: max new tokens per sampled reply"}
    )
    sample_temperature: float = field(
        default=1.0,
        metadata={"help": "on-policy and distill: sampling temperature (1.0: the model's own distribution)"},
    )
    alpha: float = field(
        default=1.0, metadata={"help": "contrastive: weight of the unlikelihood term on the opposite answer"}
    )
    beta: float | None = field(
        default=None,
        metadata={"help": "dpo/ipo/simpo beta, as in TRL; default 0.1 for dpo/ipo, 2.0 for simpo"},
    )
    simpo_gamma: float = field(
        default=0.5, metadata={"help": "simpo: target reward margin (as TRL's CPO simpo_gamma)"}
    )
    cvar_alpha: float = field(
        default=1.0,
        metadata={
            "help": "CVaR level: average the loss over this fraction of each batch that leans least; "
            "1.0 is the plain mean"
        },
    )
    cvar_warmup: int = field(
        default=20,
        metadata={
            "help": "optimizer steps over which the CVaR level anneals linearly from 1.0 to --cvar-alpha"
        },
    )
    reg: str = field(
        default="nll",
        metadata={"help": "MMLU regulariser: nll (answer-letter NLL) or kl (KL to the frozen base model)"},
    )
    reg_weight: float = field(
        default=0.5,
        metadata={"help": "weight of the MMLU regulariser; 0 disables it and skips its forward passes"},
    )
    reg_subjects: list[str] | None = field(
        default=None,
        metadata={
            "help": "MMLU subjects for the regulariser, comma-separated on the CLI, "
            "e.g. high_school_biology,virology (default: all)"
        },
    )
    reg_batch_size: int = field(
        default=1,
        metadata={
            "help": "MMLU questions per regulariser batch, one batch per training micro-step (1: its rows "
            "cost ~1/8 of a step of 4 pairs; the weight, not the batch, sets its strength)"
        },
    )
    reg_max_tokens: int = field(
        default=128,
        metadata={
            "help": "leave MMLU questions longer than this out of the regulariser, so its rows never pad "
            "the pair rows wider (128 keeps about two thirds of MMLU)"
        },
    )
    lora: bool | None = field(
        default=None,
        metadata={
            "help": "--lora: LoRA adapters via peft (True); --full: full fine-tuning (False); "
            "default: LoRA only for models above 1B parameters",
            "flag": "--lora/--full",
        },
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_targets: list[str] | None = field(
        default=None,
        metadata={
            "help": "module names LoRA adapts, comma-separated on the CLI, e.g. q_proj,v_proj "
            "(default: every linear layer but the output head)"
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "recompute each layer's activations in the backward pass instead of keeping them: "
            "several times less memory for ~30% more time; default: on unless the memory plan "
            "without it takes at most half of the device's free memory",
            "flag": "--gradient-checkpointing/--no-gradient-checkpointing",
        },
    )
    report_to: str = field(
        default="none",
        metadata={
            NEUTRAL: True,
            "help": "where the Trainer logs the loss and every evaluation: none, tensorboard "
            "(OUT/logs) or wandb",
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            NEUTRAL: True,
            "help": "print the memory plan (weights, gradients, optimizer, activations, reference) "
            "and whether it fits this device; load no weights, write nothing",
            "flag": "--dry-run",
        },
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps to run; overrides --epochs when set"}
    )
    train_pairs: int | None = field(
        default=None,
        metadata={
            "help": "train on this many train pairs, the first of a --seed shuffle (a smaller number "
            "takes a subset of a larger one); default: all"
        },
    )
    epochs: float = field(
        default=3.0, metadata={"help": "passes over the training pairs (when --max-steps is not set)"}
    )
    batch_size: int = field(default=4, metadata={"help": "pairs per device per micro-step"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    lr: float | None = field(
        default=None, metadata={"help": "learning rate; default 2e-5 for full fine-tuning, 2e-4 for LoRA"}
    )
    max_length: int = field(
        default=256,
        metadata={"help": "max tokens of prompt + answer (prompt cut from the left, answer from the right)"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed for data order, initialisation and evaluation subsets"}
    )
    device: str | None = field(
        default=None,
        metadata={NEUTRAL: True, "help": "auto (CUDA if present), cpu, cuda or cuda:N (default: auto)"},
    )
    eval_steps: int = field(
        default=20, metadata={"help": "evaluate BiasShift/MMLU/Drift every this many optimizer steps"}
    )
    save_steps: int | None = field(
        default=None,
        metadata={
            NEUTRAL: True,
            "help": "checkpoint every this many steps for --resume; default: at an evaluation once "
            f"{CHECKPOINT_MINUTES:g} minutes passed since the last checkpoint, every evaluation under DDP "
            "(none at the last step: a finished run needs none)",
        },
    )
    patience: int = field(
        default=3,
        metadata={"help": "stop after this many evaluations in a row without a better validation BiasShift"},
    )
    max_mmlu_drop: float | None = field(
        default=None,
        metadata={
            "help": "stop at once when MMLU accuracy falls more than this many percentage points "
            "below the base model's"
        },
    )
    max_drift: float | None = field(
        default=None, metadata={"help": "stop at once when Drift exceeds this (nats/token)"}
    )
    max_fluency_drop: float | None = field(
        default=None,
        metadata={
            "help": "keep no checkpoint whose own replies to the validation questions are more than this "
            "less likely (nats/token) than the base's replies when told the target pole, as the base told "
            f"that pole reads them (e.g. {DEFAULT_FLUENCY_BUDGET}: ~10% less likely per token); off by "
            "default because each evaluation then generates replies (seconds per question on CPU)"
        },
    )
    # `run` turns it off: its shift-score measures the kept model on the same test split (with the judge
    # when asked) right after, so measuring it here too would only double that stage's time
    measure_final: bool = field(default=True, metadata={"cli": False, NEUTRAL: True})
    mmlu_questions: int | None = field(
        default=None, metadata={"help": size_help("MMLU retention subset size", MMLU_QUESTIONS)}
    )
    drift_texts: int | None = field(
        default=None, metadata={"help": size_help("neutral texts for Drift", DRIFT_TEXTS)}
    )
    eval_batch_size: int = field(
        default=16, metadata={NEUTRAL: True, "help": "batch size of the evaluation forward passes"}
    )
    require_improvement: bool = field(
        default=False,
        metadata={
            NEUTRAL: True,
            "help": "exit 1 (a failed gate) when no evaluated checkpoint beat the base model on validation",
            "flag": "--require-improvement",
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            NEUTRAL: True,
            "help": "continue a killed run from its last checkpoint; "
            "a finished run is not retrained: its summary is returned",
        },
    )
    force_restart: bool = force_restart()

    def validate(self) -> None:
        """Reject settings that cannot work, before anything is loaded or written."""
        if not self.data:
            raise UsageError("no dataset given", "pass --data DIR")
        if not self.out:
            raise UsageError("no output directory given", "pass --out DIR")
        positive = {
            "--max-steps": self.max_steps,
            "--train-pairs": self.train_pairs,
            "--epochs": self.epochs,
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--lr": self.lr,
            "--max-length": self.max_length,
            "--eval-steps": self.eval_steps,
            "--save-steps": self.save_steps,
            "--patience": self.patience,
            "--beta": self.beta,
            "--reg-batch-size": self.reg_batch_size,
            "--reg-max-tokens": self.reg_max_tokens,
            "--lora-rank": self.lora_rank,
            "--mmlu-questions": self.mmlu_questions,
            "--drift-texts": self.drift_texts,
            "--eval-batch-size": self.eval_batch_size,
            "--samples": self.samples,
            "--sample-tokens": self.sample_tokens,
            "--sample-temperature": self.sample_temperature,
        }
        for option, value in positive.items():
            if value is not None and value <= 0:
                raise UsageError(f"{option} is {value}", f"{option} must be positive")
        non_negative = {
            "--max-fluency-drop": self.max_fluency_drop if self.max_fluency_drop is not None else 0,
            "--alpha": self.alpha,
            "--reg-weight": self.reg_weight,
            "--cvar-warmup": self.cvar_warmup,
        }
        for option, value in non_negative.items():
            if value < 0:
                raise UsageError(f"{option} is {value}", f"{option} must be 0 or more")
        self._validate_choices()
        if self.on_policy and self.loss == DISTILL:
            raise UsageError("--loss distill samples the model's own replies already", "drop --on-policy")
        if not 0 < self.cvar_alpha <= 1:
            raise UsageError(
                f"--cvar-alpha is {self.cvar_alpha}", "use a fraction in (0, 1]; 1 is the plain mean"
            )

    def _validate_choices(self) -> None:
        for option, value, choices in (
            ("--loss", self.loss, LOSSES),
            ("--reg", self.reg, REGULARIZERS),
            ("--report-to", self.report_to, REPORT_TO),
        ):
            if value not in choices:
                raise UsageError(f"unknown {option} '{value}'", f"use one of: {', '.join(choices)}")
        if self.quantized and self.lora is False:
            raise UsageError(
                "--full cannot train a quantized model: 4-bit and 8-bit weights take no gradient",
                "drop --full (QLoRA trains LoRA adapters on the quantized base)",
            )

    @property
    def samples_replies(self) -> bool:
        """The policy samples its own replies each step (--on-policy, or the distill loss)."""
        return self.on_policy or self.loss == DISTILL

    @property
    def reads_replies(self) -> bool:
        """Evaluations read the model's own replies: a fluency budget, or on-policy training, whose
        replies are what it changes."""
        return self.max_fluency_drop is not None or self.samples_replies

    def uses_lora(self, parameters: int) -> bool:
        """--lora/--full as given; by default LoRA for a quantized load or a model above 1B parameters."""
        if self.lora is not None:
            return self.lora
        return self.quantized or parameters > LORA_AUTO_THRESHOLD

    def resolved_beta(self) -> float:
        if self.beta is not None:
            return self.beta
        return 2.0 if self.loss == "simpo" else 0.1

    def resolved_lr(self, lora: bool) -> float:
        if self.lr is not None:
            return self.lr
        return 2e-4 if lora else 2e-5  # adapters start at zero and need a larger step to move

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
