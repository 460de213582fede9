"""`compare`: every method on the same held-out pairs and the same metrics, in one table.

Rows are (model, method, condition). Prompting baselines and trained models (contrastive, DPO, SimPO,
same data, steps and learning rate) are scored clean and under stress (distracting padding, an
adversarial user turn). BiasShift compares each row with the base model under the same condition, so
a stress that moves every model alike does not count as a shift. Nothing in the table is typed by
hand: every cell is computed in the run, and resumed runs reuse cells already computed (stored per
row in `rows/`) and training runs already finished (in `methods/`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.baselines import (
    METHODS,
    PLAIN_CONDITION,
    PROMPT_METHODS,
    apply_stress,
    check_methods,
    method_condition,
    padding_length,
    stress_conditions,
)
from autocustom.data.io import load_dataset_dir, read_json, write_json_atomic, write_text_atomic
from autocustom.errors import OutputExistsError, UsageError
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.score.stats import DEFAULT_BOOTSTRAP, Estimate, bootstrap, paired_difference

log = logging.getLogger(__name__)

SCHEMA = "autocustom.compare/1"
MARKER = "compare_config.json"
RESULT = "compare.json"
TABLE = "compare.md"
COLUMNS = ("lean", "bias_shift", "gen_lean", "mmlu_delta_points", "drift")


@dataclass
class CompareConfig:
    """One comparison: which models, methods and stress conditions, and the shared training budget."""

    data: str
    toward: str
    out: str
    models: list[str] = field(default_factory=lambda: ["smollm2-135m"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    padding: list[int] = field(default_factory=lambda: [64, 256])
    adversarial: bool = True
    few_shot: int = 3
    max_steps: int = 30
    lr: float | None = None
    train_batch_size: int = 4
    eval_steps: int = 10
    gen: bool = False
    gen_tokens: int = 48
    mmlu_questions: int | None = None
    drift_texts: int | None = None
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    batch_size: int = 16
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Row:
    model: str
    method: str
    condition: str
    padding_tokens: int
    metrics: dict[str, Estimate | None]
    margins: list[float]

    def to_dict(self, with_margins: bool = True) -> dict[str, Any]:
        data = {
            "model": self.model,
            "method": self.method,
            "condition": self.condition,
            "padding_tokens": self.padding_tokens,
            "metrics": {k: v.to_dict() if v is not None else None for k, v in self.metrics.items()},
        }
        if with_margins:
            data["margins"] = self.margins
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        metrics = {k: Estimate(**v) if v is not None else None for k, v in data["metrics"].items()}
        return cls(
            data["model"], data["method"], data["condition"], data["padding_tokens"], metrics, data["margins"]
        )


@dataclass
class CompareResult:
    config: CompareConfig
    axis: dict[str, str]
    opposite: str
    n_pairs: int
    rows: list[Row]
    training: dict[str, dict[str, Any]]
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    gen_classifier_accuracy: Estimate | None = None  # how far GenLean's labels can be trusted

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.gen_classifier_accuracy
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "axis": self.axis,
            "toward": self.config.toward,
            "opposite": self.opposite,
            "n_pairs": self.n_pairs,
            "rows": [row.to_dict(with_margins=False) for row in self.rows],
            "training": self.training,
            "elapsed_s": round(self.elapsed_s, 1),
            "notes": self.notes,
            "gen_classifier_accuracy": accuracy.to_dict() if accuracy is not None else None,
        }

    def to_markdown(self) -> str:
        return compare_markdown(self.to_dict())


def compare(config: CompareConfig, *, progress: ProgressCallback = no_progress) -> CompareResult:
    """Run (or resume) a comparison into `config.out`; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    started = time.monotonic()
    check_methods(config.methods)
    dataset = load_dataset_dir(config.data)
    axis = dataset.axis
    opposite = axis.opposite(config.toward)
    pairs = dataset.split("test")
    if not pairs:
        raise UsageError(f"the test split of {config.data} is empty", "regenerate with more subareas")
    if config.max_steps <= 0 or config.few_shot < 0 or not config.models:
        raise UsageError(
            "--max-steps must be positive, --few-shot >= 0, --models non-empty", "fix the options"
        )
    from autocustom.score.judge import classifier_splits

    # GenLean's classifier needs train (fit) and validation (check): refuse a dataset without them now.
    gen_splits = classifier_splits(dataset) if config.gen else None
    out = Path(config.out)
    _claim_output(out, config, axis.label)
    device = resolve_device(config.device)

    training = _train_methods(config, out, progress)
    conditions = stress_conditions(config.padding, config.adversarial)
    rows: list[Row] = []
    notes = [
        "BiasShift: vs the base model under the same condition; MMLU delta and Drift: trained methods only "
        "(prompting leaves the weights unchanged)",
    ]
    classifier = _LazyClassifier(gen_splits[0], config.toward) if gen_splits else None
    for model_index, model_ref in enumerate(config.models):
        methods = [m for m in config.methods if model_index == 0 or m in PROMPT_METHODS]
        scored = _score_model(
            config, out, model_ref, methods, conditions, dataset, pairs, opposite, device,
            classifier, progress,
        )  # fmt: skip
        rows.extend(scored)
    accuracy = None
    if classifier is not None and gen_splits is not None:
        from autocustom.score.judge import classifier_accuracy

        accuracy = classifier_accuracy(
            classifier.get(), gen_splits[1], config.toward, n_boot=config.bootstrap, seed=config.seed
        )
        notes.append(
            "GenLean: free replies labelled by an embedding classifier fitted on the train split's answers; "
            f"it labels the validation split's answers correctly {accuracy}"
        )
    result = CompareResult(
        config, axis.to_dict(), opposite, len(pairs), rows, training, time.monotonic() - started, notes,
        accuracy,
    )  # fmt: skip
    write_json_atomic(out / RESULT, result.to_dict())
    write_text_atomic(out / TABLE, result.to_markdown())
    return result


