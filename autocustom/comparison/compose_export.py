"""`export-composition`: a composition shipped either way.

- `--format hf` (default): the composition at one measured scale vector as one merged model that plain
  transformers loads (neither peft nor autocustom needed), checked against what `compose` measured;
  `--format gguf` adds that model as a llama.cpp GGUF (its converter), checked as `export`'s is, and
  `--ollama` its Modelfile.
- `--format adapters` (LoRA runs only): the base and each adapter as llama.cpp GGUF files side by side,
  each adapter with the scales `compose` measured safe for it alone (its Drift and MMLU drop inside
  compose's budgets) in the model card and `adapters.json`, and the `llama-server` command line that
  serves them with a scale per request (its `lora` field: `[{"id": 0, "scale": 1.0}, ...]`). Each
  adapter is checked by loading it with its scale in llama.cpp's runtime (llama-cpp-python, in the
  python `--llama-python` names) and getting a reply.

LoRA parts are merged into the base at their scales (peft's `merge_and_unload` merges every active
adapter with its current scaling), full fine-tuning parts are already summed into the weights
(`composed_model.py`). A steering part is refused: it adds to activations, and a Llama-style layer has
no bias to hold it (its llama.cpp control vector, `control_vector.gguf`, is its export). Only a scale
vector that `compose` measured can be merged, because the check compares the export's margins on
every axis with the ones measured at that point (1e-4, as `export` compares with the dial).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.comparison.compose import Point
from autocustom.comparison.composed_model import open_composition, read_part
from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL, required
from autocustom.fileio import read_json, require_new_dir, staged_dir, write_json_atomic, write_text_atomic
from autocustom.layout import (
    ADAPTERS_RECORD,
    COMPOSE_POINTS,
    COMPOSE_RESULT,
    EXPORT_CARD,
    EXPORT_RECORD,
    MODELFILE,
)
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.shipping.export import (
    MARGIN_TOLERANCE,
    Check,
    card_tail,
    converter,
    gguf_check,
    hub_id,
    load_plain,
    public_reference,
)
from autocustom.shipping.llama_cpp import (
    OUTTYPES,
    convert_lora,
    convert_model,
    fetch_llama_cpp_field,
    llama_cpp_field,
    ollama_modelfile,
)

SCHEMA = "autocustom.export-composition/1"
FORMATS = ("hf", "gguf", "adapters")


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
    format: str = field(
        default="hf",
        metadata={
            "help": "hf (one merged model), gguf (hf + its llama.cpp GGUF) or adapters (base + adapter GGUFs)."
        },
    )
    quantize: str = field(
        default="f16", metadata={"help": f"GGUF type (gguf, adapters): {', '.join(OUTTYPES)}."}
    )
    llama_cpp: str | None = llama_cpp_field()
    fetch_llama_cpp: bool = fetch_llama_cpp_field()
    ollama: bool = field(
        default=False, metadata={"help": "Also write an Ollama Modelfile (with --format gguf)."}
    )
    llama_python: str | None = field(
        default=None,
        metadata={"help": "Python with llama-cpp-python that checks each adapter (default: this one)."},
    )
    device: str | None = field(default=None, metadata={NEUTRAL: True, "help": "auto, cpu, cuda or cuda:N."})


@dataclass
class ComposeExportResult:
    out: Path
    base: str
    parts: list[dict[str, Any]]  # run, kind, axis, toward, scale
    checks: list[Check]
    figures: dict[str, dict[str, Any]]  # by axis: compose's figures at this point ({} for adapters)
    files: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)  # how to run what was written

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
            "usage": self.usage,
        }

    def record(self) -> dict[str, Any]:
        """export.json: without this machine's paths (it is published with the export)."""
        parts = [{**part, "run": public_reference(part["run"])} for part in self.parts]
        return {**self.to_dict(), "out": self.out.name, "base": public_reference(self.base), "parts": parts}


