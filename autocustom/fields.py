"""Field helpers for the config dataclasses whose fields become CLI options (see cli/options.py).

An option a command demands, and the help of the options several commands share, are written once.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

DATASET_HELP = "Dataset directory made by `autocustom generate`."
TRAINED_HELP = "Training run directory (`train --out`), `run` directory or LoRA adapter."


AXIS_HELP = 'Two poles "pole_a:pole_b", or a YAML axis file.'
SPLIT_HELP = "train,validation,test fractions, by subarea."


def required(help: str, **metadata: Any) -> Any:
    """A field with no default that the CLI demands (its dataclass default only means "not given")."""
    return field(metadata={"help": help, "required": True, **metadata})


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A field the CLI offers as an option, with its (immutable) default and help (cli/options.py reads
    them)."""
    return field(default=default, metadata={"help": help, **metadata})


def library_only(default: Any) -> Any:
    """A field scripts may set and the command line does not offer."""
    return field(default=default, metadata={"cli": False})
