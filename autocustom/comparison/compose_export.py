"""`export-composition`: a composition at one measured scale vector as one merged model that plain
transformers loads (neither peft nor autocustom needed), checked against what `compose` measured.

LoRA parts are merged into the base at their scales (peft's `merge_and_unload` merges every active
adapter with its current scaling), full fine-tuning parts are already summed into the weights
(`composed_model.py`). A steering part is refused: it adds to activations, and a Llama-style layer has
no bias to hold it (its llama.cpp control vector, `control_vector.gguf`, is its export). Only a scale
vector that `compose` measured can be exported, because the check compares the export's margins on
every axis with the ones measured at that point (1e-4, as `export` compares with the dial).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.comparison.compose import Point
from autocustom.comparison.composed_model import open_composition, read_part
from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL, required
from autocustom.fileio import read_json, require_new_dir, staged_dir, write_json_atomic, write_text_atomic
from autocustom.layout import COMPOSE_POINTS, COMPOSE_RESULT, EXPORT_CARD, EXPORT_RECORD
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.shipping.export import MARGIN_TOLERANCE, Check, hub_id, load_plain, public_reference

SCHEMA = "autocustom.export-composition/1"


@dataclass
class ComposeExportConfig:
    """Which composition, at which scales, where."""

    compose: str = required("A `compose` directory (it holds compose.json).")
    out: str = required("Export directory (must be new or empty).")
    scales: list[float] | None = field(
        default=None,
        metadata={
            "help": "Comma-separated scales, one per run, a point compose measured; default: its recommendation."
        },
    )
    device: str | None = field(default=None, metadata={NEUTRAL: True, "help": "auto, cpu, cuda or cuda:N."})


@dataclass
class ComposeExportResult:
    out: Path
    base: str
    parts: list[dict[str, Any]]  # run, kind, axis, toward, scale
    checks: list[Check]
    figures: dict[str, dict[str, Any]]  # by axis: compose's figures at this point
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "out": str(self.out),
            "base": self.base,
            "parts": self.parts,
            "checks": [check.to_dict() for check in self.checks],
            "passed": self.passed,
            "figures": self.figures,
            "files": self.files,
        }

    def record(self) -> dict[str, Any]:
        """export.json: without this machine's paths (it is published with the export)."""
        parts = [{**part, "run": public_reference(part["run"])} for part in self.parts]
        return {**self.to_dict(), "out": self.out.name, "base": public_reference(self.base), "parts": parts}