def export_composition(
    config: ComposeExportConfig, *, progress: ProgressCallback = no_progress
) -> ComposeExportResult:
    """Merge (or convert), save and check; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    if config.format not in FORMATS:
        raise UsageError(
            f"--format {config.format} is not one of {', '.join(FORMATS)}", "e.g. --format adapters"
        )
    composed = read_json(Path(config.compose) / COMPOSE_RESULT)
    parts = [read_part(part["run"]) for part in composed["parts"]]
    if config.format == "adapters":
        return _export_adapters(config, composed, parts, progress)
    scales = _scales(config, composed)
    point = _measured_point(Path(config.compose), composed, scales)
    steering = [part.reference for part in parts if part.kind == "steering"]
    if steering:
        raise UsageError(
            f"{', '.join(steering)} is a steering vector: it adds to activations, which a merged model "
            "cannot hold",
            "compose without it, and ship the vector as its llama.cpp control vector (control_vector.gguf)",
        )
    if config.ollama and config.format != "gguf":
        raise UsageError("--ollama needs a GGUF file", "add --format gguf")
    llama_cpp = converter(config) if config.format == "gguf" else None  # a missing one fails first
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
        exported = load_plain(staging, device)
        checks = _checks(exported, composed, point)
        usage = [f"AutoModelForCausalLM.from_pretrained('{out.name}')"]
        if llama_cpp is not None:
            gguf_checks, gguf_usage = _write_gguf(config, composed, exported, staging, llama_cpp, device)
            checks, usage = checks + gguf_checks, usage + gguf_usage
        described = [
            {"run": p["run"], "kind": p["kind"], "axis": p["axis"], "toward": p["toward"], "scale": s}
            for p, s in zip(composed["parts"], scales, strict=True)
        ]
        figures = {
            axis: {k: v for k, v in cell.items() if v} for axis, cell in point.to_dict()["cells"].items()
        }
        result = ComposeExportResult(out, composed["base"], described, checks, figures, usage=usage)
        write_text_atomic(staging / EXPORT_CARD, _card(result))
        write_json_atomic(staging / EXPORT_RECORD, result.record())
        result.files = sorted(p.name for p in staging.iterdir())
    progress(ProgressEvent("export", 2, 2, "done"))
    return result


def _write_gguf(config: ComposeExportConfig, composed, exported, staging: Path, llama_cpp: Path, device):
    """The merged model as GGUF (llama.cpp's converter), read back and correlated with the hf export on
    the first axis' pairs; with --ollama its Modelfile. Returns (the checks, how to run it)."""
    name, out = f"model-{config.quantize}.gguf", Path(config.out).name
    convert_model(staging, staging / name, outtype=config.quantize, llama_cpp=llama_cpp)
    first = next(iter(composed["plans"].values()))
    pairs = (_plan_pairs(first), first["toward"])
    checks = [gguf_check(staging, name, exported, pairs, config.quantize, first["batch_size"], device)]
    usage = [f"llama-cli -m {out}/{name}"]
    if config.ollama:
        write_text_atomic(staging / MODELFILE, ollama_modelfile(name, exported.tokenizer))
        usage.append(f"cd {out} && ollama create {out} -f {MODELFILE} && ollama run {out}")
    return checks, usage


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


def _checks(exported, composed: dict[str, Any], point: Point) -> list[Check]:
    """Per axis of the composition, the exported model's margins against compose's at this point."""
    from autocustom.scoring.logprobs import pair_margins

    checks = []
    for axis, plan in composed["plans"].items():
        pairs = _plan_pairs(plan)
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


def _plan_pairs(plan: dict[str, Any]) -> list:
    """The pairs a described plan measured, in its order (what compose's margins are of)."""
    from autocustom.data.io import load_dataset_dir

    ids = plan["pair_ids"]
    order = {pair_id: index for index, pair_id in enumerate(ids)}
    found = [p for p in load_dataset_dir(plan["data"]).split(plan["split"]) if p.id in order]
    return sorted(found, key=lambda p: order[p.id])


def _front_matter(base: str, *entries: str) -> list[str]:
    """The hub's YAML header of a model card: its base model and `entries`."""
    return ["---", f"base_model: {hub_id(base)}", *entries, "---", ""]


def _card(result: ComposeExportResult) -> str:
    """README.md of the export: the parts and their scales, compose's figures there, the checks, use."""
    from autocustom.scoring.stats import format_estimate

    name = Path(result.out).name
    lines = [
        *_front_matter(result.base, "library_name: transformers", "tags: [autocustom]"),
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
        *card_tail(result.checks, result.usage),
    ]
    return "\n".join(lines)


# the question each adapter answers in llama.cpp's runtime: any question shows it loads and generates
CHECK_QUESTION = "How should I spend a free afternoon?"
# run by the python that has llama-cpp-python; the reply goes to a file, as llama.cpp may write to stdout
CHECK_SCRIPT = """
import json, pathlib, sys
from llama_cpp import Llama
base, adapter, scale, question, reply_file = json.loads(sys.argv[1])
model = Llama(model_path=base, lora_path=adapter, lora_scale=scale, n_ctx=512, n_threads=2, verbose=False)
reply = model.create_chat_completion(messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0)
pathlib.Path(reply_file).write_text(reply["choices"][0]["message"]["content"], encoding="utf-8")
"""


def _export_adapters(
    config: ComposeExportConfig, composed: dict[str, Any], parts, progress
) -> ComposeExportResult:
    """The base GGUF and every adapter's, side by side, each adapter's safe scales, the server line, and
    each adapter checked in llama.cpp's runtime at its scale of the asked point."""
    from autocustom.llm.models import resolve_model_dir

    not_lora = [f"{part.reference} ({part.kind})" for part in parts if part.kind != "lora"]
    if not_lora:
        raise UsageError(
            f"--format adapters ships LoRA adapters; {', '.join(not_lora)} is not one",
            "use --format hf (one merged model) for full fine-tuning runs",
        )
    scales = tuple(float(s) for s in (config.scales or composed["point"]))
    if len(scales) != len(parts):
        raise UsageError(f"--scales has {len(scales)} values for {len(parts)} runs", "give one scale per run")
    llama_cpp = converter(config)
    python = config.llama_python or sys.executable
    _check_llama_python(python)
    out = Path(config.out)
    require_new_dir(out)
    base_dir = resolve_model_dir(composed["base"])
    with staged_dir(out) as staging:
        progress(ProgressEvent("export", 0, len(parts) + 1, "base gguf"))
        base_file = f"base-{config.quantize}.gguf"
        convert_model(base_dir, staging / base_file, outtype=config.quantize, llama_cpp=llama_cpp)
        described, checks = [], []
        for index, (part, record) in enumerate(zip(parts, composed["parts"], strict=True)):
            progress(ProgressEvent("export", index + 1, len(parts) + 1, f"adapter {index}"))
            file = f"adapter-{index}-{record['axis'].replace(':', '-')}-{config.quantize}.gguf"
            convert_lora(part.weights, base_dir, staging / file, outtype=config.quantize, llama_cpp=llama_cpp)
            described.append(
                {**record, "id": index, "file": file, "scale": scales[index], **_safe(composed, index)}
            )
            checks.append(_reply_check(python, staging / base_file, staging / file, index, scales[index]))
        usage = _server_usage(out.name, base_file, described)
        result = ComposeExportResult(out, composed["base"], described, checks, {}, usage=usage)
        record = {
            "schema": SCHEMA,
            "base": base_file,
            "adapters": described,
            "budgets": composed["recommendation"]["budgets"],
            "usage": usage,
        }
        write_json_atomic(staging / ADAPTERS_RECORD, record)
        write_text_atomic(staging / EXPORT_CARD, _adapters_card(result))
        write_json_atomic(staging / EXPORT_RECORD, result.record())
        result.files = sorted(p.name for p in staging.iterdir())
    progress(ProgressEvent("export", len(parts) + 1, len(parts) + 1, "done"))
    return result


def _safe(composed: dict[str, Any], index: int) -> dict[str, Any]:
    """The part's measurements alone (every other part at 0) and the scales among them whose Drift and
    MMLU drop stay inside compose's budgets: its safe range, as far as the grid measured it."""
    from autocustom.comparison.compose import inside_budgets

    budgets = composed["recommendation"]["budgets"]
    alone = [
        Point.from_dict(p)
        for p in composed["points"]
        if all(s == 0 for j, s in enumerate(p["scales"]) if j != index)
    ]
    alone.sort(key=lambda p: p.scales[index])
    axis = composed["parts"][index]["axis"]
    measured = [
        {
            "scale": p.scales[index],
            "bias_shift": p.cells[axis]["bias_shift"].to_dict() if p.cells[axis].get("bias_shift") else None,
            "drift": p.whole("drift").to_dict() if p.whole("drift") else None,
            "inside_budgets": inside_budgets(p, budgets["max_drift"], budgets["max_mmlu_drop"]),
        }
        for p in alone
    ]
    return {"measured_alone": measured, "safe_scales": [m["scale"] for m in measured if m["inside_budgets"]]}


def _check_llama_python(python: str) -> None:
    try:
        found = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0
    except OSError:
        found = False
    if not found:
        raise UsageError(
            f"{python} cannot import llama_cpp, which checks each adapter in llama.cpp's runtime",
            "pip install llama-cpp-python there, or pass --llama-python with a python that has it",
        )


def _reply_check(python: str, base: Path, adapter: Path, index: int, scale: float) -> Check:
    """Load the adapter with its scale in llama-cpp-python and ask one question: a reply, or the error."""
    reply_file = adapter.with_name(f".reply-{index}.txt")  # inside the staging folder, removed below
    arguments = json.dumps([str(base), str(adapter), scale, CHECK_QUESTION, str(reply_file)])
    done = subprocess.run([python, "-c", CHECK_SCRIPT, arguments], capture_output=True, text=True)
    reply = reply_file.read_text(encoding="utf-8") if done.returncode == 0 and reply_file.is_file() else ""
    reply_file.unlink(missing_ok=True)
    error = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]
    note = f"reply: {reply[:60]!r}" if not error else f"llama_cpp failed: {error[:200]}"
    return Check(
        f"adapter {index} replies in llama.cpp at scale {scale:g}",
        float(len(reply)),
        1.0,
        at_least=True,
        note=note,
    )


