"""`dial`: how strong should the customization be? Shift and side effects measured at every strength.

For each scale `s` the model `base + s * (tuned - base)` (`autocustom.shipping.strength`) is measured by the
shared measurement layer on one evaluation plan, against one `Reference` on the base, so every scale's
BiasShift, Lean, TailShift, Drift and MMLU delta (and with `--judge` the win rates of free replies) carry their n and
a 95% interval and agree with `shift-score` at `s = 0` and `s = 1`. A recommendation follows: the
strongest scale inside the Drift and MMLU budgets given, or without budgets the knee of BiasShift
against Drift. Each finished scale is written to `scales/<s>.json`, so a killed dial resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.errors import UsageError
from autocustom.fields import DATASET_HELP, NEUTRAL, TRAINED_HELP, force_restart, required, result_settings
from autocustom.fileio import read_json, write_json_atomic, write_text_atomic
from autocustom.layout import (
    DIAL,
    DIAL_CONFIG,
    DIAL_PLOT,
    DIAL_RESULT,
    DIAL_TABLE,
    RunSource,
    claimed_output,
    dial_scale_file,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.contrast import DEFAULT_FLUENCY_BUDGET
from autocustom.scoring.judge import CONTRAST, open_judge
from autocustom.scoring.options import MeasuredOn, MeasureOptions
from autocustom.scoring.stats import Estimate, metrics_dict, metrics_from
from autocustom.shipping.strength import find_run

SCHEMA = "autocustom.dial/1"
# 0 (the base) to 2 (twice the trained change): steering users report gibberish past about 2
DEFAULT_SCALES = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
# a bend smaller than this (in the [0, 1]-scaled units of both curves) is noise on a straight line
KNEE_MIN_GAIN = 0.05


@dataclass(kw_only=True)
class DialConfig(MeasureOptions):
    """A dial: which run, on which data, at which scales, and the side-effect budgets of the choice."""

    model: str = required(TRAINED_HELP)
    data: str = required(DATASET_HELP)
    out: str | None = field(
        default=None,
        metadata={NEUTRAL: True, "help": "Dial directory (resumable); default: MODEL/dial for a run."},
    )
    scales: list[float] = field(
        default_factory=lambda: list(DEFAULT_SCALES),
        metadata={
            NEUTRAL: True,
            "help": "Comma-separated strengths, ascending; 0 is the base, 1 the trained model.",
        },
    )
    toward: str | None = field(
        default=None, metadata={"help": "Target pole; default: the run's recorded target."}
    )
    max_drift: float | None = field(
        default=None,
        metadata={
            NEUTRAL: True,
            "help": "Budget: recommend no scale whose Drift exceeds this (nats/token); default: none.",
        },
    )
    max_mmlu_drop: float | None = field(
        default=None,
        metadata={
            NEUTRAL: True,
            "help": "Budget: recommend no scale whose MMLU drop exceeds this (points); default: none.",
        },
    )

    max_fluency_drop: float | None = field(
        default=None,
        metadata={
            NEUTRAL: True,
            "help": "Budget (--judge contrast): recommend no scale whose replies' fluency falls more than "
            f"this below the judge's own replies told the target pole (nats/token; e.g. {DEFAULT_FLUENCY_BUDGET}).",
        },
    )

    force_restart: bool = force_restart()

    @property
    def budgets(self) -> dict[str, float | None]:
        return {budget.option: getattr(self, budget.option) for budget in BUDGETS}


@dataclass(frozen=True)
class Budget:
    """A side effect the recommendation keeps in bounds: the metric, its sign (-1: a drop is minus the
    delta), and whether a point that lacks the figure passes (MMLU may not have been measured)."""

    option: str
    metric: str
    label: str
    sign: float = 1.0
    missing_passes: bool = False


BUDGETS = (
    Budget("max_drift", "drift", "Drift <="),
    Budget("max_mmlu_drop", "mmlu_delta_points", "MMLU drop <=", sign=-1.0, missing_passes=True),
    Budget("max_fluency_drop", "fluency_vs_prompted", "fluency drop <=", sign=-1.0),
)


@dataclass(frozen=True)
class Recommendation:
    """The scale to use, the rule that chose it, and why in one sentence (None: no scale to recommend)."""

    scale: float | None
    rule: str  # "budgets" or "knee"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "rule": self.rule, "reason": self.reason}


@dataclass
class DialPoint:
    scale: float
    metrics: dict[str, Estimate | None]

    def value(self, name: str) -> float | None:
        estimate = self.metrics.get(name)
        return None if estimate is None else estimate.value


@dataclass
class DialResult(MeasuredOn):
    out: Path
    lora: bool
    budgets: dict[str, float | None]
    points: list[DialPoint]
    recommendation: Recommendation
    plan: dict[str, Any]
    reused: list[float] = field(default_factory=list)  # scales read back from an earlier, killed dial

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "out": str(self.out),
            **self.header(),
            "lora": self.lora,
            "budgets": self.budgets,
            "scales": [{"scale": p.scale, "metrics": metrics_dict(p.metrics)} for p in self.points],
            "recommendation": self.recommendation.to_dict(),
            "plan": self.plan,
            "reused": self.reused,
        }


def dial(config: DialConfig, *, progress: ProgressCallback = no_progress) -> DialResult:
    """Measure `config.model` at every scale and recommend one; raises AutocustomError on bad input."""
    from autocustom.data.io import load_dataset_dir
    from autocustom.runtime import resolve_device

    config.check(config.max_mmlu_drop)
    check_scales(config.scales)
    if config.max_fluency_drop is not None and config.judge != CONTRAST:
        raise UsageError("--max-fluency-drop reads the contrast judge's figures", "add --judge contrast")
    source = find_run(config.model)
    dataset = load_dataset_dir(config.data)
    toward = _toward(config, source, dataset.axis)
    base_reference = _base_reference(source)
    device = resolve_device(config.device)
    plan = config.plan(dataset, toward, device.type)
    out = Path(config.out) if config.out is not None else default_dial_dir(source)
    # the run as resolved (a relative path, the base it records) and the plan's fingerprint beside the options
    identity = {"model": str(Path(config.model).resolve()), "base": base_reference}
    settings = {**result_settings(config), **identity, "plan": plan.describe()["fingerprint"]}
    claim = claimed_output(out, DIAL_CONFIG, settings, command="dial", restart=config.force_restart)
    with claim, open_judge(config, dataset.axis, device=config.device) as judge:
        points, reused = _measure_scales(config, source, base_reference, plan, device, out, progress, judge)
    result = DialResult(
        **MeasuredOn.of(config, base_reference, dataset.axis, toward),
        out=out,
        lora=source.lora,
        budgets=config.budgets,
        points=points,
        recommendation=recommend(points, toward, **config.budgets),
        plan=plan.describe(),
        reused=reused,
    )
    _write(result)
    return result


def check_scales(scales: list[float]) -> None:
    """Scales are strengths: none negative, ascending, no repeats (one row and one file per scale)."""
    if not scales:
        raise UsageError("--scales is empty", "e.g. --scales 0,0.5,1,1.5,2")
    if not all(math.isfinite(s) for s in scales):
        raise UsageError(
            f"--scales {_text(scales)} holds a number that is not finite", "e.g. --scales 0,0.5,1"
        )
    if any(s < 0 for s in scales):
        raise UsageError(
            f"--scales {_text(scales)} has a negative scale: below 0 the model moves away from the "
            "target pole, which is the opposite pole's customization",
            "use scales >= 0 (train toward the other pole for the opposite direction)",
        )
    if any(b <= a for a, b in pairwise(scales)):
        raise UsageError(
            f"--scales {_text(scales)} is not ascending", f"e.g. --scales {_text(sorted(set(scales)))}"
        )


def recommend(
    points: list[DialPoint],
    toward: str,
    *,
    max_drift: float | None = None,
    max_mmlu_drop: float | None = None,
    max_fluency_drop: float | None = None,
) -> Recommendation:
    """The strongest scale inside the budgets; without budgets, the knee of BiasShift against Drift.

    Only a scale whose BiasShift interval lies above 0 can be chosen: a shift the pairs cannot tell
    from none is no reason to pay Drift. Budgets compare point estimates, as `shift-score`'s gates do.
    The knee is Kneedle's (Satopää et al. 2011): both curves scaled to [0, 1], the scale where
    normalised shift minus normalised Drift is largest, past which each unit of shift costs more Drift
    than before; a curve with no such bend (shift growing at least as fast as Drift) has no knee, and
    the reason says to set a budget. Written here because it is three lines of numpy, not worth the
    `kneed` dependency.
    """
    shifts = [p.metrics.get("bias_shift") for p in points]
    moved = [p for p, shift in zip(points, shifts, strict=True) if shift is not None and shift.low > 0]
    if not moved:
        n = next((shift.n for shift in shifts if shift is not None), 0)
        return Recommendation(
            None,
            "none",
            f"no scale moved the model toward {toward} with 95% confidence: every BiasShift interval "
            f"reaches 0 or below (n={n} pairs); measure on more pairs to choose",
        )
    limits = {"max_drift": max_drift, "max_mmlu_drop": max_mmlu_drop, "max_fluency_drop": max_fluency_drop}
    set_limits = [(budget, limits[budget.option]) for budget in BUDGETS if limits[budget.option] is not None]
    if set_limits:
        return _within_budgets(moved, set_limits)
    return _knee(points, moved)


def _within_budgets(moved: list[DialPoint], limits: list[tuple[Budget, float]]) -> Recommendation:
    def inside(point: DialPoint) -> bool:
        for budget, limit in limits:
            value = point.value(budget.metric)
            if value is None and not budget.missing_passes:
                return False
            if value is not None and budget.sign * value > limit:
                return False
        return True

    budget = ", ".join(f"{b.label} {limit}" for b, limit in limits)
    fitting = [p for p in moved if inside(p)]
    if not fitting:
        return Recommendation(
            None, "budgets", f"no scale that moved the model stays inside the budgets ({budget})"
        )
    best = max(fitting, key=lambda p: p.value("bias_shift") or 0.0)
    return Recommendation(
        best.scale, "budgets", f"the largest BiasShift ({best.metrics['bias_shift']}) with {budget}"
    )


def _knee(points: list[DialPoint], moved: list[DialPoint]) -> Recommendation:
    drift = np.array([p.value("drift") or 0.0 for p in points])
    shift = np.array([p.value("bias_shift") or 0.0 for p in points])
    if np.ptp(drift) == 0:  # Drift does not rise: nothing is traded, take the strongest shift
        best = max(moved, key=lambda p: p.value("bias_shift") or 0.0)
        return Recommendation(
            best.scale, "knee", "Drift does not change with the scale; the largest BiasShift"
        )
    gain = (shift - shift.min()) / (np.ptp(shift) or 1.0) - (drift - drift.min()) / np.ptp(drift)
    best = points[int(np.argmax(gain))]
    if best not in moved or gain.max() <= KNEE_MIN_GAIN:
        return Recommendation(
            None,
            "knee",
            "BiasShift against Drift has no knee over the measured scales (each further unit of shift "
            "costs no more Drift than the last): choose with a budget, --max-drift or --max-mmlu-drop",
        )
    return Recommendation(
        best.scale,
        "knee",
        f"the knee of BiasShift against Drift: past s={best.scale:g} each unit of shift costs more Drift "
        f"(BiasShift {best.metrics['bias_shift']}, Drift {best.metrics['drift']})",
    )


def _toward(config: DialConfig, source: RunSource, axis) -> str:
    recorded = source.axis
    if recorded is not None and recorded != axis.label:
        raise UsageError(
            f"{config.model} was trained on the axis {recorded}, but {config.data} is the axis {axis.label}",
            "pass the dataset the run was trained on (its run_config.json names it under `data`)",
        )
    toward = config.toward or source.toward
    if toward is None:
        raise UsageError(
            f"{config.model} records no target pole", f"pass --toward ({' or '.join(axis.poles)})"
        )
    return toward


def _base_reference(source: RunSource) -> str:
    base = source.base
    if not base:
        raise UsageError(
            f"{source.reference} names no base model", "re-save the adapter with its base_model_name_or_path"
        )
    return base


def default_dial_dir(source: RunSource) -> Path:
    """Where a run's dial lies unless `--out` says otherwise: inside the run (beside its model)."""
    return (source.run_dir or source.weights) / DIAL


