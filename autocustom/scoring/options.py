"""What every command that measures a model takes: how to load it and its base, the evaluation sizes,
the judge (`MeasureOptions`). `shift-score`, `dial`, `steer` and `export` build their configs on it, so an
option means the same in each and is declared once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL
from autocustom.llm.chat import PLAIN, PromptCondition
from autocustom.llm.models import LoadOptions
from autocustom.scoring.judge import JudgeOptions
from autocustom.scoring.plan import DEFAULT_BATCH_SIZE, DEFAULT_TAIL, EvalPlan, make_plan
from autocustom.scoring.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, size_help
from autocustom.scoring.stats import DEFAULT_BOOTSTRAP

DEVICE_MAP_HELP = "auto: spread a model that does not fit one device over the GPUs and the CPU (accelerate)"


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placement strategies


def check_device_map(device_map: str | None) -> None:
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"unknown --device-map '{device_map}'", f"use one of: {', '.join(DEVICE_MAPS)}")


@dataclass(kw_only=True)
class MeasureSizes(JudgeOptions, LoadOptions):
    """The sizes, seed, device and judge of a measurement: what `MeasureOptions` and compare's config
    share. The sizes default to None, which means the device's default of `scoring.sizes`. The loading
    options (`--dtype`, `--load-in-4bit`, ...) come from `LoadOptions`, the judge of free replies from
    `JudgeOptions`.
    """

    mmlu_questions: int | None = field(
        default=None, metadata={"help": size_help("MMLU retention questions", MMLU_QUESTIONS)}
    )
    drift_texts: int | None = field(
        default=None, metadata={"help": size_help("Neutral texts for Drift", DRIFT_TEXTS)}
    )
    bootstrap: int = field(
        default=DEFAULT_BOOTSTRAP, metadata={"help": "Bootstrap resamples for the 95% intervals."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    batch_size: int = field(
        default=DEFAULT_BATCH_SIZE, metadata={NEUTRAL: True, "help": "Sequences per forward pass."}
    )
    device: str | None = field(default=None, metadata={NEUTRAL: True, "help": "auto, cpu, cuda or cuda:N."})
    device_map: str | None = field(default=None, metadata={NEUTRAL: True, "help": DEVICE_MAP_HELP})

    def plan_for(self, dataset, split: str, toward: str, device_type: str, **settings: Any) -> EvalPlan:
        """The evaluation plan of `split` at these sizes, seed and judge; `settings` add make_plan's others."""
        return make_plan(
            dataset,
            split,
            toward,
            device_type=device_type,
            mmlu_questions=self.mmlu_questions,
            drift_texts=self.drift_texts,
            judge=self.judge_label,
            check_split=self.check_split,
            gen_tokens=self.gen_tokens,
            bootstrap=self.bootstrap,
            bootstrap_seed=self.seed,
            batch_size=self.batch_size,
            **settings,
        )

    def check_sizes(self) -> None:
        """Refuse sizes, devices and judges that cannot work, before any work (UsageError: exit 2)."""
        from autocustom.runtime import resolve_device

        check_device_map(self.device_map)
        self.check_loading(resolve_device(self.device))
        self.check_judge()
        if self.bootstrap < 0 or self.batch_size < 1:
            raise UsageError("--bootstrap must be >= 0 and --batch-size >= 1", "fix the option values")
        for name, value in (("--mmlu-questions", self.mmlu_questions), ("--drift-texts", self.drift_texts)):
            if value is not None and value < 1:
                raise UsageError(f"{name} {value} must be at least 1", f"pass {name} 1 or more")


@dataclass(kw_only=True)
class MeasureOptions(MeasureSizes):
    """How a model is measured on a dataset split: the options `shift-score`, `dial`, `steer` and
    `export` share."""

    split: str = field(default="test", metadata={"help": "Split to score: train, validation or test."})
    mmlu: bool = field(
        default=True,
        metadata={"help": "Measure MMLU accuracy on the retention subset.", "flag": "--mmlu/--no-mmlu"},
    )
    tail: float = field(
        default=DEFAULT_TAIL, metadata={"help": "Fraction of least-moved questions for TailShift."}
    )

    def check(self, max_mmlu_drop: float | None = None) -> None:
        """Refuse option values that cannot work (UsageError: exit 2, one line with the fix)."""
        self.check_sizes()
        if not 0 < self.tail <= 1:
            raise UsageError(f"--tail {self.tail} must be in (0, 1]", "e.g. --tail 0.1")
        if max_mmlu_drop is not None and not self.mmlu:
            raise UsageError(
                "--max-mmlu-drop cannot be checked with --no-mmlu", "drop one of the two options"
            )

    def plan(self, dataset, toward: str, device_type: str, condition: PromptCondition = PLAIN) -> EvalPlan:
        """The evaluation plan these options measure (`shift-score`, `dial`, `export` and `run` share it)."""
        return self.plan_for(
            dataset, self.split, toward, device_type, mmlu=self.mmlu, condition=condition, tail=self.tail
        )


HEADER = ("model", "base", "data", "split", "axis", "toward")


@dataclass(kw_only=True)
class MeasuredOn:
    """What a result was measured on: the model, its base, the dataset, its split, the axis and the
    target pole. `shift-score`'s report and the dial's result carry it and open their JSON with it."""

    model: str
    base: str | None
    data: str
    split: str
    axis: dict[str, str]  # Axis.to_dict()'s poles
    toward: str

    def header(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEADER}

    @staticmethod
    def of(config: MeasureOptions, base: str | None, axis: Any, toward: str) -> dict[str, Any]:
        """The header fields of what `config` (a ScoreConfig or DialConfig: its model, data and split)
        measured against `base`, toward `toward` on `axis`."""
        return {
            "model": config.model,
            "base": base,
            "data": str(config.data),
            "split": config.split,
            "axis": {"pole_a": axis.pole_a, "pole_b": axis.pole_b},
            "toward": toward,
        }
