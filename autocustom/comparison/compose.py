"""`compose`: several customizations at once, each at its own scale, measured like the dial.

The parts (LoRA runs, full fine-tuning runs, steering vectors of one base; `composed_model.py` says
how they add) are measured together at every point of a grid of per-part scales, plus the point the
user asked for (`--run PATH=SCALE`) and each part alone at its scale there. At every point: each
part's axis toward its pole on that axis' test split, every other dataset's axis toward its first pole
(the off-axis shifts), and Drift and the MMLU change of the composition against the base, each with
its n and 95% interval. One file per point, so a stopped compose resumes.

Two readings follow. **Interference**: at the asked point, each part's BiasShift composed against the
same part alone at the same scale, paired item by item on its axis' pairs (the composed minus the
solo margins: the base's cancel), with its interval; an interval that excludes 0 says the other
parts changed this one's effect. **A recommended scale vector**: among the points that moved every
part's axis (each BiasShift interval above 0) inside the budgets (`--max-drift`, `--max-mmlu-drop`),
the one whose weakest axis moved most (ties: the larger total); said in words when none qualifies.
"""

from __future__ import annotations

import itertools
import math
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autocustom.comparison.composed_model import Part, check_parts, open_composition, read_part
from autocustom.comparison.selectivity import SPLIT, datasets_by_axis
from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL, config_record, force_restart, required, result_settings
from autocustom.fileio import read_json, write_json_atomic, write_text_atomic
from autocustom.layout import COMPOSE_CONFIG, COMPOSE_POINTS, COMPOSE_RESULT, COMPOSE_TABLE, claimed_output
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.options import MeasureSizes
from autocustom.scoring.stats import Estimate, format_estimate, metrics_dict, metrics_from

# each part off, half and whole: 3^k points show where the parts start to interfere, k = 2 in 9 points
DEFAULT_GRID = [0.0, 0.5, 1.0]


@dataclass
class ComposeConfig(MeasureSizes):
    """The parts and the scales to report (`runs`, "PATH=SCALE"), the datasets of their axes and of the
    off-axes, the grid and the budgets of the recommendation; the sizes as `shift-score` has them."""

    data: list[str] = required("Comma-separated datasets, one per axis: each run's axis, then any off-axes.")
    out: str = required("Directory for compose.json and compose.md (resumable per grid point).", neutral=True)
    # repeated --run (cli/compare_cmd.py); neutral: the resolved parts are recorded, a new scale adds points
    runs: list[str] = field(default_factory=list, metadata={"cli": False, NEUTRAL: True})
    grid: list[float] = field(
        default_factory=lambda: list(DEFAULT_GRID),
        metadata={NEUTRAL: True, "help": "Comma-separated scales every run takes in the grid (>= 0)."},
    )
    max_drift: float | None = field(
        default=None, metadata={NEUTRAL: True, "help": "Budget: recommend no point whose Drift exceeds this."}
    )
    max_mmlu_drop: float | None = field(
        default=None,
        metadata={NEUTRAL: True, "help": "Budget: recommend no point whose MMLU drop exceeds this (points)."},
    )
    force_restart: bool = force_restart()

    def __post_init__(self) -> None:
        self.out = str(self.out)
        self.point = tuple(_scale_of(run) for run in self.runs)
        self.references = [run.rpartition("=")[0] if "=" in run else run for run in self.runs]
        _check_scales([*self.point, *self.grid])
        if not self.grid:
            raise UsageError("--grid is empty", "e.g. --grid 0,0.5,1")