def _measure_scales(
    config: DialConfig,
    source: RunSource,
    base: str,
    plan,
    device,
    out: Path,
    progress: ProgressCallback,
    judge=None,
) -> tuple[list[DialPoint], list[float]]:
    """Each scale measured (or read back), the model loaded only when a scale is still to measure;
    `judge` reads the free replies when one was asked for."""
    from autocustom.scoring.measure import Reference, measure
    from autocustom.shipping.strength import open_scaled

    done = {
        s: _read_point(dial_scale_file(out, s)) for s in config.scales if dial_scale_file(out, s).is_file()
    }
    todo = [s for s in config.scales if s not in done]
    if todo:
        scaled = open_scaled(source, base, device, config)
        reference = Reference(scaled.base, scaled.tokenizer, judge)
        for index, scale in enumerate(todo):
            progress(ProgressEvent("dial", index, len(todo), f"scale {scale:g}"))
            scaled.set_scale(scale)
            measured = measure(scaled.model, reference, plan, tokenizer=scaled.tokenizer)
            write_json_atomic(
                dial_scale_file(out, scale),
                {
                    "scale": scale,
                    "metrics": measured.metrics_dict(),
                    "margins": measured.observations.margins.tolist(),
                },
            )
            done[scale] = DialPoint(scale, measured.metrics)
        progress(ProgressEvent("dial", len(todo), len(todo), "done"))
    reused = [s for s in config.scales if s not in todo]
    return [done[s] for s in config.scales], reused


def _read_point(path: Path) -> DialPoint:
    data = read_json(path)
    return DialPoint(float(data["scale"]), metrics_from(data["metrics"]))


def _write(result: DialResult) -> None:
    from autocustom.report import dial_markdown, plot_dial

    data = result.to_dict()
    plot = plot_dial(data, result.out / DIAL_PLOT)
    write_json_atomic(result.out / DIAL_RESULT, data)
    write_text_atomic(result.out / DIAL_TABLE, dial_markdown(data, plot.name))


def _text(scales: list[float]) -> str:
    return ",".join(f"{s:g}" for s in scales)
