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
    "train": "autocustom.training.trainer",
    "TrainConfig": "autocustom.training.config",
    "shift_score": "autocustom.scoring.shift_score",
    "ScoreConfig": "autocustom.scoring.shift_score",
    "load_model": "autocustom.llm.models",
    "EvalPlan": "autocustom.scoring.plan",
    "make_plan": "autocustom.scoring.plan",
    "measure": "autocustom.scoring.measure",
    "Reference": "autocustom.scoring.measure",
    "dial": "autocustom.shipping.dial",
    "DialConfig": "autocustom.shipping.dial",
    "export_model": "autocustom.shipping.export",
    "ExportConfig": "autocustom.shipping.export",
    "steer": "autocustom.steering.search",
    "SteerConfig": "autocustom.steering.search",
    "SteeringVector": "autocustom.steering.vector",
    "Steered": "autocustom.steering.vector",
    "compare": "autocustom.comparison.study",
    "CompareConfig": "autocustom.comparison.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autocustom' has no attribute {name!r}")
