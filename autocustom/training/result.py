"""What a training run achieved (`TrainResult`, summary.json) and how far its kept checkpoint can be
trusted (`selection_line`): the run's record, read back by `train --resume` and by `run`'s report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocustom.scoring.stats import Estimate, estimate_dict, estimate_from

SUMMARY_SCHEMA = "autocustom.train-summary/2"  # 2: final figures measured on the kept model; plans recorded


REPLY_FIGURES = (
    "reply_share",
    "base_reply_share",
    "reply_share_gain",
    "reply_shift",
    "fluency_vs_prompted",
    "fluency_vs_base",
    "repetition",
    "base_repetition",
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
            data[key] = estimate_dict(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        values = {k: v for k, v in data.items() if k != "schema"}
        for key in ESTIMATES:
            values[key] = estimate_from(values.get(key))
        return cls(**values)


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
