"""`compare`: every method on the same held-out pairs and the same metrics, in one table.

Rows are (model, method, condition). Prompting baselines, a steering vector (its layer and coefficient
chosen on the validation split) and trained models (contrastive, DPO, SimPO, same data, steps and
learning rate) are scored clean and under stress (distracting padding, an
adversarial user turn). BiasShift compares each row with the base model under the same condition, so
a stress that moves every model alike does not count as a shift. Nothing in the table is typed by
hand: every cell is computed in the run, and resumed runs reuse cells already computed (stored per
row in `rows/`) and training runs already finished (in `methods/`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.comparison.config import CompareConfig
from autocustom.comparison.differences import method_differences
from autocustom.comparison.methods import (
    PLAIN_CONDITION,
    PROMPT_METHODS,
    STEERING_METHOD,
    TRAINED_METHODS,
    check_methods,
    training_options,
)
from autocustom.comparison.rows import Row, RowScoring
from autocustom.data.audit import leakage_notes
from autocustom.data.io import load_dataset_dir
from autocustom.errors import UsageError
from autocustom.fields import result_settings
from autocustom.fileio import write_json_atomic, write_text_atomic
from autocustom.layout import (
    COMPARE_CONFIG,
    COMPARE_RESULT,
    COMPARE_TABLE,
    PLOTS,
    claimed_output,
    compare_method_run,
    compare_size_run,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.judge import is_contrast, judge_notes, open_judge
from autocustom.scoring.plan import EvalPlan
from autocustom.scoring.stats import estimate_from
from autocustom.steering.vector import layers_label

log = logging.getLogger(__name__)

SCHEMA = "autocustom.compare/3"  # 2: the evaluation plan; 3: steer, judge columns, no GenLean


@dataclass
class CompareResult:
    config: CompareConfig
    axis: dict[str, str]
    opposite: str
    n_pairs: int
    rows: list[Row]
    training: dict[str, dict[str, Any]]
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)  # EvalPlan.describe() of the test-split plan
    train_sizes: list[dict[str, Any]] = field(default_factory=list)  # data_scaling.SizeCurve per loss
    differences: list[dict[str, Any]] = field(default_factory=list)  # method_differences(): A - B, paired

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "axis": self.axis,
            "toward": self.config.toward,
            "opposite": self.opposite,
            "n_pairs": self.n_pairs,
            "rows": [row.to_dict(with_margins=False) for row in self.rows],
            "training": self.training,
            "elapsed_s": round(self.elapsed_s, 1),
            "notes": self.notes,
            "plan": self.plan,
            "train_sizes": self.train_sizes,
            "differences": self.differences,
        }

    def to_markdown(self) -> str:
        from autocustom.report import compare_markdown

        return compare_markdown(self.to_dict())


def compare(config: CompareConfig, *, progress: ProgressCallback = no_progress) -> CompareResult:
    """Run (or resume) a comparison into `config.out`; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    started = time.monotonic()
    check_methods(config.methods)
    if config.max_steps <= 0 or config.few_shot < 0 or not config.models:
        raise UsageError(
            "--max-steps must be positive, --few-shot >= 0, --models non-empty", "fix the options"
        )
    dataset = load_dataset_dir(config.data)
    if not dataset.splits.get("test"):
        raise UsageError(f"the test split of {config.data} is empty", "regenerate with more subareas")
    _check_train_sizes(config, len(dataset.splits.get("train", [])))
    config.check_sizes()
    device = resolve_device(config.device)
    plan = compare_plan(config, dataset, device.type)
    out = Path(config.out)
    for method in _trained(config):  # the training options of every method fail here, before any work
        _train_config(config, method, compare_method_run(out, method)).validate()
    settings = result_settings(config)
    with claimed_output(out, COMPARE_CONFIG, settings, command="compare", restart=config.force_restart):
        training = _train_methods(config, out, progress)
        curves = _size_curves(config, out, dataset, training, progress) if config.train_sizes else []
        scoring = RowScoring(config, out, dataset, plan, device, progress)
        rows: list[Row] = []
        with open_judge(config, dataset.axis, device=config.device) as judge:
            for model_index, model_ref in enumerate(config.models):
                # the trained methods are the first model's; other models get the prompting ones
                methods = [m for m in config.methods if model_index == 0 or m in PROMPT_METHODS]
                rows.extend(scoring.model_rows(model_ref, methods, judge))
    if scoring.steering is not None:
        training[STEERING_METHOD] = scoring.steering.to_dict()
    result = CompareResult(
        config=config,
        axis=dataset.axis.to_dict(),
        opposite=plan.opposite,
        n_pairs=len(plan.pairs),
        rows=rows,
        training=training,
        elapsed_s=time.monotonic() - started,
        notes=leakage_notes(dataset.manifest)
        + _notes(plan, rows, scoring.steering, curves, config.max_fluency_drop),
        plan=plan.describe(),
        train_sizes=[curve.to_dict() for curve in curves],
        differences=method_differences(rows, config.bootstrap, config.seed),
    )
    write_json_atomic(out / COMPARE_RESULT, result.to_dict())
    write_text_atomic(out / COMPARE_TABLE, result.to_markdown())
    if curves:
        from autocustom.report import TRAIN_SIZES_PLOT, plot_train_sizes

        plot_train_sizes(result.to_dict(), out / PLOTS / TRAIN_SIZES_PLOT)
    return result


def _check_train_sizes(config: CompareConfig, all_pairs: int) -> None:
    bad = [n for n in config.train_sizes if not 0 < n < all_pairs]
    if bad:
        raise UsageError(
            f"--train-sizes {', '.join(map(str, bad))}: each size must be between 1 and {all_pairs - 1} "
            f"(the full run's {all_pairs} train pairs are the curve's last point)",
            "choose smaller sizes",
        )
    if config.train_sizes and not _trained(config):
        raise UsageError("--train-sizes needs a trained method in --methods", "add e.g. contrastive")