def export_composition(
    config: ComposeExportConfig, *, progress: ProgressCallback = no_progress
) -> ComposeExportResult:
    """Merge, save and check; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    composed = read_json(Path(config.compose) / COMPOSE_RESULT)
    scales = _scales(config, composed)
    point = _measured_point(Path(config.compose), composed, scales)
    parts = [read_part(part["run"]) for part in composed["parts"]]
    steering = [part.reference for part in parts if part.kind == "steering"]
    if steering:
        raise UsageError(
            f"{', '.join(steering)} is a steering vector: it adds to activations, which a merged model "
            "cannot hold",
            "compose without it, and ship the vector as its llama.cpp control vector (control_vector.gguf)",
        )
    out = Path(config.out)
    require_new_dir(out)
    device = resolve_device(config.device)
    with staged_dir(out) as staging:
        progress(ProgressEvent("export", 0, 2, "merge"))
        composition = open_composition(parts, device)
        composition.set_scales(scales)
        model = composition.model
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        merged.save_pretrained(staging)
        composition.tokenizer.save_pretrained(staging)
        del merged, model, composition
        progress(ProgressEvent("export", 1, 2, "check"))
        checks = _checks(staging, composed, point, device)
        described = [
            {"run": p["run"], "kind": p["kind"], "axis": p["axis"], "toward": p["toward"], "scale": s}
            for p, s in zip(composed["parts"], scales, strict=True)
        ]
        figures = {
            axis: {k: v for k, v in cell.items() if v} for axis, cell in point.to_dict()["cells"].items()
        }
        result = ComposeExportResult(out, composed["base"], described, checks, figures)
        write_text_atomic(staging / EXPORT_CARD, _card(result))
        write_json_atomic(staging / EXPORT_RECORD, result.record())
        result.files = sorted(p.name for p in staging.iterdir())
    progress(ProgressEvent("export", 2, 2, "done"))
    return result


def _scales(config: ComposeExportConfig, composed: dict[str, Any]) -> tuple[float, ...]:
    if config.scales is None:
        recommended = composed["recommendation"]["scales"]
        if recommended is None:
            raise UsageError(
                f"{config.compose} recommends no scales ({composed['recommendation']['reason']})",
                "pass --scales, one per run, of a point compose measured",
            )
        return tuple(float(s) for s in recommended)
    if len(config.scales) != len(composed["parts"]):
        raise UsageError(
            f"--scales has {len(config.scales)} values for {len(composed['parts'])} runs",
            "give one scale per run",
        )
    return tuple(float(s) for s in config.scales)


def _measured_point(compose_dir: Path, composed: dict[str, Any], scales: tuple[float, ...]) -> Point:
    label = "x".join(f"{s:g}" for s in scales)
    file = compose_dir / COMPOSE_POINTS / f"{label}.json"
    if not file.is_file():
        runs = " ".join(f"--run {p['run']}={s:g}" for p, s in zip(composed["parts"], scales, strict=True))
        raise UsageError(
            f"{compose_dir} has not measured the scales {label}",
            f"measure them first: autocustom compose {runs} ...",
        )
    return Point.from_dict(read_json(file))


def _checks(staging: Path, composed: dict[str, Any], point: Point, device: Any) -> list[Check]:
    """Per axis of the composition, the exported model's margins against compose's at this point."""
    from autocustom.data.io import load_dataset_dir
    from autocustom.scoring.logprobs import pair_margins

    exported = load_plain(staging, device)
    checks = []
    for axis, plan in composed["plans"].items():
        dataset = load_dataset_dir(plan["data"])
        ids = plan["pair_ids"]
        pairs = sorted(
            (p for p in dataset.split(plan["split"]) if p.id in set(ids)), key=lambda p: ids.index(p.id)
        )
        margins = pair_margins(
            exported.model,
            exported.tokenizer,
            pairs,
            plan["toward"],
            batch_size=plan["batch_size"],
            max_length=plan["max_length"],
        )
        worst = float(np.max(np.abs(margins - np.asarray(point.margins[axis])))) if pairs else 0.0
        note = f"max |margin - compose's| over {len(pairs)} {plan['split']} pairs toward {plan['toward']}"
        checks.append(
            Check(f"{axis} margins equal compose's", worst, MARGIN_TOLERANCE, at_least=False, note=note)
        )
    return checks


def _card(result: ComposeExportResult) -> str:
    """README.md of the export: the parts and their scales, compose's figures there, the checks, use."""
    from autocustom.scoring.stats import format_estimate

    name = Path(result.out).name
    lines = [
        "---",
        f"base_model: {hub_id(result.base)}",
        "library_name: transformers",
        "tags: [autocustom]",
        "---",
        "",
        f"# {name}: {public_reference(result.base)} customized along {len(result.parts)} axes at once",
        "",
        "Made by [autocustom](https://github.com/autocustom/autocustom) `compose`, merged at these scales "
        "(0 = the part off, 1 = as trained):",
        "",
        *[
            f"- `{p['axis']}` toward **{p['toward']}**: {p['kind']} run `{public_reference(p['run'])}` at s = {p['scale']:g}"
            for p in result.parts
        ],
        "",
        "## Measured at these scales (test split, 95% bootstrap intervals)",
        "",
        "| axis | BiasShift | n |",
        "|---|---|---|",
        *[
            f"| {axis} | {format_estimate(cell.get('bias_shift'))} | {cell['bias_shift']['n']} |"
            for axis, cell in result.figures.items()
            if cell.get("bias_shift")
        ],
        "",
        *[
            f"Drift (KL to the base on neutral text, nats/token): {format_estimate(cell['drift'])}; "
            f"MMLU change (points): {format_estimate(cell.get('mmlu_delta_points'))}."
            for cell in result.figures.values()
            if cell.get("drift")
        ],
        "",
        "## Checks of this export",
        "",
        *[f"- {check.line()}" for check in result.checks],
        "",
        "## Use",
        "",
        f"    AutoModelForCausalLM.from_pretrained('{name}')",
        "",
    ]
    return "\n".join(lines)
