"""The rows of a comparison: each (model, method, condition) measured against one base per model
(`RowScoring`), stored per cell so a stopped comparison resumes, and the columns a row keeps."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autocustom.comparison.config import CompareConfig
from autocustom.comparison.methods import (
    PLAIN_CONDITION,
    PROMPT_METHODS,
    STEERING_METHOD,
    apply_stress,
    method_condition,
    padding_length,
    stress_conditions,
)
from autocustom.fileio import read_json, write_json_atomic
from autocustom.layout import compare_cell, compare_method_run
from autocustom.llm.chat import PLAIN
from autocustom.progress import ProgressCallback, ProgressEvent
from autocustom.scoring.judge import is_contrast
from autocustom.scoring.measure import Measurement, Reference, measure
from autocustom.scoring.plan import EVAL_SEED, EvalPlan
from autocustom.scoring.stats import Estimate, metrics_dict, metrics_from

PADDING_SOURCE = 200  # MMLU questions the distracting padding is cut from: more than 256 tokens' worth


COLUMNS = ("lean", "bias_shift", "mmlu_delta_points", "drift")


JUDGE_COLUMNS = ("win_rate", "lc_win_rate", "reply_tokens", "judge_consistency")  # with --judge local/openai


# with --judge contrast: the replies' lean, its move from the base's, what it cost them, the judge's check
CONTRAST_COLUMNS = (
    "reply_share",
    "reply_share_gain",
    "reply_shift",
    "fluency_vs_prompted",
    "repetition",
    "reply_tokens",
    "judge_accuracy",
)


@dataclass
class Row:
    model: str
    method: str
    condition: str
    padding_tokens: int
    metrics: dict[str, Estimate | None]
    margins: list[float]
    replies: list[float] | None = None  # the contrast judge's r per free reply (None: not judged)

    def to_dict(self, with_margins: bool = True) -> dict[str, Any]:
        data = {
            "model": self.model,
            "method": self.method,
            "condition": self.condition,
            "padding_tokens": self.padding_tokens,
            "metrics": metrics_dict(self.metrics),
        }
        if with_margins:
            data["margins"] = self.margins
            data["replies"] = self.replies
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        metrics = metrics_from(data["metrics"])
        return cls(
            model=data["model"],
            method=data["method"],
            condition=data["condition"],
            padding_tokens=data["padding_tokens"],
            metrics=metrics,
            margins=data["margins"],
            replies=data.get("replies"),
        )


@dataclass
class RowScoring:
    """What every row of a comparison is measured with: one plan, one base per model, resumable cells."""

    config: CompareConfig
    out: Path
    dataset: Any
    plan: EvalPlan
    device: Any
    progress: ProgressCallback
    steering: Any = None  # steer.Fitted, once the steering method has been fitted

    def model_rows(self, model_ref: str, methods: list[str], judge) -> list[Row]:
        """Rows of one model (the base first); `judge` reads the free replies when one was asked for."""
        from autocustom.llm.models import load_model
        from autocustom.scoring.mmlu import retention_subset

        placement = {"options": self.config, "device_map": self.config.device_map}
        base = load_model(model_ref, device=self.device, **placement)
        reference = Reference(base.model, base.tokenizer, judge)
        conditions = stress_conditions(self.config.padding, self.config.adversarial)
        padding_source = [q.question for q in retention_subset(PADDING_SOURCE, seed=EVAL_SEED)]
        rows, total = [], len(methods) * len(conditions)
        for method in ["base", *[m for m in methods if m != "base"]]:
            loaded, changed = self._method_model(method, base, reference, placement)
            train_pairs = self.dataset.splits.get("train", [])
            prompt = method_condition(
                method, self.dataset.axis, self.config.toward, train_pairs, self.config.few_shot
            )
            for condition in conditions:
                stage = f"score {model_ref}"
                self.progress(ProgressEvent(stage, len(rows), total, f"{method} / {condition}"))
                cell = compare_cell(self.out, _slug(model_ref), method, condition)
                if not cell.is_file():
                    stress = {
                        "opposite": self.plan.opposite,
                        "tokenizer": loaded.tokenizer,
                        "padding_source": padding_source,
                    }
                    plan = self._cell_plan(
                        apply_stress(prompt, condition, **stress),
                        apply_stress(PLAIN, condition, **stress),
                        changed,
                        condition,
                    )
                    measured = measure(loaded.model, reference, plan, tokenizer=loaded.tokenizer)
                    write_json_atomic(cell, _row(model_ref, method, condition, measured).to_dict())
                if method in methods:
                    rows.append(Row.from_dict(read_json(cell)))
        self.progress(ProgressEvent(f"score {model_ref}", total, total, "done"))
        return rows

    def _method_model(self, method: str, base, reference: Reference, placement: dict[str, Any]):
        """The model a method's rows are scored with, and whether it changes the model's computation
        (trained weights, a steering vector: then MMLU and Drift are measured too)."""
        from autocustom.llm.models import load_model
        from autocustom.steering.vector import Steered

        if method == STEERING_METHOD:
            self.steering = self._fit_steering(reference)
            return replace(base, model=Steered(base.model, self.steering.vector)), True
        if method in PROMPT_METHODS:
            return base, False
        run = compare_method_run(self.out, method)
        return load_model(str(run), device=self.device, **placement), True

    def _fit_steering(self, reference: Reference):
        """The steering vector of the first model: fitted on train, its grid measured on validation."""
        from autocustom.steering.search import SteerConfig, fit_steering

        config = self.config
        steer_config = SteerConfig(
            data=config.data,
            toward=config.toward,
            out=str(compare_method_run(self.out, STEERING_METHOD)),
            model=config.models[0],
            drift_texts=config.drift_texts,
            bootstrap=config.bootstrap,
            seed=config.seed,
            batch_size=config.batch_size,
            device=config.device,
            **config.load_options(),
        )
        return fit_steering(steer_config, self.dataset, reference, progress=self.progress)

    def _cell_plan(self, condition, base_condition, changed: bool, stress: str) -> EvalPlan:
        """MMLU and Drift for changed models on the plain prompt; replies on the plain prompt only."""
        plan = self.plan.under(condition, base_condition)
        if stress != PLAIN_CONDITION:
            return plan.pairs_only()
        if not changed:
            return replace(plan, mmlu=(), drift_texts=())
        return plan


def judge_columns(judge: str | None) -> tuple[str, ...]:
    """The reply columns a comparison adds for its judge (none without one)."""
    if judge is None:
        return ()
    return CONTRAST_COLUMNS if is_contrast(judge) else JUDGE_COLUMNS


def _row(model_ref: str, method: str, condition: str, measured: Measurement) -> Row:
    columns = COLUMNS + judge_columns(measured.plan.judge)
    metrics = {name: measured.metrics[name] for name in columns}
    if method == "base":
        metrics["bias_shift"] = None  # the base against itself: 0 by construction, not a finding
    margins, replies = measured.observations.margins, measured.observations.contrast
    return Row(
        model=model_ref,
        method=method,
        condition=condition,
        padding_tokens=padding_length(condition),
        metrics=metrics,
        margins=margins.tolist(),
        replies=None if replies is None else replies.tolist(),
    )


def _slug(reference: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reference.strip("/"))
