"""`steer`: a steering vector from the train pairs, its layer and coefficient chosen on validation.

The vector is the per-layer mean difference of the poles' activations (`steering.mean_difference`).
Which layer (or range) and how strong is chosen on the *validation* split, never on test: every
(layers, coefficient) of a small grid is measured there (BiasShift and Drift, through the shared
measurement layer) and the choice is the largest BiasShift whose Drift stays inside a budget, so a
coefficient that only breaks the model cannot win. The grid, each point's figures and the reason for
the choice are written beside the vector; the chosen vector is then measured on the test split like
any other method. Every grid point is kept in its own file, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.data.io import Dataset, load_dataset_dir
from autocustom.errors import UsageError
from autocustom.fields import DATASET_HELP, NEUTRAL, force_restart, required, result_settings
from autocustom.fileio import read_json, write_json_atomic
from autocustom.layout import (
    STEER_CONFIG,
    STEER_GGUF,
    STEER_RESULT,
    STEER_VECTOR,
    claim_output,
    steer_grid_file,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.options import MeasureOptions
from autocustom.scoring.stats import Estimate, metrics_dict, metrics_from
from autocustom.steering.vector import Layers, SteeringVector, layers_label

SCHEMA = "autocustom.steer/1"
# multiples of the mean difference: 1 adds the average gap between the poles' activations; the
# field's grids (AxBench, repeng) span about an order of magnitude, past which text degenerates
DEFAULT_COEFFICIENTS = [0.5, 1.0, 2.0, 4.0, 8.0]
# nats/token of KL on neutral text: what the demo's 20-step trainings cost (docs/results.md, 0.25-0.26),
# so the steering row is not allowed more collateral change than the trained rows it is compared with
DEFAULT_MAX_DRIFT = 0.25
GRID_METRICS = ("bias_shift", "drift", "lean")


@dataclass(kw_only=True)
class SteerConfig(MeasureOptions):
    """A steering run: the model, the data, the grid of layers and coefficients, the Drift budget.

    The measurement options (`--split`, sizes, `--bootstrap`, loading) are `shift-score`'s; `--split`
    is where the chosen vector is measured (the grid is always measured on validation).
    """

    data: str = required(DATASET_HELP)
    toward: str = required("The pole the vector steers toward.")
    out: str = required(
        "Steering directory (resumable): the vector, its GGUF control vector, steer.json.", neutral=True
    )
    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "Model to steer: packaged name, HF directory or hub id."}
    )
    layers: list[str] = field(
        default_factory=list,
        metadata={
            NEUTRAL: True,
            "help": "Candidate layers or ranges, comma-separated (e.g. 8,6-10); "
            "default: five layers over 25-75% of the depth.",
        },
    )
    coefficients: list[float] = field(
        default_factory=lambda: list(DEFAULT_COEFFICIENTS),
        metadata={
            NEUTRAL: True,
            "help": "Candidate coefficients (multiples of the mean difference), comma-separated.",
        },
    )
    max_drift: float = field(
        default=DEFAULT_MAX_DRIFT,
        metadata={
            NEUTRAL: True,
            "help": "Budget: choose no grid point whose validation Drift exceeds this (nats/token).",
        },
    )

    force_restart: bool = force_restart()

    def check(self, max_mmlu_drop: float | None = None) -> None:
        super().check(max_mmlu_drop)
        if not self.coefficients or any(c == 0 or not math.isfinite(c) for c in self.coefficients):
            raise UsageError(
                "--coefficients must be non-empty, non-zero and finite", "e.g. --coefficients 1,2,4"
            )
        if self.max_drift <= 0:
            raise UsageError(f"--max-drift {self.max_drift} must be positive", "e.g. --max-drift 0.25")


@dataclass(frozen=True)
class GridPoint:
    layers: Layers
    coefficient: float
    metrics: dict[str, Estimate | None]

    def value(self, name: str) -> float | None:
        estimate = self.metrics.get(name)
        return None if estimate is None else estimate.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "coefficient": self.coefficient,
            "metrics": metrics_dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridPoint:
        metrics = metrics_from(data["metrics"])
        return cls(tuple(data["layers"]), float(data["coefficient"]), metrics)


@dataclass
class Fitted:
    """A fitted steering vector at its chosen point, and the validation grid it was chosen on."""

    vector: SteeringVector
    grid: list[GridPoint]
    reason: str
    validation_plan: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.vector.layers),
            "coefficient": self.vector.coefficient,
            "reason": self.reason,
            "grid": [p.to_dict() for p in self.grid],
            "validation_plan": self.validation_plan,
        }


@dataclass
class SteerResult:
    out: Path
    model: str
    axis: dict[str, str]
    toward: str
    fitted: Fitted
    split: str
    metrics: dict[str, Estimate | None]
    plan: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "out": str(self.out),
            "model": self.model,
            "axis": self.axis,
            "toward": self.toward,
            **self.fitted.to_dict(),
            "split": self.split,
            "metrics": metrics_dict(self.metrics),
            "plan": self.plan,
            "files": {"vector": str(self.out / STEER_VECTOR), "gguf": str(self.out / STEER_GGUF)},
        }

    def summary_lines(self) -> list[str]:
        vector = self.fitted.vector
        shift = self.metrics.get("bias_shift")
        return [
            f"chosen on validation: layer {layers_label(vector.layers)}, coefficient {vector.coefficient:g}: "
            f"{self.fitted.reason}",
            f"{self.split} BiasShift toward {self.toward}: {shift}; Drift: {self.metrics.get('drift')}",
            f"wrote {self.out / STEER_VECTOR} and {self.out / STEER_GGUF}",
            f"llama.cpp: llama-cli -m MODEL.gguf --control-vector-scaled {self.out / STEER_GGUF} "
            f"{vector.coefficient:g}",
        ]


def steer(config: SteerConfig, *, progress: ProgressCallback = no_progress) -> SteerResult:
    """Fit, choose on validation and measure on `config.split`; raises AutocustomError on bad input."""
    from autocustom.llm.models import load_model
    from autocustom.runtime import resolve_device
    from autocustom.scoring.measure import Reference, measure
    from autocustom.steering.vector import Steered

    config.check()
    dataset = load_dataset_dir(config.data)
    device = resolve_device(config.device)
    plan = config.plan(dataset, config.toward, device.type)
    loaded = load_model(config.model, device=device, options=config, device_map=config.device_map)
    reference = Reference(loaded.model, loaded.tokenizer)
    fitted = fit_steering(config, dataset, reference, progress=progress)
    progress(ProgressEvent("measure", 0, 1, config.split))
    measured = measure(Steered(loaded.model, fitted.vector), reference, plan)
    result = SteerResult(
        out=Path(config.out),
        model=config.model,
        axis=dataset.axis.to_dict(),
        toward=config.toward,
        fitted=fitted,
        split=config.split,
        metrics=measured.metrics,
        plan=plan.describe(),
    )
    write_json_atomic(Path(config.out) / STEER_RESULT, result.to_dict())
    return result


def fit_steering(
    config: SteerConfig, dataset: Dataset, reference, *, progress: ProgressCallback = no_progress
) -> Fitted:
    """The vector from the train split, every grid point measured on validation, the choice written.

    `reference` holds the loaded base model (and memoises its validation margins for the grid).
    """
    from autocustom.runtime import resolve_device
    from autocustom.steering.vector import decoder_layers, mean_difference, parse_layers

    model, tokenizer = reference.model, reference.tokenizer
    out = Path(config.out)
    claim_output(out, STEER_CONFIG, result_settings(config), command="steer", restart=config.force_restart)
    candidates = parse_layers(config.layers, len(decoder_layers(model)))
    validation = _validation_plan(config, dataset, resolve_device(config.device).type)
    vector_file = out / STEER_VECTOR
    metadata = {
        "axis": dataset.axis.label,
        "toward": config.toward,
        "model": config.model,
        "model_type": str(getattr(model.config, "model_type", "")),
    }
    if vector_file.is_file():  # a resumed run: the directions are fitted once
        directions = SteeringVector.load(vector_file).directions
    else:
        progress(ProgressEvent("steering vector", 0, 1, "train split"))
        poles = validation.poles  # checked once, by the plan
        directions = mean_difference(model, tokenizer, dataset.split("train"), poles.toward, poles.opposite)
        SteeringVector(directions, metadata=metadata).save(vector_file)
    unchosen = SteeringVector(directions, metadata=metadata)
    grid = _measure_grid(out, unchosen, candidates, config, reference, validation, progress)
    chosen, reason = choose(grid, config.max_drift)
    vector = SteeringVector(directions, chosen.layers, chosen.coefficient, metadata)
    vector.save(vector_file)
    vector.write_gguf(out / STEER_GGUF)
    return Fitted(vector, grid, reason, validation.describe())


def _validation_plan(config: SteerConfig, dataset: Dataset, device_type: str):
    """The grid's plan: the validation pairs and the Drift texts (the budget needs Drift), no MMLU."""
    from autocustom.scoring.plan import make_plan

    if not dataset.splits.get("validation"):
        raise UsageError(
            f"the validation split of {config.data} is empty: steering chooses its layer there",
            "regenerate with more subareas",
        )
    return make_plan(
        dataset,
        "validation",
        config.toward,
        device_type=device_type,
        drift_texts=config.drift_texts,
        mmlu=False,
        bootstrap=config.bootstrap,
        bootstrap_seed=config.seed,
        batch_size=config.batch_size,
    )


