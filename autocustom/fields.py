"""Field helpers for the config dataclasses whose fields become CLI options (see cli/options.py).

An option a command demands, and the help of the options several commands share, are written once.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

DATASET_HELP = "Dataset directory made by `autocustom generate`."
TRAINED_HELP = "Training run directory (`train --out`), `run` directory or LoRA adapter."


def required(help: str) -> Any:
    """A field with no default that the CLI demands (its dataclass default only means "not given")."""
    return field(metadata={"help": help, "required": True})
