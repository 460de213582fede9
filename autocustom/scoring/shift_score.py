"""`shift_score`: every metric of DESIGN.md section 4 for one model on one dataset split, and its gates.

The report is plain data (`ScoreReport.to_dict()`, schema pinned in tests and documented in
docs/metrics.md), so the CLI, CI scripts and notebooks all read the same figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.data.audit import leakage_notes
from autocustom.errors import UsageError
from autocustom.fields import DATASET_HELP, required
from autocustom.layout import ADAPTER_CONFIG, run_source
from autocustom.llm.chat import PLAIN, PromptCondition
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.contrast import DEFAULT_FLUENCY_BUDGET
from autocustom.scoring.judge import CONTRAST, judge_notes, open_judge
from autocustom.scoring.measure import METRICS, Reference, measure
from autocustom.scoring.options import MeasuredOn, MeasureOptions
from autocustom.scoring.plan import EvalPlan
from autocustom.scoring.stats import Estimate, metrics_dict

log = logging.getLogger(__name__)

SCHEMA = "autocustom.shift-score/3"  # 2: the evaluation plan; 3: the judge's win rates replace GenLean


@dataclass(kw_only=True)
class ScoreConfig(MeasureOptions):
    """What to score and the gates to apply; None for a gate means it is not checked."""

    model: str = required("Run directory, HF model dir, peft adapter, hub id or packaged name.")
    data: str = required(DATASET_HELP)
    base: str | None = field(
        default=None, metadata={"help": "Base model for BiasShift; default: the one recorded in the run."}
    )
    toward: str | None = field(
        default=None, metadata={"help": "Target pole; default: the run's recorded target."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "Score the model with this system prompt (baseline)."}
    )
    few_shot: int = field(default=0, metadata={"help": "Prepend K train pairs answered as the target pole."})
    min_shift: float | None = field(default=None, metadata={"help": "Gate: BiasShift >= this (nats/token)."})
    min_lean: float | None = field(default=None, metadata={"help": "Gate: Lean >= this (in [-1, 1])."})
    max_mmlu_drop: float | None = field(
        default=None, metadata={"help": "Gate: MMLU drop vs base <= this (points)."}
    )
    max_drift: float | None = field(default=None, metadata={"help": "Gate: Drift <= this (nats/token)."})
    max_fluency_drop: float | None = field(
        default=None,
        metadata={
            "help": "Gate (--judge contrast): the replies' fluency below the judge's own replies when told "
            f"the target pole <= this (nats/token; {DEFAULT_FLUENCY_BUDGET} is ~10% less likely per token)."
        },
    )
    min_reply_share: float | None = field(
        default=None,
        metadata={"help": "Gate (--judge contrast): share of replies judged toward the pole >= this."},
    )


@dataclass
class Gate:
    name: str  # the CLI option, e.g. "min-shift"
    metric: str
    threshold: float
    value: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "threshold": self.threshold,
            "value": self.value,
            "passed": self.passed,
        }


@dataclass
class ScoreReport(MeasuredOn):
    opposite: str
    condition: dict[str, Any]
    device: str
    settings: dict[str, Any]
    metrics: dict[str, Estimate | None]
    subareas: list[dict[str, Any]]
    gates: list[Gate]
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)  # EvalPlan.describe(): what was measured

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            **self.header(),
            "opposite": self.opposite,
            "condition": self.condition,
            "device": self.device,
            "settings": self.settings,
            "metrics": metrics_dict(self.metrics),
            "subareas": self.subareas,
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "notes": self.notes,
            "plan": self.plan,
        }


def shift_score(config: ScoreConfig, *, progress: ProgressCallback = no_progress) -> ScoreReport:
    """Score `config.model` on the dataset split; raises AutocustomError on bad input (exit 2)."""
    from autocustom.data.io import load_dataset_dir
    from autocustom.runtime import resolve_device, seed_everything

    config.check(config.max_mmlu_drop)
    _check_few_shot(config)
    dataset = load_dataset_dir(config.data)
    toward = _target_pole(config, dataset.axis)
    base_ref = config.base or run_source(config.model).base
    _check_gate_inputs(config, base_ref)
    device = resolve_device(config.device)
    plan = config.plan(dataset, toward, device.type, _condition(config, dataset, toward))
    seed_everything(config.seed)
    loaded, base_model = _load(config, base_ref, device, progress)
    with open_judge(config, dataset.axis, device=config.device) as judge:
        reference = Reference(base_model, loaded.tokenizer, judge)
        measured = measure(loaded.model, reference, plan, tokenizer=loaded.tokenizer, progress=progress)
    report = ScoreReport(
        **MeasuredOn.of(config, base_ref, dataset.axis, toward),
        opposite=plan.opposite,
        condition={"system_prompt": config.system_prompt, "few_shot": config.few_shot},
        device=str(device),
        settings=_settings(config, plan, base_ref),
        metrics=measured.metrics,
        subareas=measured.subareas,
        gates=_gates(config, measured.metrics),
        notes=_notes(plan, base_ref, dataset) + judge_notes(plan.judge, measured.metrics),
        plan=plan.describe(),
    )
    for gate in report.failed_gates():
        log.info("gate %s failed: %s vs %s", gate.name, gate.value, gate.threshold)
    return report


def _target_pole(config: ScoreConfig, axis) -> str:
    toward = config.toward or run_source(config.model).toward
    if toward is None:
        raise UsageError(
            f"no target pole: {config.model} is not a run directory that records one",
            f"pass --toward with one of: {', '.join(axis.poles)}",
        )
    return toward


def _load(config: ScoreConfig, base_ref: str | None, device, progress: ProgressCallback):
    """The model and its base: the same weights when the two name one model, and a LoRA run's own base
    with the adapter disabled when it is the base asked for (no second copy); None without a base."""
    from autocustom.llm.models import AdapterDisabled, load_model, resolve_model_dir

    steps = 2 if base_ref else 1
    progress(ProgressEvent("load", 0, steps, config.model))
    placement = {"options": config, "device_map": config.device_map}
    loaded = load_model(config.model, device=device, **placement)
    base_model = None
    if base_ref is not None:
        if _is_same_model(config.model, base_ref, resolve_model_dir):
            base_model = loaded.model
        elif hasattr(loaded.model, "disable_adapter") and loaded.base_reference == base_ref:
            base_model = AdapterDisabled(loaded.model)
        else:
            base = load_model(base_ref, device=device, **placement)
            _check_tokenizers(loaded.tokenizer, base.tokenizer, config.model, base_ref)
            base_model = base.model
    progress(ProgressEvent("load", steps, steps, "done"))
    return loaded, base_model


def _settings(config: ScoreConfig, plan: EvalPlan, base_ref: str | None) -> dict[str, Any]:
    sizes = plan.sizes
    return {
        "bootstrap": config.bootstrap,
        "seed": config.seed,
        "tail": config.tail,
        "mmlu_questions": len(plan.mmlu) or None,
        "mmlu_questions_source": sizes.mmlu_source if plan.mmlu else None,
        "drift_texts": len(plan.drift_texts) if base_ref else None,
        "gen_tokens": config.gen_tokens if plan.gen_questions else None,
        "judge": plan.judge,
        "n_pairs": len(plan.pairs),
    }


def _notes(plan: EvalPlan, base_ref: str | None, dataset) -> list[str]:
    notes = leakage_notes(dataset.manifest)
    if base_ref is None:
        notes.append(
            "no base model recorded or given: BiasShift, TailShift, MMLU delta and Drift not applicable"
        )
    if plan.mmlu:
        notes.append(f"MMLU on {len(plan.mmlu)} retention questions ({plan.sizes.mmlu_source})")
    return notes


def _check_few_shot(config: ScoreConfig) -> None:
    if config.few_shot < 0:
        raise UsageError(f"--few-shot {config.few_shot} must be >= 0", "pass --few-shot 0 or more")


def _check_gate_inputs(config: ScoreConfig, base_ref: str | None) -> None:
    for spec in GATES:
        if _threshold(config, spec) is not None and spec.judge not in (None, config.judge):
            raise UsageError(
                f"--{spec.option} reads the {spec.judge} judge's figures", f"add --judge {spec.judge}"
            )
    if base_ref is not None:
        return
    needs_base = {m.name for m in METRICS if m.needs_base}
    for spec in GATES:
        if _threshold(config, spec) is not None and spec.metric in needs_base:
            raise UsageError(
                f"--{spec.option} needs a base model, and none is recorded for {config.model}",
                f"pass --base MODEL (e.g. --base {DEFAULT_MODEL}), or use --min-lean, which needs none",
            )


def _is_same_model(model: str, base: str, resolve) -> bool:
    """Same weights on disk (and no adapter on top): the base need not be loaded twice."""
    try:
        a, b = Path(resolve(model)), Path(resolve(base))
    except Exception:
        return False
    return a.exists() and a.resolve() == b.resolve() and not (a / ADAPTER_CONFIG).is_file()


def _check_tokenizers(tokenizer, base_tokenizer, model: str, base: str) -> None:
    """BiasShift compares log-probs of the same tokens; different tokenizers make it meaningless."""
    probe = ["Hello, world!", " The answer is 42.", "Quelle heure est-il ?"]
    same = tokenizer.get_vocab() == base_tokenizer.get_vocab() and all(
        tokenizer(t)["input_ids"] == base_tokenizer(t)["input_ids"] for t in probe
    )
    if not same:
        raise UsageError(
            f"base model {base} tokenizes text differently from {model}: BiasShift would compare "
            "log-probs of different tokens and mean nothing",
            "pass --base with the model this one was trained from",
        )


def _condition(config: ScoreConfig, dataset, toward: str) -> PromptCondition:
    shots: tuple[tuple[str, str], ...] = ()
    if config.few_shot:
        train = dataset.splits.get("train", [])
        if len(train) < config.few_shot:
            raise UsageError(
                f"--few-shot {config.few_shot} needs that many train pairs; the dataset has {len(train)}",
                "lower --few-shot",
            )
        shots = tuple((p.question, p.answers[toward]) for p in train[: config.few_shot])
    if not config.system_prompt and not shots:
        return PLAIN
    return PromptCondition(system=config.system_prompt, few_shot=shots)


@dataclass(frozen=True)
class GateSpec:
    """A gate option: the metric it reads, and whether the figure must stay above or below it."""

    option: str
    metric: str
    at_least: bool
    sign: float = 1.0  # -1 for a drop, which is minus the delta
    judge: str | None = None  # the --judge whose figure it reads


GATES = (
    GateSpec("min-shift", "bias_shift", at_least=True),
    GateSpec("min-lean", "lean", at_least=True),
    GateSpec("max-mmlu-drop", "mmlu_delta_points", at_least=False, sign=-1.0),
    GateSpec("max-drift", "drift", at_least=False),
    GateSpec("max-fluency-drop", "fluency_vs_prompted", at_least=False, sign=-1.0, judge=CONTRAST),
    GateSpec("min-reply-share", "reply_share", at_least=True, judge=CONTRAST),
)


def _gates(config: ScoreConfig, metrics: dict[str, Estimate | None]) -> list[Gate]:
    """Each gate compares the point estimate with its threshold; the interval is reported beside it."""
    gates = []
    for spec in GATES:
        threshold = _threshold(config, spec)
        if threshold is None:
            continue
        estimate = metrics[spec.metric]
        value = None if estimate is None else spec.sign * estimate.value
        passed = value is not None and (value >= threshold if spec.at_least else value <= threshold)
        gates.append(Gate(spec.option, spec.metric, threshold, value, passed))
    return gates


def _threshold(config: ScoreConfig, spec: GateSpec) -> float | None:
    return getattr(config, spec.option.replace("-", "_"))
