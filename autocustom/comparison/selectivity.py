"""`selectivity`: what each customization does to the other axes, measured on their held-out pairs.

The method promises *selective* customization: moving a model along one axis and leaving the rest.
No peer tool measures how axes interfere; this runs the shared measurement layer once per run and
axis: the run's own axis toward its target pole, every other axis toward that axis' first pole, on
each dataset's test split (topics no run was trained on), against the run's own base. Drift and the
MMLU change belong to the run, not to an axis: they are measured once, in the run's own axis cell.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autocustom.errors import UsageError
from autocustom.fields import config_record, force_restart, required, result_settings
from autocustom.fileio import read_json, write_json_atomic, write_text_atomic
from autocustom.layout import (
    SELECTIVITY_CELLS,
    SELECTIVITY_CONFIG,
    SELECTIVITY_PLOT,
    SELECTIVITY_RESULT,
    SELECTIVITY_TABLE,
    RunSource,
    claimed_output,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.options import MeasureSizes
from autocustom.scoring.stats import Estimate, metrics_dict, metrics_from

SPLIT = "test"  # held-out topics: a shift there is a shift of the model, not of memorised pairs


@dataclass
class SelectivityConfig(MeasureSizes):
    """Runs and the datasets of the axes to measure them on; the sizes as `shift-score` has them."""

    runs: list[str] = required("Comma-separated training runs (train or run directories).")
    data: list[str] = required("Comma-separated datasets, one per axis; each run's own axis among them.")
    out: str = required(
        "Directory for selectivity.json, .md and .png (resumable per run and axis).", neutral=True
    )
    force_restart: bool = force_restart()

    def __post_init__(self) -> None:
        self.out = str(self.out)
        if not self.runs or not self.data:
            raise UsageError("selectivity needs at least one run and one dataset", "pass --runs and --data")
        if len(set(self.runs)) != len(self.runs):
            raise UsageError(f"a run is listed twice in --runs {','.join(self.runs)}", "list each run once")


@dataclass
class Cell:
    """One run measured on one axis: BiasShift toward `toward` (and Drift, MMLU in its own axis)."""

    run: str
    axis: str  # "formal:casual"
    toward: str
    own_axis: bool  # the axis the run was trained on
    metrics: dict[str, Estimate | None]

    @property
    def shift(self) -> Estimate | None:
        return self.metrics.get("bias_shift")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": metrics_dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(data["run"], data["axis"], data["toward"], data["own_axis"], metrics_from(data["metrics"]))


@dataclass
class SelectivityResult:
    out: Path
    runs: list[str]
    axes: list[str]
    cells: list[Cell]
    reused: int = 0  # cells read back from an earlier, stopped run
    settings: dict[str, Any] = field(default_factory=dict)

    def cell(self, run: str, axis: str) -> Cell:
        return next(c for c in self.cells if c.run == run and c.axis == axis)

    def findings(self) -> list[str]:
        """One line per run in words: its own axis' move, and every off-axis move whose interval
        excludes 0 (the customization was not selective there)."""
        return [_finding(run, [c for c in self.cells if c.run == run]) for run in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": SPLIT,
            "runs": self.runs,
            "axes": self.axes,
            "cells": [c.to_dict() for c in self.cells],
            "findings": self.findings(),
            "reused": self.reused,
            "settings": self.settings,
        }


def selectivity(config: SelectivityConfig, *, progress: ProgressCallback = no_progress) -> SelectivityResult:
    """Measure every run on every dataset's test split; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device
    from autocustom.shipping.strength import recorded_run

    config.check_sizes()
    runs = [recorded_run(reference) for reference in config.runs]
    datasets = datasets_by_axis(config.data, runs)
    device = resolve_device(config.device)
    settings = {
        **result_settings(config),
        "runs": [str(Path(r.reference).resolve()) for r in runs],
        "bases": [r.base for r in runs],
        "plans": {
            label: config.plan_for(dataset, SPLIT, dataset.axis.pole_a, device.type).describe()["fingerprint"]
            for label, dataset in datasets.items()
        },
    }
    out = Path(config.out)
    with claimed_output(
        out, SELECTIVITY_CONFIG, settings, command="selectivity", restart=config.force_restart
    ):
        cells, reused = [], 0
        for index, run in enumerate(runs):
            progress(ProgressEvent("selectivity", index, len(runs), run.reference))
            measured, read_back = _measure_run(index, run, datasets, config, device, out)
            cells += measured
            reused += read_back
        progress(ProgressEvent("selectivity", len(runs), len(runs), "done"))
    result = SelectivityResult(
        out, [r.reference for r in runs], list(datasets), cells, reused, config_record(config)
    )
    _write(result)
    return result


