"""Every directory autocustom writes, in one place: its file names and the reading and writing of its records.

A dataset (`generate`), a training run (`train`), a run of every stage (`run`) and a comparison
(`compare`) are directories; the commands, the report and the tests find their files through the names
and functions here, so a file is named once.

    Each command's directory is marked by its config file (run_config.json, pipeline_config.json,
    compare_config.json, steer_config.json, dial_config.json), which holds the settings a resume must
    match (`claim_output`).

    dataset/   manifest.json subareas.jsonl pairs.jsonl dropped.jsonl {train,validation,test}.jsonl cache.sqlite
    train run/ run_config.json model/ metrics.jsonl summary.json checkpoints/
    run/       pipeline_config.json data/ (a dataset) train/ (a training run) score.json report.md plots/
    compare/   compare_config.json methods/<loss>/ (training runs; methods/steer/ a steer directory)
               rows/<model>/<method>/<condition>.json sizes/<loss>-<n>/ compare.json compare.md
               report.md plots/
    export/    hf/ (datasets.DatasetDict.save_to_disk) {train,validation,test}.jsonl (prompt/chosen/rejected)
    steer/     steer_config.json steering.safetensors control_vector.gguf grid/<layers>x<c>.json steer.json
    dial/      dial_config.json scales/<s>.json dial.json dial.md dial.png   (default: inside the run)
    model export/  model.safetensors config.json tokenizer* README.md (the card) export.json
               [model-<type>.gguf adapter-<type>.gguf Modelfile]
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.errors import OutputExistsError
from autocustom.fileio import read_json, write_json_atomic, write_text_atomic

# dataset directory
MANIFEST = "manifest.json"
SUBAREAS = "subareas.jsonl"
PAIRS = "pairs.jsonl"
DROPPED = "dropped.jsonl"
CALL_CACHE = "cache.sqlite"

# training run directory
RUN_CONFIG = "run_config.json"  # its presence marks a training run
ADAPTER_CONFIG = "adapter_config.json"  # peft's file name: its presence marks a LoRA adapter
RUN_MODEL = "model"  # the kept model (or LoRA adapter) and its tokenizer
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"  # its presence means "finished"
CHECKPOINTS = "checkpoints"
TRAIN_LOGS = "logs"  # TensorBoard event files under --report-to tensorboard (kept after the run)

# `run` directory
RUN_RECORD = "pipeline_config.json"  # its presence marks a `run` directory
RUN_DATA = "data"
RUN_TRAIN = "train"
RUN_SCORE = "score.json"

# `compare` directory
COMPARE_CONFIG = "compare_config.json"
COMPARE_RESULT = "compare.json"
COMPARE_TABLE = "compare.md"
COMPARE_METHODS = "methods"
COMPARE_ROWS = "rows"
COMPARE_SIZES = "sizes"  # --train-sizes: sizes/<loss>-<n>/ (training runs on n train pairs)

# `export-data` directory: the DatasetDict (save_to_disk) beside one JSONL per split
EXPORT_HF = "hf"

# `dial` directory (default: inside the training run it scales)
DIAL = "dial"
DIAL_CONFIG = "dial_config.json"  # the model and plan the directory belongs to: resume only those
DIAL_RESULT = "dial.json"
DIAL_TABLE = "dial.md"
DIAL_PLOT = "dial.png"
DIAL_SCALES = "scales"

# `steer` directory (also `compare`'s methods/steer/)
STEER_CONFIG = "steer_config.json"  # the model, data and target the directory belongs to
STEER_VECTOR = "steering.safetensors"  # every layer's direction, with the chosen layers and coefficient
STEER_GGUF = "control_vector.gguf"  # the chosen layers as a llama.cpp control vector
STEER_RESULT = "steer.json"
STEER_GRID = "grid"

# `selectivity` directory: every run on every axis' test split, one file per run and axis as measured
SELECTIVITY_CONFIG = "selectivity_config.json"  # the runs, datasets and sizes the directory belongs to
SELECTIVITY_RESULT = "selectivity.json"
SELECTIVITY_TABLE = "selectivity.md"
SELECTIVITY_PLOT = "selectivity.png"
SELECTIVITY_CELLS = "cells"
COMPOSE_CONFIG = "compose_config.json"  # the parts, datasets and sizes the directory belongs to
COMPOSE_RESULT = "compose.json"
COMPOSE_TABLE = "compose.md"
COMPOSE_POINTS = "points"  # one file per measured scale vector, for resume
ADAPTERS_RECORD = "adapters.json"  # export-composition --format adapters: each adapter, its safe scales

# `export` directory: a merged model that loads without autocustom, and what was checked of it
EXPORT_CARD = "README.md"
EXPORT_RECORD = "export.json"
MODELFILE = "Modelfile"

# in the user cache directory (assets.cache_dir): every command's judge calls, keyed by their prompt
JUDGE_CALLS = "judge_calls.sqlite"

# written into any of them by `report`
REPORT = "report.md"
PLOTS = "plots"


SETTINGS = "settings"  # the key of a marker file that holds the settings a resume must match
RESTART_FIX = "pass --force-restart to start it over, or a new --out"


def claim_output(
    out: str | Path,
    marker: str,
    settings: dict[str, Any],
    *,
    command: str,
    resume: bool = True,
    restart: bool = False,
    write: bool = True,
) -> bool:
    """Make `out` this command's directory, or refuse it in one line; True when it continues an earlier run.

    A command writes only into a directory that is missing, empty, or marked as its own by `marker`, so
    it never renames, overwrites or deletes what it did not write. A marked directory continues only
    under the same `settings` (`fields.result_settings`): continuing under others would mix two runs'
    results in one directory, so a difference is refused with the options' names. `restart` deletes a
    marked directory and starts over; `resume=False` refuses a marked one (`train` without --resume).
    `write=False` checks only (a command that validates its inputs before it writes the marker).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file", "pass a directory")
    record = out / marker
    if record.is_file() and restart:
        shutil.rmtree(out)
    elif record.is_file():
        if not resume:
            raise OutputExistsError(
                f"{out} holds an earlier {command} run", f"pass --resume to continue it, {RESTART_FIX}"
            )
        changed = _changed(read_json(record).get(SETTINGS), settings)
        if changed:
            raise OutputExistsError(
                f"{out} holds a {command} run made with other settings ({changed}); continuing it would "
                "mix two runs' results",
                f"rerun with the same options, {RESTART_FIX}",
            )
        return True
    elif out.exists() and any(out.iterdir()):
        raise OutputExistsError(
            f"--out {out} is not empty and is not a {command} directory", "pass a new or an empty --out"
        )
    if write:
        write_json_atomic(record, {SETTINGS: settings})
    return False