def _server_usage(name: str, base_file: str, adapters: list[dict[str, Any]]) -> list[str]:
    loras = " ".join(f"--lora {name}/{a['file']}" for a in adapters)
    request = json.dumps(
        {
            "messages": [{"role": "user", "content": CHECK_QUESTION}],
            "lora": [{"id": a["id"], "scale": a["scale"]} for a in adapters],
        }
    )
    return [
        f"llama-server -m {name}/{base_file} {loras} --lora-init-without-apply",
        f"curl localhost:8080/v1/chat/completions -d '{request}'   # a scale per adapter, per request",
    ]


def _adapters_card(result: ComposeExportResult) -> str:
    """README.md of the adapters: each one's axis, file and safe scales, the checks, how to serve them."""
    name = Path(result.out).name
    lines = [
        *_front_matter(result.base, "tags: [autocustom, lora, gguf]"),
        f"# {name}: {len(result.parts)} LoRA adapters of {public_reference(result.base)}, served side by side",
        "",
        "Made by [autocustom](https://github.com/autocustom/autocustom) `compose`. Safe scales: those at which "
        "the adapter alone kept Drift and the MMLU drop inside compose's budgets (test split; `adapters.json` "
        "holds each measurement with its 95% interval).",
        "",
        "| id | file | axis → pole | safe scales (measured alone) |",
        "|---|---|---|---|",
        *[
            f"| {a['id']} | `{a['file']}` | {a['axis']} → {a['toward']} | "
            f"{', '.join(f'{s:g}' for s in a['safe_scales']) or 'none measured'} |"
            for a in result.parts
        ],
        "",
        *card_tail(result.checks, result.usage),
    ]
    return "\n".join(lines)