def datasets_by_axis(references: list[str], runs: list[Any]) -> dict[str, Any]:
    """The datasets by axis label, in the order given; one axis twice is refused (which one counts?),
    and so is a run (anything with `reference`, `axis`, `data`) whose axis none of them is."""
    from autocustom.data.io import load_dataset_dir

    datasets: dict[str, Any] = {}
    for reference in references:
        dataset = load_dataset_dir(reference)
        label = dataset.axis.label
        if label in datasets:
            raise UsageError(f"two datasets of the axis {label} in --data", "pass one dataset per axis")
        if not dataset.split(SPLIT):
            raise UsageError(
                f"{reference} has no {SPLIT} pairs to measure on", "regenerate it with a test split"
            )
        datasets[label] = dataset
    for run in runs:
        if run.axis not in datasets:
            raise UsageError(
                f"{run.reference} is of the axis {run.axis}, and no --data dataset is of that axis",
                f"add its dataset to --data (the run records it: {run.data})",
            )
    return datasets


def _measure_run(
    index: int, run: RunSource, datasets: dict[str, Any], config: SelectivityConfig, device: Any, out: Path
) -> tuple[list[Cell], int]:
    """The run's cells, measured (its model and base loaded once) or read back; and how many were read."""
    from autocustom.scoring.judge import open_judge
    from autocustom.scoring.measure import Reference, measure
    from autocustom.shipping.strength import open_scaled

    files = {label: out / SELECTIVITY_CELLS / f"{index:02d}-{_slug(label)}.json" for label in datasets}
    cells = {label: Cell.from_dict(read_json(path)) for label, path in files.items() if path.is_file()}
    todo = [label for label in datasets if label not in cells]
    if todo:
        loaded = open_scaled(run, run.base, device, config)  # at its trained strength (scale 1)
        for label in todo:
            own = label == run.axis
            toward = run.toward if own else datasets[label].axis.pole_a
            plan = config.plan_for(datasets[label], SPLIT, toward, device.type)
            if not own:  # Drift and MMLU are the run's, not the axis': measured once, in its own axis
                plan = replace(plan, mmlu=(), drift_texts=())
            # --judge: the replies read by this axis' judge (the contrast judge told this axis' poles)
            with open_judge(config, datasets[label].axis, device=config.device) as judge:
                reference = Reference(loaded.base, loaded.tokenizer, judge)
                metrics = measure(loaded.model, reference, plan, tokenizer=loaded.tokenizer).metrics
            cells[label] = Cell(run.reference, label, toward, own, metrics)
            write_json_atomic(files[label], cells[label].to_dict())
    return [cells[label] for label in datasets], len(datasets) - len(todo)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label)


def _finding(run: str, cells: list[Cell]) -> str:
    """What one run did, in words: its own axis, then the off-axis moves its intervals can show."""
    own = next(c for c in cells if c.own_axis)
    moved = own.shift is not None and own.shift.excludes_zero
    line = f"{run}: toward {own.toward} on its own axis {own.shift}" + (
        "" if moved else ", not distinguishable from 0"
    )
    off = [c for c in cells if not c.own_axis and c.shift is not None]
    spilled = [c for c in off if c.shift.excludes_zero]
    if not off:
        return line + "; no other axis measured."
    if not spilled:
        return line + f"; selective: no off-axis BiasShift excludes 0 on the {len(off)} other axes measured."
    named = "; ".join(f"{c.axis} toward {c.toward} {c.shift}" for c in spilled)
    chance = f"at 95% per interval, about 1 in 20 off-axis intervals excludes 0 with no real move ({len(off)} read)"
    return line + f"; NOT selective: it also moved {named} (interval excludes 0; {chance})."


def selectivity_markdown(data: dict[str, Any], plot: str) -> str:
    """The table (runs x axes, BiasShift with its interval and n; the run's own axis in bold) beside
    the heat map, then Drift and MMLU per run and the findings in words."""
    from autocustom.scoring.stats import format_estimate

    cells = {(c["run"], c["axis"]): c for c in data["cells"]}
    lines = [
        f"# Selectivity ({data['split']} split)",
        "",
        f"![BiasShift, runs x axes]({plot})",
        "",
        "BiasShift (nats/token, vs the run's base) toward the pole named; **bold**: the run's own axis, "
        "toward its target; other axes toward their first pole.",
        "",
        "| run | " + " | ".join(data["axes"]) + " | Drift | MMLU Δ (pts) |",
        "|---|" + "---|" * (len(data["axes"]) + 2),
    ]
    for run in data["runs"]:
        row, own = [], None
        for axis in data["axes"]:
            cell = cells[(run, axis)]
            shift = cell["metrics"].get("bias_shift")
            text = f"{format_estimate(shift)} n={shift['n']} → {cell['toward']}" if shift else "–"
            row.append(f"**{text}**" if cell["own_axis"] else text)
            own = cell if cell["own_axis"] else own
        drift, mmlu = (own["metrics"].get(name) for name in ("drift", "mmlu_delta_points"))
        lines.append(
            f"| {run} | " + " | ".join(row) + f" | {format_estimate(drift)} | {format_estimate(mmlu)} |"
        )
    lines += ["", *(f"- {finding}" for finding in data["findings"]), ""]
    return "\n".join(lines)


def _write(result: SelectivityResult) -> None:
    from autocustom.report import plot_selectivity

    data = result.to_dict()
    plot = plot_selectivity(data, result.out / SELECTIVITY_PLOT)
    write_json_atomic(result.out / SELECTIVITY_RESULT, data)
    write_text_atomic(result.out / SELECTIVITY_TABLE, selectivity_markdown(data, plot.name))
