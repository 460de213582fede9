"""`export`: a trained run at a chosen strength as a model anyone can serve, checked after it is written.

- `hf`: a merged model directory (LoRA merged at the scale, or full fine-tuning with the scaled delta:
  `autocustom.shipping.strength`) that `AutoModelForCausalLM.from_pretrained` loads with neither peft nor
  autocustom installed, with the tokenizer and chat template and a model card (README.md).
- `gguf`: the same directory converted by llama.cpp's own `convert_hf_to_gguf.py` (and, for a LoRA
  run, the adapter by `convert_lora_to_gguf.py`, applied with `--lora-scaled FILE <scale>`), never a
  hand-written GGUF writer (`autocustom.shipping.llama_cpp`); `--ollama` adds a Modelfile.

The card's figures are the dial's at the exported scale: the run's dial is resumed with that scale
added (so a scale the dial measured is not measured again). Checks, each a row of `export.json`: the
exported model's margins equal the dial's at that scale (1e-4), and the GGUF read back through
transformers' GGUF loader gives per-token log-probs that correlate with the HF export's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.errors import AutocustomError, UsageError
from autocustom.fields import PUBLIC_HELP, TRAINED_HELP, required
from autocustom.fileio import read_json, require_new_dir, staged_dir, write_json_atomic, write_text_atomic
from autocustom.layout import DIAL_RESULT, EXPORT_CARD, EXPORT_RECORD, MODELFILE, RunSource, dial_scale_file
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.options import MeasureOptions
from autocustom.scoring.stats import metrics_dict
from autocustom.shipping.dial import DialConfig, DialResult, default_dial_dir, dial
from autocustom.shipping.llama_cpp import OUTTYPES, fetch_llama_cpp_field, llama_cpp_field
from autocustom.shipping.strength import find_run

log = logging.getLogger(__name__)

SCHEMA = "autocustom.export/1"
FORMATS = ("hf", "gguf")
MARGIN_TOLERANCE = 1e-4  # the HF export against the dial: the same weights, saved and read back
GGUF_MIN_R = 0.99  # per-token log-probs of an unquantised GGUF against the HF export
UNQUANTISED = ("f16", "bf16", "f32")  # the GGUF types gated by GGUF_MIN_R; q8_0's r is reported only


class HubError(AutocustomError):
    """The Hugging Face Hub could not be reached or refused the upload."""


@dataclass(kw_only=True)
class ExportConfig(MeasureOptions):
    """What to export, at which strength, in which formats, and where."""

    model: str = required(TRAINED_HELP)
    out: str = required("Export directory (must be new or empty).")
    scale: float = field(
        default=1.0, metadata={"help": "Strength to export: 1 is the trained model (see `autocustom dial`)."}
    )
    format: str = field(default="hf", metadata={"help": "hf (merged model) or gguf (hf + llama.cpp GGUF)."})
    quantize: str = field(default="f16", metadata={"help": f"GGUF type: {', '.join(OUTTYPES)}."})
    ollama: bool = field(
        default=False, metadata={"help": "Also write an Ollama Modelfile (with --format gguf)."}
    )
    data: str | None = field(
        default=None, metadata={"help": "Dataset for the card's figures and checks; default: the run's own."}
    )
    dial: str | None = field(
        default=None, metadata={"help": "Dial directory to read and extend; default: MODEL/dial."}
    )
    llama_cpp: str | None = llama_cpp_field()
    fetch_llama_cpp: bool = fetch_llama_cpp_field()
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also upload the hf export to this hub repo."}
    )
    public: bool = field(default=False, metadata={"help": PUBLIC_HELP, "flag": "--public"})


@dataclass(frozen=True)
class Check:
    """One verification of what was written: the figure, its threshold (None: reported, not gated)."""

    name: str
    value: float
    threshold: float | None
    at_least: bool
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.threshold is None:
            return True
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def line(self) -> str:
        if self.threshold is None:
            bound = "reported"
        else:
            bound = (
                f"{'>=' if self.at_least else '<='} {self.threshold:g}: {'ok' if self.passed else 'FAILED'}"
            )
        return f"{self.name}: {self.value:.6g} ({bound}) {self.note}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


@dataclass
class ExportResult:
    out: Path
    model: str
    base: str
    scale: float
    lora: bool
    files: list[str]
    checks: list[Check]
    figures: dict[str, Any]  # the dial's metrics at this scale
    usage: list[str]  # how to run what was written
    pushed: str | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "out": str(self.out),
            "model": self.model,
            "base": self.base,
            "scale": self.scale,
            "lora": self.lora,
            "files": self.files,
            "checks": [c.to_dict() for c in self.checks],
            "passed": self.passed,
            "figures": self.figures,
            "usage": self.usage,
            "pushed": self.pushed,
        }

    def record(self) -> dict[str, Any]:
        """export.json: `to_dict` without local paths (it is published with the export): a folder or
        model on this machine is named by its last part, a hub id or packaged name as it is."""
        return {
            **self.to_dict(),
            "out": self.out.name,
            "model": public_reference(self.model),
            "base": public_reference(self.base),
        }

    def summary_lines(self) -> list[str]:
        lines = [f"exported {self.model} at scale {self.scale:g} to {self.out}: {', '.join(self.files)}"]
        lines += [f"check {check.line()}" for check in self.checks]
        lines += [f"run it: {line}" for line in self.usage]
        if self.pushed:
            lines.append(f"pushed to https://huggingface.co/{self.pushed}")
        return lines


def export_model(config: ExportConfig, *, progress: ProgressCallback = no_progress) -> ExportResult:
    """Write, check and (optionally) push the export; raises AutocustomError on bad input (exit 2)."""
    _check(config)
    out = Path(config.out)
    require_new_dir(out)
    source = find_run(config.model)
    llama_cpp = converter(config) if config.format == "gguf" else None
    dialled = _dial_at_scale(config, source, progress)
    with staged_dir(out) as staging:
        progress(ProgressEvent("export", 0, 3, "merge"))
        exported, margins_check = _write_hf(config, source, dialled, staging)
        checks, files = [margins_check], sorted(p.name for p in staging.iterdir())
        # from the folder that holds the export: the card is published, this machine's paths are not
        usage = [f"AutoModelForCausalLM.from_pretrained('{out.name}')"]
        if llama_cpp is not None:
            progress(ProgressEvent("export", 1, 3, "gguf"))
            gguf_files, gguf_checks, gguf_usage = _write_gguf(
                config, source, dialled, exported, staging, llama_cpp, out
            )
            files, checks, usage = files + gguf_files, checks + gguf_checks, usage + gguf_usage
        figures = _figures(dialled, config.scale)
        result = ExportResult(
            out, config.model, dialled.base, config.scale, source.lora, files, checks, figures, usage
        )
        write_text_atomic(staging / EXPORT_CARD, model_card(result, source, dialled))
        write_json_atomic(staging / EXPORT_RECORD, result.record())
        result.files = sorted(p.name for p in staging.iterdir())
    progress(ProgressEvent("export", 3, 3, "done"))
    if config.push_to_hub:
        result.pushed = push_to_hub(out, config.push_to_hub, public=config.public)
        write_json_atomic(out / EXPORT_RECORD, result.record())
    return result


def _check(config: ExportConfig) -> None:
    if config.quantized:
        raise UsageError(
            "export merges full-precision weights; --load-in-4bit/--load-in-8bit cannot be merged",
            "drop the flag (for a small file, export --format gguf --quantize q8_0)",
        )
    config.check()
    if config.format not in FORMATS:
        raise UsageError(f"--format {config.format} is not one of {', '.join(FORMATS)}", "e.g. --format gguf")
    if config.quantize not in OUTTYPES:
        raise UsageError(
            f"--quantize {config.quantize} is not one of {', '.join(OUTTYPES)}", "e.g. --quantize q8_0"
        )
    if config.ollama and config.format != "gguf":
        raise UsageError("--ollama needs a GGUF file", "add --format gguf")
    if not math.isfinite(config.scale) or config.scale < 0:
        raise UsageError(
            f"--scale {config.scale} is negative or not finite", "pass a scale >= 0 (1 is the trained model)"
        )


def converter(config: Any) -> Path:
    """llama.cpp's converter, found (or fetched) before any model is loaded, so a missing one fails fast."""
    from autocustom.shipping.llama_cpp import fetch_llama_cpp, find_llama_cpp

    if config.fetch_llama_cpp and config.llama_cpp is None:
        return fetch_llama_cpp()
    return find_llama_cpp(config.llama_cpp)


