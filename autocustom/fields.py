"""Field helpers for the config dataclasses whose fields become CLI options (see cli/options.py).

An option a command demands, and the help of the options several commands share, are written once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DATASET_HELP = "Dataset directory made by `autocustom generate`."
TRAINED_HELP = "Training run directory (`train --out`), `run` directory or LoRA adapter."


AXIS_HELP = 'Two poles "pole_a:pole_b", or a YAML axis file.'
SPLIT_HELP = "train,validation,test fractions, by subarea."


# Field metadata: the option does not change a run's results (where it runs, how it reports, batch sizes
# of exact computations, cells it adds beside the stored ones), so a resumed run may differ in it.
NEUTRAL = "neutral"
URL = "url"  # field metadata: a server URL, recorded without the credentials a user may have put in it
PUBLIC_HELP = "Make the hub repo public (default: private, since an export may not be meant for everyone)."
RESTART_HELP = (
    "Delete the earlier run in --out (a directory this command made, never another) and start over."
)


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


def force_restart() -> Any:
    """`--force-restart`: what a user passes when a resume is refused because the options changed."""
    return field(default=False, metadata={"help": RESTART_HELP, "flag": "--force-restart", NEUTRAL: True})


def config_record(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON values, for the files a run writes: URLs without their credentials."""
    return {f.name: _recorded(config, f) for f in dataclasses.fields(config)}


def result_settings(config: Any) -> dict[str, Any]:
    """The options of a config dataclass that change its results, as JSON values: what a resume must
    match (`layout.claim_output`). Every field counts but those marked `NEUTRAL`."""
    return {f.name: _recorded(config, f) for f in dataclasses.fields(config) if not f.metadata.get(NEUTRAL)}


def public_url(url: str | None) -> str | None:
    """`url` without user, password and query (where keys go): what may be written to a file."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _recorded(config: Any, f: dataclasses.Field) -> Any:
    value = getattr(config, f.name)
    if f.metadata.get(URL):
        value = public_url(value)
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else str(value)
