"""What one comparison runs: which models, methods and stress conditions, and the shared training
budget (`CompareConfig`; its fields are `compare`'s options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.comparison.methods import METHODS
from autocustom.fields import DATASET_HELP, NEUTRAL, config_record, force_restart, required
from autocustom.scoring.contrast import DEFAULT_FLUENCY_BUDGET
from autocustom.scoring.options import MeasureSizes


@dataclass
class CompareConfig(MeasureSizes):
    """One comparison: which models, methods and stress conditions, and the shared training budget.

    The measurement's sizes, device and loading options (`MeasureSizes`, as `shift-score` has them)
    apply to every scored and trained model; `--judge` adds the judge's figures of each method's free
    replies.
    """

    data: str = required(DATASET_HELP)
    toward: str = required("The pole every method aims for.")
    out: str = required("Comparison directory (resumable).", neutral=True)
    models: list[str] = field(
        default_factory=lambda: [DEFAULT_MODEL],
        metadata={"help": "Comma-separated models; trained methods use the first."},
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={NEUTRAL: True, "help": "Comma-separated methods."}
    )
    padding: list[int] = field(
        default_factory=lambda: [64, 256],
        metadata={NEUTRAL: True, "help": "Distracting-token lengths to test (comma-separated)."},
    )
    adversarial: bool = field(
        default=True,
        metadata={
            NEUTRAL: True,
            "help": "Add the adversarial user turn.",
            "flag": "--adversarial/--no-adversarial",
        },
    )
    few_shot: int = field(default=3, metadata={"help": "Train pairs shown to the few-shot baseline."})
    max_steps: int = field(default=30, metadata={"help": "Training steps of every trained method."})
    lr: float | None = field(default=None, metadata={"help": "Learning rate of every trained method."})
    train_batch_size: int = field(default=4, metadata={"help": "Pairs per training step."})
    eval_steps: int = field(default=10, metadata={"help": "Validation evaluation interval during training."})
    train_sizes: list[int] = field(
        default_factory=list,
        metadata={
            NEUTRAL: True,
            "help": "Also train each loss on nested subsets of this many train pairs (e.g. 4,8,16), same "
            "steps per pair, and fit a power law of test BiasShift against n (train_sizes.png).",
        },
    )
    seed: int = field(default=0, kw_only=True, metadata={"help": "Seed of training and intervals."})
    max_fluency_drop: float = field(
        default=DEFAULT_FLUENCY_BUDGET,
        metadata={
            NEUTRAL: True,
            "help": "With --judge contrast: name the methods whose replies are more than this less likely "
            "(nats/token) than the judge's own replies told the target pole (the reply-quality budget).",
        },
    )

    force_restart: bool = force_restart()

    def to_dict(self) -> dict[str, Any]:
        return config_record(self)