def _dial_at_scale(config: ExportConfig, source: RunSource, progress: ProgressCallback) -> DialResult:
    """The dial with the exported scale among its scales: read back where measured, else measured now."""
    data = config.data or source.data
    if not data:
        raise UsageError(
            f"{config.model} records no dataset", "pass --data DIR (the dataset it was trained on)"
        )
    dial_out = Path(config.dial) if config.dial else default_dial_dir(source)
    existing = _dial_scales(dial_out)
    measure_options = {f.name: getattr(config, f.name) for f in fields(MeasureOptions)}
    dial_config = DialConfig(
        model=config.model,
        data=str(data),
        out=str(dial_out),
        scales=sorted({*existing, config.scale}),
        **measure_options,
    )
    return dial(dial_config, progress=progress)


def _dial_scales(dial_out: Path) -> list[float]:
    file = dial_out / DIAL_RESULT
    return [point["scale"] for point in read_json(file)["scales"]] if file.is_file() else []


def _write_hf(config: ExportConfig, source: RunSource, dialled: DialResult, staging: Path):
    """The merged model + tokenizer, and the check that it scores as the dial's model at this scale did."""
    from autocustom.runtime import resolve_device
    from autocustom.shipping.strength import open_scaled

    device = resolve_device(config.device)
    scaled = open_scaled(source, dialled.base, device, config)
    merged = scaled.merged(config.scale)
    merged.save_pretrained(staging)
    scaled.tokenizer.save_pretrained(staging)
    del merged, scaled
    expected = np.asarray(read_json(dial_scale_file(dialled.out, config.scale))["margins"])
    exported = load_plain(staging, device)
    margins = _margins(exported, config, dialled)
    worst = float(np.max(np.abs(margins - expected))) if len(expected) else 0.0
    note = f"max |margin - dial's| over {len(expected)} {config.split} pairs"
    return exported, Check("hf margins equal the dial's", worst, MARGIN_TOLERANCE, at_least=False, note=note)