def _claim_output(out: Path, config: CompareConfig, axis_label: str) -> None:
    """Refuse a directory that holds another comparison (another axis or target); resume the same one."""
    marker = out / MARKER
    if marker.is_file():
        previous = read_json(marker)
        if previous.get("axis") != axis_label or previous.get("toward") != config.toward:
            raise OutputExistsError(
                f"{out} holds a comparison of {previous.get('axis')} toward {previous.get('toward')}",
                "pass a new --out for this axis",
            )
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"output directory {out} is not empty", "pass a new --out")
    write_json_atomic(marker, {"axis": axis_label, "toward": config.toward, "data": str(config.data)})


def _train_methods(config: CompareConfig, out: Path, progress: ProgressCallback) -> dict[str, dict[str, Any]]:
    """Train each loss with the same data, steps and learning rate; finished runs are not retrained."""
    from autocustom.train.config import TrainConfig
    from autocustom.train.trainer import train

    summaries = {}
    for method in (m for m in config.methods if m not in PROMPT_METHODS):
        progress(ProgressEvent("train", 0, config.max_steps, method))
        result = train(
            TrainConfig(
                data=config.data,
                toward=config.toward,
                out=str(out / "methods" / method),
                model=config.models[0],
                loss=method,
                max_steps=config.max_steps,
                lr=config.lr,
                batch_size=config.train_batch_size,
                eval_steps=config.eval_steps,
                mmlu_questions=config.mmlu_questions,
                drift_texts=config.drift_texts,
                seed=config.seed,
                device=config.device,
                resume=True,
            ),
            progress=progress,
        )
        summaries[method] = result.to_dict()
    return summaries


def _score_model(
    config, out, model_ref, methods, conditions, dataset, pairs, opposite, device, classifier, progress
):
    """Rows of one model: the base first (its margins are every other row's reference), then the rest."""
    from autocustom.models import load_model
    from autocustom.score.drift import neutral_texts
    from autocustom.score.mmlu import retention_subset
    from autocustom.score.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, evaluation_size

    base = load_model(model_ref, device=device)
    padding_source = [q.question for q in retention_subset(200, seed=config.seed)]
    boot = {"n_boot": config.bootstrap, "seed": config.seed}
    mmlu_items = retention_subset(
        evaluation_size(config.mmlu_questions, MMLU_QUESTIONS, device.type)[0], seed=0
    )
    drift_items = neutral_texts(evaluation_size(config.drift_texts, DRIFT_TEXTS, device.type)[0], seed=0)
    base_correct = None
    base_margins: dict[str, np.ndarray] = {}
    rows = []
    total = len(methods) * len(conditions)
    for method in ["base", *[m for m in methods if m != "base"]]:
        trained = method not in PROMPT_METHODS
        loaded = load_model(str(out / "methods" / method), device=device) if trained else base
        train_pairs = dataset.splits.get("train", [])
        prompt = method_condition(method, dataset.axis, config.toward, train_pairs, config.few_shot)
        for condition in conditions:
            progress(ProgressEvent(f"score {model_ref}", len(rows), total, f"{method} / {condition}"))
            cell = out / "rows" / _slug(model_ref) / method / f"{condition}.json"
            if cell.is_file():
                row = Row.from_dict(read_json(cell))
            else:
                weights = {"mmlu_delta_points": None, "drift": None}
                if trained and condition == PLAIN_CONDITION:
                    if base_correct is None:
                        base_correct = _mmlu_correct(base, mmlu_items, config)
                    weights = _weights_figures(
                        loaded, base, base_correct, mmlu_items, drift_items, config, boot
                    )
                row = _score_row(
                    config, model_ref, method, condition, loaded, prompt, pairs, opposite,
                    base_margins.get(condition), padding_source, weights, classifier, boot,
                )  # fmt: skip
                write_json_atomic(cell, row.to_dict())
            if method == "base":
                base_margins[condition] = np.asarray(row.margins)
            if method in methods:
                rows.append(row)
    progress(ProgressEvent(f"score {model_ref}", total, total, "done"))
    return rows