def compare_plan(config: CompareConfig, dataset, device_type: str) -> EvalPlan:
    """The test-split plan every row is measured on (each row under its own prompt condition)."""
    return config.plan_for(dataset, "test", config.toward, device_type)


def _notes(plan: EvalPlan, rows: list[Row], steering, curves, budget: float) -> list[str]:
    notes = [
        "BiasShift: vs the base model under the same condition; MMLU delta and Drift: methods that change "
        "the model's computation only (trained weights, the steering vector; prompting leaves them unchanged)",
    ]
    if steering is not None:
        vector = steering.vector
        notes.append(
            f"steer: the mean-difference vector at layer {layers_label(vector.layers)}, coefficient "
            f"{vector.coefficient:g}, chosen over {len(steering.grid)} grid points on the validation split: "
            f"{steering.reason}"
        )
    if plan.judge:
        notes += _judge_notes(plan, rows)
    if is_contrast(plan.judge):
        notes.append(_fluency_budget_note(rows, budget))
    notes += [curve.sentence() for curve in curves]
    return notes


def _fluency_budget_note(rows: list[Row], budget: float) -> str:
    """Which methods' replies cost more fluency than the budget allows, in words (plain condition)."""
    several_models = len({r.model for r in rows}) > 1
    outside = [
        f"{r.method}{f' ({r.model})' if several_models else ''} ({-r.metrics['fluency_vs_prompted'].value:+.2f})"
        for r in rows
        if r.condition == PLAIN_CONDITION
        and r.metrics.get("fluency_vs_prompted") is not None
        and -r.metrics["fluency_vs_prompted"].value > budget
    ]
    if not outside:
        return f"every method's replies stay within the fluency budget ({budget:g} nats/token below the judge's own)"
    return (
        f"outside the fluency budget ({budget:g} nats/token below the judge's own replies told the target "
        f"pole): {', '.join(outside)}"
    )


def _judge_notes(plan: EvalPlan, rows: list[Row]) -> list[str]:
    if is_contrast(plan.judge):
        checked = next((r for r in rows if r.metrics.get("judge_accuracy")), None)
        notes = [
            "replies toward pole: the share of each method's free replies the contrast judge reads as the "
            "target pole; reply shift: their paired move from the base's; fluency vs prompted: their "
            "log-prob under the judge told the target pole, against the judge's own replies so told"
        ]
        # the judge's validation is the same on every row: report it once, without a row's own figures
        if checked is not None:
            notes += judge_notes(plan.judge, {"judge_accuracy": checked.metrics["judge_accuracy"]})
        return notes
    notes = [
        "win rate: the judge's verdicts on each method's free replies against the base model's, both "
        "orders per question; LC: length-controlled (AlpacaEval 2's logistic model at equal length)"
    ]
    judged = [r for r in rows if r.condition == PLAIN_CONDITION and r.metrics.get("judge_consistency")]
    if judged:
        least = min(judged, key=lambda r: r.metrics["judge_consistency"].value)
        notes += judge_notes(plan.judge, least.metrics)
    return notes


def _train_methods(config: CompareConfig, out: Path, progress: ProgressCallback) -> dict[str, dict[str, Any]]:
    """Train each loss with the same data, steps and learning rate; finished runs are not retrained."""
    from autocustom.training.trainer import train

    summaries = {}
    for method in _trained(config):
        progress(ProgressEvent("train", 0, config.max_steps, method))
        result = train(_train_config(config, method, compare_method_run(out, method)), progress=progress)
        summaries[method] = result.to_dict()
    return summaries


def _trained(config: CompareConfig) -> list[str]:
    return [m for m in config.methods if m in TRAINED_METHODS]


def _train_config(config: CompareConfig, method: str, run: Path, **overrides: Any):
    """The TrainConfig every trained method of the comparison shares, but for its loss and directory."""
    from autocustom.training.config import TrainConfig

    settings = {
        "data": config.data,
        "toward": config.toward,
        "out": str(run),
        "model": config.models[0],
        **training_options(method),
        "max_steps": config.max_steps,
        "lr": config.lr,
        "batch_size": config.train_batch_size,
        "eval_steps": config.eval_steps,
        "mmlu_questions": config.mmlu_questions,
        "drift_texts": config.drift_texts,
        "seed": config.seed,
        "device": config.device,
        **config.load_options(),
        "resume": True,
    }
    return TrainConfig(**{**settings, **overrides})


def _size_curves(config: CompareConfig, out: Path, dataset, training, progress: ProgressCallback):
    """Each trained loss at every --train-sizes subset (and the full run), with its fitted power law."""
    from autocustom.comparison.data_scaling import SizeCurve, SizePoint, fit_power_law, steps_for
    from autocustom.training.trainer import train

    all_pairs = len(dataset.splits.get("train", []))
    curves = []
    for method in _trained(config):
        points = []
        for pairs in sorted(set(config.train_sizes)):
            steps = steps_for(pairs, all_pairs, config.max_steps)
            progress(
                ProgressEvent("train sizes", len(points), len(config.train_sizes), f"{method} n={pairs}")
            )
            run = _train_config(
                config,
                method,
                compare_size_run(out, method, pairs),
                train_pairs=pairs,
                max_steps=steps,
                eval_steps=min(config.eval_steps, steps),
            )
            points.append(SizePoint(pairs, steps, train(run, progress=progress).bias_shift_test))
        full = estimate_from(training[method].get("bias_shift_test"))
        points.append(SizePoint(all_pairs, config.max_steps, full))
        curves.append(SizeCurve(method, points, fit_power_law(points)))
    return curves