def _write_gguf(config, source, dialled, exported, staging: Path, llama_cpp: Path, out: Path):
    """GGUF of the merged model (and of the adapter under LoRA), each read back and compared."""
    from autocustom.llm.models import resolve_model_dir
    from autocustom.shipping.llama_cpp import convert_lora, convert_model, ollama_modelfile

    name = f"model-{config.quantize}.gguf"
    convert_model(staging, staging / name, outtype=config.quantize, llama_cpp=llama_cpp)
    files, usage = [name], [f"llama-cli -m {out.name}/{name}"]
    checks = [_gguf_check(config, dialled, staging, name, exported)]
    if source.lora:
        adapter = f"adapter-{config.quantize}.gguf"
        base_dir = resolve_model_dir(dialled.base)
        convert_lora(
            source.weights, base_dir, staging / adapter, outtype=config.quantize, llama_cpp=llama_cpp
        )
        files.append(adapter)
        # llama.cpp applies a LoRA as scale * alpha / r, as peft does, with alpha read from the
        # adapter's GGUF: the peft scale s is the `--lora-scaled` value, no further calibration
        usage.append(f"llama-cli -m BASE.gguf --lora-scaled {out.name}/{adapter} {config.scale:g}")
    if config.ollama:
        write_text_atomic(staging / MODELFILE, ollama_modelfile(name, exported.tokenizer))
        files.append(MODELFILE)
        usage.append(f"cd {out.name} && ollama create {out.name} -f {MODELFILE} && ollama run {out.name}")
    return files, checks, usage


def _gguf_check(config, dialled: DialResult, staging: Path, name: str, hf) -> Check:
    from autocustom.runtime import resolve_device

    pairs = (_plan_pairs(dialled), dialled.toward)
    return gguf_check(
        staging, name, hf, pairs, config.quantize, config.batch_size, resolve_device(config.device)
    )


def gguf_check(staging: Path, name: str, hf, pairs, quantize: str, batch_size: int, device) -> Check:
    """Per-token answer log-probs of the GGUF (dequantised by transformers) against the HF export's, on
    `pairs` = (the pairs, the pole whose answers are scored)."""
    gguf = load_plain(staging, device, gguf_file=name)
    a, b = (
        _token_logprobs(hf.model, hf.tokenizer, *pairs, batch_size),
        _token_logprobs(gguf.model, hf.tokenizer, *pairs, batch_size),
    )
    r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 else float("nan")
    quantised = quantize not in UNQUANTISED
    note = f"Pearson r over {len(a)} answer tokens" + (
        " (quantised: reported, not gated)" if quantised else ""
    )
    return Check(
        f"gguf {quantize} log-probs correlate",
        r,
        None if quantised else GGUF_MIN_R,
        at_least=True,
        note=note,
    )


