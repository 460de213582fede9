"""autocustom: move a language model along one axis with LLM-written contrastive data.

The public API is imported lazily so that `import autocustom` (and `autocustom --help`) does not
import torch or transformers, which take seconds.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Axis": "autocustom.axis",
    "parse_axis": "autocustom.axis",
    "AutocustomError": "autocustom.errors",
    "generate": "autocustom.data.generate",
    "GenerateConfig": "autocustom.data.generate",
    "load_dataset_dir": "autocustom.data.io",
    "load_dataset": "autocustom.data.export",
    "export_data": "autocustom.data.export",
    "train": "autocustom.train.trainer",
    "TrainConfig": "autocustom.train.config",
    "shift_score": "autocustom.score.shift_score",
    "ScoreConfig": "autocustom.score.shift_score",
    "load_model": "autocustom.models",
    "EvalPlan": "autocustom.score.plan",
    "make_plan": "autocustom.score.plan",
    "measure": "autocustom.score.measure",
    "Reference": "autocustom.score.measure",
    "dial": "autocustom.dial",
    "DialConfig": "autocustom.dial",
    "export_model": "autocustom.export_model",
    "ExportConfig": "autocustom.export_model",
    "steer": "autocustom.steer",
    "SteerConfig": "autocustom.steer",
    "SteeringVector": "autocustom.steering",
    "Steered": "autocustom.steering",
    "compare": "autocustom.compare",
    "CompareConfig": "autocustom.compare",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autocustom' has no attribute {name!r}")