@dataclass
class Point:
    """The composition at `scales`: per axis, every figure of its measurement (BiasShift toward its
    pole; with --judge the replies'; Drift and MMLU in the first axis only, they are the whole's) and
    the per-pair margins, for the paired differences."""

    scales: tuple[float, ...]
    cells: dict[str, dict[str, Estimate | None]]  # by axis label
    margins: dict[str, list[float]]  # by axis label: per pair, the margin of the composition

    def shift(self, axis: str) -> Estimate | None:
        return self.cells[axis].get("bias_shift")

    def whole(self, name: str) -> Estimate | None:
        """Drift or MMLU change of the composition (measured with the first axis)."""
        return next((cell[name] for cell in self.cells.values() if cell.get(name) is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": list(self.scales),
            "cells": {axis: metrics_dict(metrics) for axis, metrics in self.cells.items()},
            "margins": self.margins,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Point:
        cells = {axis: metrics_from(metrics) for axis, metrics in data["cells"].items()}
        return cls(tuple(data["scales"]), cells, data.get("margins", {}))  # compose.json keeps no margins


@dataclass
class ComposeResult:
    out: Path
    parts: list[Part]
    axes: list[str]  # the parts' axes first, in their order, then the off-axes
    towards: dict[str, str]  # by axis: the pole its BiasShift is toward
    point: tuple[float, ...]
    points: list[Point]
    interference: list[dict[str, Any]]
    recommendation: dict[str, Any]
    plans: dict[
        str, dict[str, Any]
    ]  # by axis: the plan's description (its pair ids: what the margins are of)
    reused: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": SPLIT,
            "parts": [
                {"run": p.reference, "kind": p.kind, "axis": p.axis, "toward": p.toward} for p in self.parts
            ],
            "base": self.parts[0].base,
            "axes": self.axes,
            "towards": self.towards,
            "point": list(self.point),
            "points": [{k: v for k, v in p.to_dict().items() if k != "margins"} for p in self.points],
            "interference": self.interference,
            "recommendation": self.recommendation,
            "plans": self.plans,
            "reused": self.reused,
            "settings": self.settings,
        }


def compose(config: ComposeConfig, *, progress: ProgressCallback = no_progress) -> ComposeResult:
    """Measure the composition at every point; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    config.check_sizes()
    parts = [read_part(reference) for reference in config.references]
    check_parts(parts)
    datasets = datasets_by_axis(config.data, parts)
    own = [part.axis for part in parts]
    axes = own + [label for label in datasets if label not in own]
    towards = {label: datasets[label].axis.pole_a for label in datasets} | {p.axis: p.toward for p in parts}
    device = resolve_device(config.device)
    plans = {label: config.plan_for(datasets[label], SPLIT, towards[label], device.type) for label in axes}
    # Drift and MMLU belong to the composition, not to an axis: measured once, with the first axis
    plans = {
        label: plan if label == axes[0] else replace(plan, mmlu=(), drift_texts=())
        for label, plan in plans.items()
    }
    settings = {
        **result_settings(config),
        "runs": [str(Path(p.reference).resolve()) for p in parts],
        "plans": {label: plan.describe()["fingerprint"] for label, plan in plans.items()},
    }
    out = Path(config.out)
    with claimed_output(out, COMPOSE_CONFIG, settings, command="compose", restart=config.force_restart):
        wanted = grid_points(config.grid, config.point)
        points, reused = _measure_points(parts, wanted, plans, datasets, config, device, out, progress)
    by_scales = {p.scales: p for p in points}
    result = ComposeResult(
        out,
        parts,
        axes,
        towards,
        config.point,
        points,
        interference(parts, config.point, by_scales, config.bootstrap, config.seed),
        recommend(points, parts, config.max_drift, config.max_mmlu_drop),
        {label: plan.describe() for label, plan in plans.items()},
        reused,
        config_record(config),
    )
    _write(result)
    return result


def grid_points(grid: list[float], point: tuple[float, ...]) -> list[tuple[float, ...]]:
    """Every scale vector of the grid, then the asked point and each part alone at its scale there."""
    alone = [tuple(s if j == i else 0.0 for j, s in enumerate(point)) for i in range(len(point))]
    wanted = [*itertools.product(sorted(set(grid)), repeat=len(point)), point, *alone]
    return list(dict.fromkeys(tuple(float(s) for s in p) for p in wanted))


def _measure_points(
    parts, wanted, plans, datasets, config, device, out: Path, progress
) -> tuple[list[Point], int]:
    """Each point measured (the composition loaded once, when one is still to measure) or read back."""
    from autocustom.scoring.judge import open_judge
    from autocustom.scoring.measure import Reference

    files = {scales: out / COMPOSE_POINTS / f"{_label(scales)}.json" for scales in wanted}
    done = {scales: Point.from_dict(read_json(path)) for scales, path in files.items() if path.is_file()}
    todo = [scales for scales in wanted if scales not in done]
    if todo:
        composition = open_composition(parts, device, config)
        with ExitStack() as stack:
            # the base side is the same at every point: one Reference per axis pays for it once
            references = {
                label: Reference(
                    composition.base,
                    composition.tokenizer,
                    stack.enter_context(open_judge(config, datasets[label].axis, device=config.device)),
                )
                for label in plans
            }
            for index, scales in enumerate(todo):
                progress(ProgressEvent("compose", index, len(todo), _label(scales)))
                composition.set_scales(scales)
                done[scales] = _measure_point(composition, scales, plans, references)
                write_json_atomic(files[scales], done[scales].to_dict())
        progress(ProgressEvent("compose", len(todo), len(todo), "done"))
    return [done[scales] for scales in wanted], len(wanted) - len(todo)


def _measure_point(composition, scales: tuple[float, ...], plans, references) -> Point:
    from autocustom.scoring.measure import measure

    cells, margins = {}, {}
    for label, plan in plans.items():
        measured = measure(composition.model, references[label], plan, tokenizer=composition.tokenizer)
        cells[label] = measured.metrics
        margins[label] = measured.observations.margins.tolist()
    return Point(scales, cells, margins)


def interference(
    parts: list[Part],
    point: tuple[float, ...],
    by_scales: dict[tuple[float, ...], Point],
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Per part at the asked point: its BiasShift composed, alone at the same scale, and the paired
    difference composed - alone over its axis' pairs (margins: the base's cancel)."""
    from autocustom.scoring.stats import paired_difference

    composed = by_scales[tuple(float(s) for s in point)]
    rows = []
    for i, part in enumerate(parts):
        alone = by_scales[tuple(float(s) if j == i else 0.0 for j, s in enumerate(point))]
        difference = paired_difference(
            composed.margins[part.axis], alone.margins[part.axis], n_boot=n_boot, seed=seed
        )
        rows.append(
            {
                "run": part.reference,
                "axis": part.axis,
                "toward": part.toward,
                "scale": point[i],
                "composed": composed.shift(part.axis).to_dict(),
                "alone": alone.shift(part.axis).to_dict(),
                "difference": difference.to_dict(),
                "finding": _interference_words(part, difference),
            }
        )
    return rows


def _interference_words(part: Part, difference: Estimate) -> str:
    if not difference.excludes_zero:
        return (
            f"{part.axis} toward {part.toward}: the other parts do not change its BiasShift measurably "
            f"(composed - alone {difference})"
        )
    way = "adds to" if difference.value > 0 else "takes from"
    return f"{part.axis} toward {part.toward}: the composition {way} its BiasShift (composed - alone {difference})"


def recommend(
    points: list[Point], parts: list[Part], max_drift: float | None, max_mmlu_drop: float | None
) -> dict[str, Any]:
    """The point whose weakest axis moved most among those that moved every axis inside the budgets."""
    own = [part.axis for part in parts]
    moved = [p for p in points if all(p.shift(a) is not None and p.shift(a).low > 0 for a in own)]
    budgets = {"max_drift": max_drift, "max_mmlu_drop": max_mmlu_drop}
    stated = (
        ", ".join(f"{name} {limit}" for name, limit in budgets.items() if limit is not None) or "none set"
    )
    if not moved:
        reason = "no point moved every axis with 95% confidence (each BiasShift interval above 0); measure on more pairs"
        return {"scales": None, "budgets": budgets, "reason": reason}
    inside = [p for p in moved if inside_budgets(p, max_drift, max_mmlu_drop)]
    if not inside:
        return {
            "scales": None,
            "budgets": budgets,
            "reason": f"no point that moved every axis stays inside the budgets ({stated})",
        }
    best = max(inside, key=lambda p: (min(p.shift(a).value for a in own), sum(p.shift(a).value for a in own)))
    shifts = ", ".join(f"{a} {best.shift(a)}" for a in own)
    caveat = (
        "" if stated != "none set" else "; no budget set, so Drift and MMLU did not limit it (--max-drift)"
    )
    return {
        "scales": list(best.scales),
        "budgets": budgets,
        "reason": f"the weakest axis moved most among the {len(inside)} points that moved every axis "
        f"(budgets: {stated}): {shifts}, Drift {best.whole('drift')}{caveat}",
    }


def inside_budgets(point: Point, max_drift: float | None, max_mmlu_drop: float | None) -> bool:
    """Drift and MMLU drop of the composition at `point` within the budgets (point estimates, as the
    gates; an unset budget passes)."""
    drift, mmlu = point.whole("drift"), point.whole("mmlu_delta_points")
    if max_drift is not None and (drift is None or drift.value > max_drift):
        return False
    return not (max_mmlu_drop is not None and mmlu is not None and -mmlu.value > max_mmlu_drop)


def compose_markdown(data: dict[str, Any]) -> str:
    """The grid (scales x axes' BiasShift, Drift, MMLU), the asked point against each part alone, and
    the recommendation, in words."""
    parts = data["parts"]
    lines = [
        f"# Composition ({data['split']} split, base {data['base']})",
        "",
        "Parts: " + "; ".join(f"{p['run']} ({p['kind']}, {p['axis']} toward {p['toward']})" for p in parts),
        "",
        "BiasShift (nats/token, vs the base) toward the pole named; Drift and MMLU Δ of the composition.",
        "",
        "| scales | "
        + " | ".join(f"{a} → {data['towards'][a]}" for a in data["axes"])
        + " | Drift | MMLU Δ (pts) |",
        "|---|" + "---|" * (len(data["axes"]) + 2),
    ]
    first = data["axes"][0]  # Drift and MMLU are measured with the first axis
    for point in data["points"]:
        cells = point["cells"]
        shifts = " | ".join(format_estimate(cells[a].get("bias_shift")) for a in data["axes"])
        lines.append(
            f"| {_label(point['scales'])} | {shifts} | {format_estimate(cells[first].get('drift'))} | "
            f"{format_estimate(cells[first].get('mmlu_delta_points'))} |"
        )
    lines += ["", f"## At {_label(data['point'])}: each part composed against alone", ""]
    lines += [f"- {row['finding']}" for row in data["interference"]]
    recommendation = data["recommendation"]
    chosen = "none" if recommendation["scales"] is None else _label(recommendation["scales"])
    lines += ["", f"## Recommended scales: {chosen}", "", recommendation["reason"], ""]
    return "\n".join(lines)


def _write(result: ComposeResult) -> None:
    data = result.to_dict()
    write_json_atomic(result.out / COMPOSE_RESULT, data)
    write_text_atomic(result.out / COMPOSE_TABLE, compose_markdown(data))


def _scale_of(run: str) -> float:
    if "=" not in run:
        return 1.0
    path, _, text = run.rpartition("=")
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--run {run}: '{text}' is not a scale", f"e.g. --run {path}=0.75") from None


def _check_scales(scales: list[float]) -> None:
    for scale in scales:
        if not math.isfinite(scale) or scale < 0:
            raise UsageError(
                f"scale {scale:g} is negative or not finite: below 0 a part moves away from its pole",
                "use scales >= 0 in --run PATH=SCALE and --grid",
            )


def _label(scales) -> str:
    return "x".join(f"{s:g}" for s in scales)