def load_plain(folder: Path, device, gguf_file: str | None = None):
    """The exported model as a user loads it: transformers only (no peft, no autocustom model code)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autocustom.llm.models import LoadedModel

    model = (
        AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        .to(device)
        .eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return LoadedModel(model, tokenizer, str(folder), None)


def _plan_pairs(dialled: DialResult):
    from autocustom.data.io import load_dataset_dir

    dataset = load_dataset_dir(dialled.data)
    ids = set(dialled.plan["pair_ids"])
    return [p for p in dataset.splits[dialled.split] if p.id in ids]


def _margins(loaded, config: ExportConfig, dialled: DialResult) -> np.ndarray:
    from autocustom.scoring.logprobs import pair_margins
    from autocustom.scoring.plan import EVAL_MAX_LENGTH

    pairs = _plan_pairs(dialled)
    return pair_margins(
        loaded.model,
        loaded.tokenizer,
        pairs,
        dialled.toward,
        batch_size=config.batch_size,
        max_length=EVAL_MAX_LENGTH,
    )


def _token_logprobs(model, tokenizer, pairs, toward: str, batch_size: int) -> np.ndarray:
    from autocustom.scoring.logprobs import pair_token_logprobs
    from autocustom.scoring.plan import EVAL_MAX_LENGTH

    scored = pair_token_logprobs(
        model, tokenizer, pairs, toward, batch_size=batch_size, max_length=EVAL_MAX_LENGTH
    )
    return np.concatenate([part for parts in scored for part in parts])


def _figures(dialled: DialResult, scale: float) -> dict[str, Any]:
    point = next(p for p in dialled.points if p.scale == scale)
    return metrics_dict(point.metrics)


def model_card(result: ExportResult, source: RunSource, dialled: DialResult) -> str:
    """README.md of the export: what it is, how it was made, what was measured at this scale, how to run it."""
    from autocustom.scoring.measure import LABELS
    from autocustom.scoring.stats import format_estimate

    run = source.run_config
    manifest = _manifest(dialled.data)
    axis = f"{dialled.axis['pole_a']}:{dialled.axis['pole_b']}"
    lines = [
        "---",
        f"base_model: {hub_id(dialled.base)}",
        "library_name: transformers",
        "tags: [autocustom]",
        "---",
        "",
        f"# {Path(result.out).name}: {public_reference(dialled.base)} customized toward *{dialled.toward}*",
        "",
        f"Made by [autocustom](https://github.com/autocustom/autocustom) on the axis `{axis}`, toward "
        f"**{dialled.toward}**, exported at strength **s = {result.scale:g}** "
        f"(0 = the base model, 1 = the trained model; {'LoRA merged at that scale' if result.lora else 'the weight change scaled'}).",
        "",
        "## Data",
        "",
        f"- dataset `{public_reference(dialled.data)}`: {manifest}",
        "",
        "## Training",
        "",
        *[
            f"- {key}: `{run[key]}`"
            for key in ("loss", "lr", "max_steps", "batch_size", "lora", "reg", "reg_weight", "seed")
            if key in run
        ],
        "",
        f"## Measured at s = {result.scale:g} ({dialled.split} split, 95% bootstrap intervals)",
        "",
        "| figure | value [95% interval] | n |",
        "|---|---|---|",
        *[f"| {LABELS[k]} | {format_estimate(v)} | {v['n']} |" for k, v in result.figures.items() if v],
        "",
        f"Recommended strength from the dial: {_recommended(dialled)}.",
        "",
        *card_tail(result.checks, result.usage),
    ]
    return "\n".join(lines)


def card_tail(checks: list[Check], usage: list[str]) -> list[str]:
    """The end of every model card autocustom writes: the checks of the export, then how to run it."""
    return [
        "## Checks of this export",
        "",
        *[f"- {check.line()}" for check in checks],
        "",
        "## Use",
        "",
        *[f"    {line}" for line in usage],
        "",
    ]


def public_reference(reference: str) -> str:
    """A model or folder as a published file may name it: a local path by its last part (this machine's
    directories are nobody's business), a hub id or packaged name as it is."""
    path = Path(reference).expanduser()
    return path.resolve().name if path.exists() else reference


def _manifest(data: str) -> str:
    """The dataset in one line: its pairs per split and subareas (read from it), and who wrote it."""
    from autocustom.data.io import load_dataset_dir

    dataset = load_dataset_dir(data)
    splits = ", ".join(f"{name} {len(pairs)}" for name, pairs in dataset.splits.items())
    total = sum(len(pairs) for pairs in dataset.splits.values())
    manifest = dataset.manifest
    return (
        f"{total} pairs ({splits}) in {len(dataset.subareas)} subareas, "
        f"written by {manifest.backend} `{public_reference(manifest.model)}`"
    )


def hub_id(base: str) -> str:
    """The hub id a model card names as its base (a packaged name means its hub original)."""
    from autocustom.assets import PACKAGED_MODELS

    return PACKAGED_MODELS[base].hub_id if base in PACKAGED_MODELS else public_reference(base)


def _recommended(dialled: DialResult) -> str:
    chosen = dialled.recommendation
    return (
        f"s = {chosen.scale:g} ({chosen.reason})" if chosen.scale is not None else f"none ({chosen.reason})"
    )


def push_to_hub(folder: Path, repo: str, *, public: bool = False) -> str:
    """Upload the export with huggingface_hub (a token from `hf auth login` or $HF_TOKEN), to a private
    repo unless `public` (a repo that exists keeps its visibility)."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True, private=not public)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="autocustom export")
    except Exception as exc:  # offline, no token, no right to the repo: all one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(
            f"cannot push {folder} to the hub repo {repo}: {first}",
            "check the network and `hf auth login` (or $HF_TOKEN); the export on disk is complete",
        ) from None
    return repo
