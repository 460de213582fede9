"""`autocustom inspect DATA`: can this dataset be trusted? Its topics, its leakage audit, its pair check,
and whether each pair's answers lean toward their own poles, for any dataset directory (a user's
imports included).

The audit and the text checks (`data/audit.py`, `data/pair_check.py`) are computed again here, on the
dataset as it is, so a dataset made before them, or edited by hand, gets its figures too; nothing is
written. The lean needs a model: the contrast judge (`scoring/pair_lean.py`, the base model told each
pole in turn) scores both written answers of every pair, and a pair leans right when its pole-A answer
scores above its pole-B answer toward pole A by more than `--lean-margin` (the figure `generate
--lean-judge` records, `data/pair_check.py`). Every share comes with its n and a 95% Wilson interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.data.audit import audit_split, audit_warning
from autocustom.data.io import load_dataset_dir
from autocustom.data.pair_check import LEAN_MARGIN, LEAN_MARGIN_HELP, check_pairs, checks_lines, lean_figure
from autocustom.data.schema import SPLITS


@dataclass
class InspectConfig:
    """What `inspect` reads: a dataset and the model whose contrast judge reads the pairs' lean."""

    data: str = field(metadata={"help": "Dataset directory (generate or import).", "argument": True})
    judge_model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Model told each pole in turn to read the answers' lean (the base you train)."},
    )
    device: str | None = field(default=None, metadata={"help": "auto, cpu, cuda or cuda:N."})
    lean: bool = field(
        default=True,
        metadata={
            "help": "Read the lean with the model (off: text checks only).",
            "flag": "--lean/--no-lean",
        },
    )
    lean_margin: float = field(default=LEAN_MARGIN, metadata={"help": LEAN_MARGIN_HELP})


def inspect_data(config: InspectConfig) -> dict[str, Any]:
    """The dataset's figures as plain data (the command's --json), computed now."""
    dataset = load_dataset_dir(config.data)
    pairs = [p for split in SPLITS for p in dataset.splits.get(split, [])]
    by_split = {split: list(dataset.splits.get(split, [])) for split in SPLITS}
    assignment = {split: sorted({p.subarea for p in by_split[split]}) for split in SPLITS}
    leaks, audit = audit_split(by_split, assignment, dataset.subareas)
    _, unfit, checks = check_pairs(pairs, dataset.axis)
    counts = dataset.manifest.counts
    return {
        "data": str(Path(config.data)),
        "axis": dataset.axis.label,
        "pairs_per_split": {split: len(dataset.splits.get(split, [])) for split in SPLITS},
        "subareas": [s.name for s in dataset.subareas],
        "subareas_merged": counts.get("subareas_merged", []),
        "audit": {**audit.to_dict(), "leaks": [d.to_dict() for d in leaks]},
        "audit_when_made": counts.get("audit"),
        "warning": audit_warning(dataset.manifest),
        "pair_check": {**checks, "failing": [d.to_dict() for d in unfit]},
        "lean_check": _lean(dataset, pairs, config) if config.lean else None,
    }


def _lean(dataset, pairs, config: InspectConfig) -> dict[str, Any]:
    from autocustom.scoring.pair_lean import PairLean

    margins = PairLean(config.judge_model, config.device)(pairs, dataset.axis)
    wrong = [p.id for p, m in zip(pairs, margins, strict=True) if m <= config.lean_margin]
    return {
        **lean_figure(margins, dataset.axis, config.lean_margin, config.judge_model),
        "leaning_wrong": wrong,
    }


def inspect_lines(report: dict[str, Any]) -> list[str]:
    """The report in words, one finding per line."""
    splits = ", ".join(f"{name} {n}" for name, n in report["pairs_per_split"].items())
    lines = [
        f"{report['data']}: {report['axis']}, {sum(report['pairs_per_split'].values())} pairs ({splits})"
    ]
    lines.append(f"subareas ({len(report['subareas'])}): {'; '.join(report['subareas'])}")
    for merge in report["subareas_merged"]:
        lines.append(f"  merged: '{merge['name']}' into '{merge['into']}' (cosine {merge['cosine']})")
    lines.append("the checks below are computed now, on the files as they are (nothing is changed):")
    audit = {**report["audit"], "dropped": len(report["audit"]["leaks"])}
    lines += checks_lines(
        {"pair_check": report["pair_check"], "lean_check": report["lean_check"], "audit": audit}
    )
    if report["lean_check"] and report["lean_check"]["leaning_wrong"]:
        lines.append(f"  leaning the wrong way: {', '.join(report['lean_check']['leaning_wrong'])}")
    if report["warning"]:
        lines.append(f"warning: {report['warning']}")
    return lines