@contextmanager
def claimed_output(
    out: str | Path, marker: str, settings: dict[str, Any], *, command: str, restart: bool = False
) -> Iterator[bool]:
    """`claim_output` for the length of a command's work: when the work fails before it wrote anything
    but the marker (a model that does not load, a bad file), the claim is undone, so a failed start
    leaves no directory behind and the next attempt may use other options."""
    out = Path(out)
    existed = out.is_dir()
    resuming = claim_output(out, marker, settings, command=command, restart=restart)
    try:
        yield resuming
    except BaseException:
        if not resuming and [p.name for p in out.iterdir()] == [marker]:
            (out / marker).unlink()
            if not existed:
                out.rmdir()
        raise


def _changed(previous: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    """The differing options as "--max-steps 20 -> 30, ..." ("" when none)."""
    if previous is None:
        return "a record written by an older autocustom, without its settings"
    names = sorted(k for k in previous.keys() | settings.keys() if previous.get(k) != settings.get(k))
    shown = [f"{_option_name(k)} {previous.get(k)} -> {settings.get(k)}" for k in names[:4]]
    return ", ".join(shown) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _option_name(setting: str) -> str:
    """ "max_steps" -> "--max-steps"; a stage's setting ("train max_steps", `run`) keeps its stage."""
    return setting.replace("_", "-") if " " in setting else "--" + setting.replace("_", "-")


def split_file(split: str) -> str:
    """The file of one dataset split, e.g. `test.jsonl`."""
    return f"{split}.jsonl"


def is_run_dir(path: Path) -> bool:
    return (path / RUN_CONFIG).is_file() and (path / RUN_MODEL).is_dir()


def read_run_config(path: str | Path) -> dict[str, Any]:
    return read_json(Path(path) / RUN_CONFIG)


def write_run_config(path: str | Path, config: dict[str, Any]) -> None:
    write_json_atomic(Path(path) / RUN_CONFIG, config)


@dataclass(frozen=True)
class RunSource:
    """What a model reference records of how it was made: the one reader of a run's record.

    A `train` directory (or a `run` directory, through its train/) records its base, axis and target
    pole in run_config.json; a bare LoRA adapter records only its base (adapter_config.json); anything
    else (a packaged name, a hub id, a plain model directory) records nothing, and every field is None.
    """

    reference: str  # what the user passed
    weights: Path  # the directory holding the tuned weights or the adapter
    run_config: dict[str, Any] = field(default_factory=dict)  # {} for a bare adapter or a plain model

    @property
    def lora(self) -> bool:
        """The weights are a peft LoRA adapter."""
        return (self.weights / ADAPTER_CONFIG).is_file()

    @property
    def trained(self) -> bool:
        """A run or an adapter: something with a base to measure against and to scale from."""
        return bool(self.run_config) or self.lora

    @property
    def run_dir(self) -> Path | None:
        return self.weights.parent if self.run_config else None

    @property
    def base(self) -> str | None:
        """The base model, as the user named it to `train` (or as the adapter names it)."""
        if self.run_config:
            return self.run_config.get("model")
        if self.lora:
            return read_json(self.weights / ADAPTER_CONFIG).get("base_model_name_or_path")
        return None

    @property
    def toward(self) -> str | None:
        return self.run_config.get("toward")

    @property
    def data(self) -> str | None:
        """The dataset directory the run was trained on."""
        return self.run_config.get("data")

    @property
    def axis(self) -> str | None:
        """The axis label ("formal:casual") the run was trained on."""
        return self.run_config.get("axis")


def run_source(reference: str | Path) -> RunSource:
    """The record of `reference`: a `train` directory, a `run` directory (its train/), an adapter, or none."""
    path = Path(reference).expanduser()
    for candidate in (path, path / RUN_TRAIN):
        if is_run_dir(candidate):
            return RunSource(str(reference), candidate / RUN_MODEL, read_run_config(candidate))
    return RunSource(str(reference), path)


def read_summary(path: str | Path) -> dict[str, Any] | None:
    file = Path(path) / SUMMARY
    return read_json(file) if file.is_file() else None


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    write_json_atomic(Path(path) / SUMMARY, summary)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The evaluation rows of a training run, in step order ([] before the first evaluation)."""
    file = Path(path) / METRICS
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_metrics(path: str | Path, row: dict[str, Any]) -> None:
    """One evaluation row; a kill mid-line leaves a line that `truncate_metrics` drops on resume."""
    with (Path(path) / METRICS).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def truncate_metrics(path: str | Path, step: int) -> None:
    """On resume, drop evaluations newer than the checkpoint: the resumed run repeats them exactly."""
    file = Path(path) / METRICS
    if not file.is_file():
        return
    rows = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in rows if _complete_row(line) and json.loads(line)["step"] <= step]
    if len(kept) != len(rows):
        write_text_atomic(file, "".join(line + "\n" for line in kept))


def _complete_row(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def dial_scale_file(out: str | Path, scale: float) -> Path:
    """Where one measured scale of a dial is kept for resume, e.g. `scales/0.75.json`."""
    return Path(out) / DIAL_SCALES / f"{_exact(scale)}.json"


def steer_grid_file(out: str | Path, layers: str, coefficient: float) -> Path:
    """Where one validation grid point of a steering run is kept for resume, e.g. `grid/8x2.json`."""
    return Path(out) / STEER_GRID / f"{layers}x{_exact(coefficient)}.json"


def _exact(value: float) -> str:
    """A number as a file name that names it alone: short where that is exact ("0.75", "2"), else every
    digit ("0.30000000000000004"), so two close scales never share a file."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def compare_cell(out: str | Path, model_slug: str, method: str, condition: str) -> Path:
    """Where one scored (model, method, condition) row of a comparison is kept for resume."""
    return Path(out) / COMPARE_ROWS / model_slug / method / f"{condition}.json"


def compare_method_run(out: str | Path, method: str) -> Path:
    """The training run of one trained method of a comparison."""
    return Path(out) / COMPARE_METHODS / method


def compare_size_run(out: str | Path, method: str, pairs: int) -> Path:
    """The training run of one trained method on `pairs` train pairs (`compare --train-sizes`)."""
    return Path(out) / COMPARE_SIZES / f"{method}-{pairs}"
