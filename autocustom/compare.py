"""`compare`: every method on the same held-out pairs and the same metrics, in one table.

Rows are (model, method, condition). Prompting baselines and trained models (contrastive, DPO, SimPO,
same data, steps and learning rate) are scored clean and under stress (distracting padding, an
adversarial user turn). BiasShift compares each row with the base model under the same condition, so
a stress that moves every model alike does not count as a shift. Nothing in the table is typed by
hand: every cell is computed in the run, and resumed runs reuse cells already computed (stored per
row in `rows/`) and training runs already finished (in `methods/`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autocustom.assets import DEFAULT_MODEL
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
from autocustom.chat import PLAIN
from autocustom.data.io import load_dataset_dir
from autocustom.errors import OutputExistsError, UsageError
from autocustom.fields import DATASET_HELP, required
from autocustom.fileio import read_json, write_json_atomic, write_text_atomic
from autocustom.layout import COMPARE_CONFIG, COMPARE_RESULT, COMPARE_TABLE, compare_cell, compare_method_run
from autocustom.models import LoadOptions
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.score.measure import METRIC, Measurement, Observations, Reference, measure
from autocustom.score.plan import DEFAULT_BATCH_SIZE, DEFAULT_GEN_TOKENS, EVAL_SEED, EvalPlan, make_plan
from autocustom.score.shift_score import DEVICE_MAP_HELP, check_device_map
from autocustom.score.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, size_help
from autocustom.score.stats import DEFAULT_BOOTSTRAP, Estimate

log = logging.getLogger(__name__)

SCHEMA = "autocustom.compare/2"  # 2: the evaluation plan is written into compare.json
PADDING_SOURCE = 200  # MMLU questions the distracting padding is cut from: more than 256 tokens' worth
COLUMNS = ("lean", "bias_shift", "gen_lean", "mmlu_delta_points", "drift")


@dataclass
class CompareConfig(LoadOptions):
    """One comparison: which models, methods and stress conditions, and the shared training budget.

    The loading options (`--dtype`, `--load-in-4bit`, ...) apply to every scored and trained model.
    """

    data: str = required(DATASET_HELP)
    toward: str = required("The pole every method aims for.")
    out: str = required("Comparison directory (resumable).")
    models: list[str] = field(
        default_factory=lambda: [DEFAULT_MODEL],
        metadata={"help": "Comma-separated models; trained methods use the first."},
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": "Comma-separated methods."}
    )
    padding: list[int] = field(
        default_factory=lambda: [64, 256],
        metadata={"help": "Distracting-token lengths to test (comma-separated)."},
    )
    adversarial: bool = field(
        default=True,
        metadata={"help": "Add the adversarial user turn.", "flag": "--adversarial/--no-adversarial"},
    )
    few_shot: int = field(default=3, metadata={"help": "Train pairs shown to the few-shot baseline."})
    max_steps: int = field(default=30, metadata={"help": "Training steps of every trained method."})
    lr: float | None = field(default=None, metadata={"help": "Learning rate of every trained method."})
    train_batch_size: int = field(default=4, metadata={"help": "Pairs per training step."})
    eval_steps: int = field(default=10, metadata={"help": "Validation evaluation interval during training."})
    gen: bool = field(
        default=False,
        metadata={"help": "Also measure GenLean (generates replies: slow on CPU).", "flag": "--gen"},
    )
    gen_tokens: int = field(
        default=DEFAULT_GEN_TOKENS, metadata={"help": "Max new tokens per reply for --gen."}
    )
    mmlu_questions: int | None = field(
        default=None, metadata={"help": size_help("MMLU retention subset size", MMLU_QUESTIONS)}
    )
    drift_texts: int | None = field(
        default=None, metadata={"help": size_help("Neutral texts for Drift", DRIFT_TEXTS)}
    )
    bootstrap: int = field(
        default=DEFAULT_BOOTSTRAP, metadata={"help": "Bootstrap resamples for the intervals."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of training and intervals."})
    batch_size: int = field(
        default=DEFAULT_BATCH_SIZE, metadata={"help": "Sequences per evaluation forward pass."}
    )
    device: str | None = field(default=None, metadata={"help": "auto, cpu, cuda, cuda:N."})
    device_map: str | None = field(default=None, metadata={"help": DEVICE_MAP_HELP})

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
    plan: dict[str, Any] = field(default_factory=dict)  # EvalPlan.describe() of the test-split plan

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
            "plan": self.plan,
        }

    def to_markdown(self) -> str:
        from autocustom.report import compare_markdown

        return compare_markdown(self.to_dict())


def compare(config: CompareConfig, *, progress: ProgressCallback = no_progress) -> CompareResult:
    """Run (or resume) a comparison into `config.out`; raises AutocustomError on bad input (exit 2)."""
    from autocustom.runtime import resolve_device

    started = time.monotonic()
    check_methods(config.methods)
    if config.max_steps <= 0 or config.few_shot < 0 or not config.models:
        raise UsageError(
            "--max-steps must be positive, --few-shot >= 0, --models non-empty", "fix the options"
        )
    dataset = load_dataset_dir(config.data)
    if not dataset.splits.get("test"):
        raise UsageError(f"the test split of {config.data} is empty", "regenerate with more subareas")
    device = resolve_device(config.device)
    check_device_map(config.device_map)
    config.check_loading(device)
    plan = compare_plan(config, dataset, device.type)  # refuses --gen without train/validation now
    out = Path(config.out)
    _claim_output(out, config, dataset.axis.label)
    training = _train_methods(config, out, progress)
    scoring = _Scoring(config, out, dataset, plan, device, progress)
    rows: list[Row] = []
    accuracy = None
    for model_index, model_ref in enumerate(config.models):
        methods = [m for m in config.methods if model_index == 0 or m in PROMPT_METHODS]
        model_rows, model_accuracy = scoring.model_rows(model_ref, methods)
        rows.extend(model_rows)
        accuracy = accuracy or model_accuracy
    result = CompareResult(
        config, dataset.axis.to_dict(), plan.opposite, len(plan.pairs), rows, training,
        time.monotonic() - started, _notes(accuracy), accuracy, plan.describe(),
    )  # fmt: skip
    write_json_atomic(out / COMPARE_RESULT, result.to_dict())
    write_text_atomic(out / COMPARE_TABLE, result.to_markdown())
    return result


def compare_plan(config: CompareConfig, dataset, device_type: str) -> EvalPlan:
    """The test-split plan every row is measured on (each row under its own prompt condition)."""
    return make_plan(
        dataset,
        "test",
        config.toward,
        device_type=device_type,
        mmlu_questions=config.mmlu_questions,
        drift_texts=config.drift_texts,
        gen=config.gen,
        gen_tokens=config.gen_tokens,
        bootstrap=config.bootstrap,
        bootstrap_seed=config.seed,
        batch_size=config.batch_size,
    )


def _notes(accuracy: Estimate | None) -> list[str]:
    notes = [
        "BiasShift: vs the base model under the same condition; MMLU delta and Drift: trained methods only "
        "(prompting leaves the weights unchanged)",
    ]
    if accuracy is not None:
        notes.append(
            "GenLean: free replies labelled by an embedding classifier fitted on the train split's answers; "
            f"it labels the validation split's answers correctly {accuracy}"
        )
    return notes


def _claim_output(out: Path, config: CompareConfig, axis_label: str) -> None:
    """Refuse a directory that holds another comparison (another axis or target); resume the same one."""
    marker = out / COMPARE_CONFIG
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
                out=str(compare_method_run(out, method)),
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
                **config.load_options(),
                resume=True,
            ),
            progress=progress,
        )
        summaries[method] = result.to_dict()
    return summaries


@dataclass
class _Scoring:
    """What every row of a comparison is measured with: one plan, one base per model, resumable cells."""

    config: CompareConfig
    out: Path
    dataset: Any
    plan: EvalPlan
    device: Any
    progress: ProgressCallback

    def model_rows(self, model_ref: str, methods: list[str]) -> tuple[list[Row], Estimate | None]:
        """Rows of one model (the base first), and the reply classifier's accuracy when replies are judged."""
        from autocustom.models import load_model
        from autocustom.score.mmlu import retention_subset

        placement = {"options": self.config, "device_map": self.config.device_map}
        base = load_model(model_ref, device=self.device, **placement)
        reference = Reference(base.model, base.tokenizer)
        conditions = stress_conditions(self.config.padding, self.config.adversarial)
        padding_source = [q.question for q in retention_subset(PADDING_SOURCE, seed=EVAL_SEED)]
        rows, total = [], len(methods) * len(conditions)
        for method in ["base", *[m for m in methods if m != "base"]]:
            trained = method not in PROMPT_METHODS
            loaded = (
                load_model(str(compare_method_run(self.out, method)), device=self.device, **placement)
                if trained
                else base
            )
            train_pairs = self.dataset.splits.get("train", [])
            prompt = method_condition(
                method, self.dataset.axis, self.config.toward, train_pairs, self.config.few_shot
            )
            for condition in conditions:
                stage = f"score {model_ref}"
                self.progress(ProgressEvent(stage, len(rows), total, f"{method} / {condition}"))
                cell = compare_cell(self.out, _slug(model_ref), method, condition)
                if not cell.is_file():
                    stress = {
                        "opposite": self.plan.opposite,
                        "tokenizer": loaded.tokenizer,
                        "padding_source": padding_source,
                    }
                    plan = self._cell_plan(
                        apply_stress(prompt, condition, **stress),
                        apply_stress(PLAIN, condition, **stress),
                        trained,
                        condition,
                    )
                    measured = measure(loaded.model, reference, plan, tokenizer=loaded.tokenizer)
                    write_json_atomic(cell, _row(model_ref, method, condition, measured).to_dict())
                if method in methods:
                    rows.append(Row.from_dict(read_json(cell)))
        self.progress(ProgressEvent(f"score {model_ref}", total, total, "done"))
        return rows, self._classifier_accuracy(reference)

    def _cell_plan(self, condition, base_condition, trained: bool, stress: str) -> EvalPlan:
        """MMLU and Drift for trained models on the plain prompt; replies on the plain prompt only."""
        plan = self.plan.under(condition, base_condition)
        if stress != PLAIN_CONDITION:
            return plan.pairs_only()
        if not trained:
            return replace(plan, mmlu=(), drift_texts=())
        return plan

    def _classifier_accuracy(self, reference: Reference) -> Estimate | None:
        observed = Observations(classifier_correct=reference.classifier_correct(self.plan))
        return METRIC["gen_classifier_accuracy"](self.plan, observed)


def _row(model_ref: str, method: str, condition: str, measured: Measurement) -> Row:
    metrics = {name: measured.metrics[name] for name in COLUMNS}
    if method == "base":
        metrics["bias_shift"] = None  # the base against itself: 0 by construction, not a finding
    margins = measured.observations.margins
    return Row(model_ref, method, condition, padding_length(condition), metrics, margins.tolist())


def _slug(reference: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reference.strip("/"))