def _score_row(
    config, model_ref, method, condition, loaded, prompt, pairs, opposite, base_margins,
    padding_source, weights_figures, classifier, boot,
) -> Row:  # fmt: skip
    from autocustom.score.logprobs import pair_margins
    from autocustom.score.shift import bias_shift, lean

    stressed = apply_stress(
        prompt, condition, opposite=opposite, tokenizer=loaded.tokenizer, padding_source=padding_source
    )
    margins = pair_margins(
        loaded.model, loaded.tokenizer, pairs, config.toward, condition=stressed, batch_size=config.batch_size
    )
    metrics: dict[str, Estimate | None] = dict.fromkeys(COLUMNS)
    metrics["lean"] = lean(margins, **boot)
    if method != "base" and base_margins is not None:
        metrics["bias_shift"] = bias_shift(margins, base_margins, **boot)
    if condition == PLAIN_CONDITION:
        metrics.update(weights_figures)
        if classifier is not None:
            metrics["gen_lean"] = _gen_lean(config, loaded, classifier.get(), pairs, stressed)
    return Row(model_ref, method, condition, padding_length(condition), metrics, margins.tolist())


def _mmlu_correct(loaded, questions, config) -> np.ndarray:
    from autocustom.score.mmlu import mmlu_correct

    return mmlu_correct(loaded.model, loaded.tokenizer, questions, batch_size=config.batch_size)


def _weights_figures(
    loaded, base, base_correct, mmlu_items, drift_items, config, boot
) -> dict[str, Estimate]:
    """MMLU delta (points, paired) and Drift of a trained model against its base."""
    from autocustom.score.drift import drift_per_text

    correct = _mmlu_correct(loaded, mmlu_items, config)
    drift = drift_per_text(
        loaded.model, base.model, loaded.tokenizer, drift_items, batch_size=config.batch_size
    )
    return {
        "mmlu_delta_points": paired_difference(correct * 100, base_correct * 100, **boot),
        "drift": bootstrap(drift, **boot),
    }


class _LazyClassifier:
    """The GenLean pole classifier, fitted on first use and then shared by every row."""

    def __init__(self, train_pairs, toward: str) -> None:
        self.train_pairs, self.toward, self.fitted = train_pairs, toward, None

    def get(self):
        if self.fitted is None:
            from autocustom.score.judge import fit_pole_classifier

            self.fitted = fit_pole_classifier(self.train_pairs, self.toward)
        return self.fitted


def _gen_lean(config, loaded, classifier, pairs, condition) -> Estimate:
    from autocustom.score.judge import measure_gen_lean

    return measure_gen_lean(
        loaded.model,
        loaded.tokenizer,
        classifier,
        [p.question for p in pairs],
        condition=condition,
        max_new_tokens=config.gen_tokens,
        batch_size=config.batch_size,
        n_boot=config.bootstrap,
        seed=config.seed,
    )


def _slug(reference: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reference.strip("/"))


def compare_markdown(result: dict[str, Any]) -> str:
    """The comparison table as Markdown, from `compare.json` (so reports can rebuild it)."""
    header = ["model", "method", "condition", "Lean", "BiasShift", "GenLean", "MMLU Δ (pts)", "Drift"]
    lines = [
        f"Axis {result['axis']['pole_a']}:{result['axis']['pole_b']}, toward **{result['toward']}**, "
        f"{result['n_pairs']} held-out test pairs; 95% bootstrap intervals in brackets.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in result["rows"]:
        cells = [row["model"], row["method"], row["condition"]]
        cells += [format_estimate(row["metrics"].get(name)) for name in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    for note in result.get("notes", []):
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def format_estimate(data: dict[str, float] | None) -> str:
    if not data:
        return "–"
    return f"{data['value']:+.3f} [{data['low']:+.3f}, {data['high']:+.3f}]"


def load_compare(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / RESULT).read_text())