def _measure_grid(out: Path, vector: SteeringVector, candidates, config, reference, plan, progress):
    from autocustom.scoring.measure import measure
    from autocustom.steering.vector import Steered

    grid, total = [], len(candidates) * len(config.coefficients)
    for layers in candidates:
        for coefficient in config.coefficients:
            progress(
                ProgressEvent(
                    "steering grid", len(grid), total, f"layer {layers_label(layers)} x {coefficient:g}"
                )
            )
            cell = steer_grid_file(out, layers_label(layers), coefficient)
            if not cell.is_file():
                point = SteeringVector(vector.directions, layers, coefficient, vector.metadata)
                measured = measure(Steered(reference.model, point), reference, plan)
                metrics = {name: measured.metrics[name] for name in GRID_METRICS}
                write_json_atomic(cell, GridPoint(layers, coefficient, metrics).to_dict())
            grid.append(GridPoint.from_dict(read_json(cell)))
    progress(ProgressEvent("steering grid", total, total, "done"))
    return grid


def choose(grid: list[GridPoint], max_drift: float) -> tuple[GridPoint, str]:
    """The largest validation BiasShift with Drift inside the budget (the least Drift when none is)."""
    inside = [p for p in grid if (p.value("drift") or 0.0) <= max_drift]
    if not inside:
        least = min(grid, key=lambda p: p.value("drift") or 0.0)
        return least, (
            f"every grid point's validation Drift exceeds {max_drift:g}; the least Drift "
            f"({least.metrics['drift']}) was taken: try smaller --coefficients"
        )
    best = max(inside, key=lambda p: p.value("bias_shift") or float("-inf"))
    shift = best.metrics["bias_shift"]
    reason = f"the largest validation BiasShift ({shift}) with Drift <= {max_drift:g}"
    if shift is None or shift.low <= 0:
        reason += "; its interval reaches 0, so the validation pairs cannot tell it from no shift"
    return best, reason
