"""`shift_score`: every metric of DESIGN.md section 4 for one model on one dataset split, and its gates.

The report is plain data (`ScoreReport.to_dict()`, schema pinned in tests and documented in
docs/metrics.md), so the CLI, CI scripts and notebooks all read the same figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autocustom.chat import PLAIN, PromptCondition
from autocustom.errors import UsageError
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.score.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, evaluation_size
from autocustom.score.stats import DEFAULT_BOOTSTRAP, Estimate, bootstrap, paired_difference

log = logging.getLogger(__name__)

SCHEMA = "autocustom.shift-score/1"
METRICS = (
    "bias_shift",
    "lean",
    "base_lean",
    "tail_shift",
    "gen_lean",
    "gen_classifier_accuracy",
    "mmlu_accuracy",
    "mmlu_base_accuracy",
    "mmlu_delta_points",
    "drift",
)


@dataclass
class ScoreConfig:
    """What to score and the gates to apply; None for a gate means it is not checked."""

    model: str
    data: str
    split: str = "test"
    base: str | None = None  # default: the base recorded in the run directory or adapter
    toward: str | None = None  # default: the run's recorded target pole
    system_prompt: str | None = None  # score a prompted model (prompting baseline)
    few_shot: int = 0  # prepend K train pairs answered as the target pole
    gen: bool = False  # GenLean: generate replies and classify them
    gen_tokens: int = 48
    mmlu: bool = True
    mmlu_questions: int | None = None  # default: score.sizes.MMLU_QUESTIONS for the device
    drift_texts: int | None = None  # default: score.sizes.DRIFT_TEXTS for the device
    tail: float = 0.1
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    batch_size: int = 16
    device: str | None = None
    min_shift: float | None = None
    min_lean: float | None = None
    max_mmlu_drop: float | None = None  # accuracy points
    max_drift: float | None = None  # nats/token


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
class ScoreReport:
    model: str
    base: str | None
    data: str
    split: str
    axis: dict[str, str]
    toward: str
    opposite: str
    condition: dict[str, Any]
    device: str
    settings: dict[str, Any]
    metrics: dict[str, Estimate | None]
    subareas: list[dict[str, Any]]
    gates: list[Gate]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "base": self.base,
            "data": self.data,
            "split": self.split,
            "axis": self.axis,
            "toward": self.toward,
            "opposite": self.opposite,
            "condition": self.condition,
            "device": self.device,
            "settings": self.settings,
            "metrics": {k: (v.to_dict() if v is not None else None) for k, v in self.metrics.items()},
            "subareas": self.subareas,
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "notes": self.notes,
        }


def shift_score(config: ScoreConfig, *, progress: ProgressCallback = no_progress) -> ScoreReport:
    """Score `config.model` on the dataset split; raises AutocustomError on bad input (exit 2)."""
    from autocustom.data.io import load_dataset_dir
    from autocustom.models import load_model, recorded_base, resolve_model_dir
    from autocustom.runtime import resolve_device, seed_everything
    from autocustom.score.logprobs import pair_margins
    from autocustom.score.shift import bias_shift, lean, per_subarea, tail_shift

    _check_options(config)
    dataset = load_dataset_dir(config.data)
    pairs = dataset.split(config.split)
    if not pairs:
        raise UsageError(
            f"split '{config.split}' of {config.data} is empty", "score another split with --split"
        )
    axis = dataset.axis
    toward = config.toward or _recorded_toward(config.model)
    if toward is None:
        raise UsageError(
            f"no target pole: {config.model} is not a run directory that records one",
            f"pass --toward with one of: {', '.join(axis.poles)}",
        )
    if toward not in axis.poles:
        raise UsageError(
            f"--toward '{toward}' is not a pole of {axis.label}", f"use one of: {', '.join(axis.poles)}"
        )
    opposite = axis.opposite(toward)
    base_ref = config.base or recorded_base(config.model)
    _check_gates_need_base(config, base_ref)

    device = resolve_device(config.device)
    seed_everything(config.seed)
    notes: list[str] = []
    progress(ProgressEvent("load", 0, 2 if base_ref else 1, config.model))
    loaded = load_model(config.model, device=device)
    base = None
    if base_ref is not None:
        same = _is_same_model(config.model, base_ref, resolve_model_dir)
        base = loaded if same else load_model(base_ref, device=device)
        if not same:
            _check_tokenizers(loaded.tokenizer, base.tokenizer, config.model, base_ref)
    else:
        notes.append(
            "no base model recorded or given: BiasShift, TailShift, MMLU delta and Drift not applicable"
        )
    progress(ProgressEvent("load", 2 if base_ref else 1, 2 if base_ref else 1, "done"))

    condition = _condition(config, dataset, toward)
    boot = {"n_boot": config.bootstrap, "seed": config.seed}
    stage = _pairs_stage(progress, len(pairs), 2 if base else 1)
    margins = pair_margins(
        loaded.model, loaded.tokenizer, pairs, toward, condition=condition, batch_size=config.batch_size
    )
    stage()
    metrics: dict[str, Estimate | None] = dict.fromkeys(METRICS)
    metrics["lean"] = lean(margins, **boot)
    base_margins = None
    if base is not None:
        if base is loaded and condition == PLAIN:
            base_margins = margins  # scored against itself: the same numbers, no second pass
        else:
            base_margins = pair_margins(
                base.model, base.tokenizer, pairs, toward, batch_size=config.batch_size
            )
        stage()
        metrics["bias_shift"] = bias_shift(margins, base_margins, **boot)
        metrics["base_lean"] = lean(base_margins, **boot)
        metrics["tail_shift"] = tail_shift(margins, base_margins, config.tail, **boot)
    names = {s.id: s.name for s in dataset.subareas}
    subareas = per_subarea([p.subarea for p in pairs], margins, base_margins, names=names, **boot)

    settings: dict[str, Any] = {
        "bootstrap": config.bootstrap,
        "seed": config.seed,
        "tail": config.tail,
        "mmlu_questions": None,
        "mmlu_questions_source": None,
        "drift_texts": None,
        "gen_tokens": config.gen_tokens if config.gen else None,
        "n_pairs": len(pairs),
    }
    if config.gen:
        metrics["gen_lean"], metrics["gen_classifier_accuracy"] = _gen_lean(
            config, loaded, dataset, pairs, toward, condition, progress
        )
    if config.mmlu:
        n, source = evaluation_size(config.mmlu_questions, MMLU_QUESTIONS, device.type)
        settings.update(mmlu_questions=n, mmlu_questions_source=source)
        notes.append(f"MMLU on {n} retention questions ({source})")
        accuracy, base_accuracy, delta = _mmlu(config, loaded, base, n, progress)
        metrics.update(mmlu_accuracy=accuracy, mmlu_base_accuracy=base_accuracy, mmlu_delta_points=delta)
    if base is not None:
        n, _ = evaluation_size(config.drift_texts, DRIFT_TEXTS, device.type)
        settings["drift_texts"] = n
        metrics["drift"] = _drift(config, loaded, base, n, progress)

    report = ScoreReport(
        model=config.model,
        base=base_ref,
        data=str(config.data),
        split=config.split,
        axis={"pole_a": axis.pole_a, "pole_b": axis.pole_b},
        toward=toward,
        opposite=opposite,
        condition={"system_prompt": config.system_prompt, "few_shot": config.few_shot},
        device=str(device),
        settings=settings,
        metrics=metrics,
        subareas=subareas,
        gates=_gates(config, metrics),
        notes=notes,
    )
    for gate in report.failed_gates():
        log.info("gate %s failed: %s vs %s", gate.name, gate.value, gate.threshold)
    return report


def _check_options(config: ScoreConfig) -> None:
    if config.max_mmlu_drop is not None and not config.mmlu:
        raise UsageError("--max-mmlu-drop cannot be checked with --no-mmlu", "drop one of the two options")
    if not 0 < config.tail <= 1:
        raise UsageError(f"--tail {config.tail} must be in (0, 1]", "e.g. --tail 0.1")
    if config.few_shot < 0 or config.bootstrap < 0 or config.batch_size < 1:
        raise UsageError(
            "--few-shot and --bootstrap must be >= 0, --batch-size >= 1", "fix the option values"
        )
    for name, value in (("--mmlu-questions", config.mmlu_questions), ("--drift-texts", config.drift_texts)):
        if value is not None and value < 1:
            raise UsageError(f"{name} {value} must be at least 1", f"pass {name} 1 or more")


def _check_gates_need_base(config: ScoreConfig, base_ref: str | None) -> None:
    if base_ref is not None:
        return
    for option, value in (
        ("--min-shift", config.min_shift),
        ("--max-mmlu-drop", config.max_mmlu_drop),
        ("--max-drift", config.max_drift),
    ):
        if value is not None:
            raise UsageError(
                f"{option} needs a base model, and none is recorded for {config.model}",
                "pass --base MODEL (e.g. --base smollm2-135m), or use --min-lean, which needs none",
            )


def _recorded_toward(model: str) -> str | None:
    from autocustom.models import RUN_MARKER, is_run_dir

    path = Path(model)
    if not is_run_dir(path):
        return None
    return json.loads((path / RUN_MARKER).read_text()).get("toward")


def _is_same_model(model: str, base: str, resolve) -> bool:
    """Same weights on disk (and no adapter on top): the base need not be loaded twice."""
    try:
        a, b = Path(resolve(model)), Path(resolve(base))
    except Exception:
        return False
    return a.exists() and a.resolve() == b.resolve() and not (a / "adapter_config.json").is_file()


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


def _pairs_stage(progress: ProgressCallback, total_pairs: int, passes: int):
    done = [0]
    progress(ProgressEvent("pairs", 0, total_pairs * passes))

    def advance() -> None:
        done[0] += total_pairs
        progress(ProgressEvent("pairs", done[0], total_pairs * passes))

    return advance


def _mmlu(config, loaded, base, n: int, progress: ProgressCallback):
    from autocustom.score.mmlu import mmlu_correct, retention_subset

    questions = retention_subset(n, seed=0)  # fixed set: comparable across runs and seeds
    boot = {"n_boot": config.bootstrap, "seed": config.seed}
    models = [loaded] if base is None or base is loaded else [loaded, base]
    total = len(questions) * len(models)
    results = []
    for index, m in enumerate(models):
        offset = index * len(questions)
        results.append(
            mmlu_correct(
                m.model,
                m.tokenizer,
                questions,
                batch_size=config.batch_size,
                on_batch=lambda done, o=offset: progress(ProgressEvent("mmlu", o + done, total)),
            )
        )
    correct = results[0]
    if base is None:
        return bootstrap(correct, **boot), None, None
    base_correct = results[1] if len(results) > 1 else correct
    delta = paired_difference(correct * 100, base_correct * 100, **boot)
    return bootstrap(correct, **boot), bootstrap(base_correct, **boot), delta


def _drift(config, loaded, base, n: int, progress: ProgressCallback) -> Estimate:
    from autocustom.score.drift import drift_per_text, neutral_texts

    progress(ProgressEvent("drift", 0, n))
    texts = neutral_texts(n, seed=0)
    if base is loaded:
        values = np.zeros(len(texts))  # KL of a model to itself
    else:
        values = drift_per_text(
            loaded.model, base.model, loaded.tokenizer, texts, batch_size=config.batch_size
        )
    progress(ProgressEvent("drift", n, n))
    return bootstrap(values, n_boot=config.bootstrap, seed=config.seed)


def _gen_lean(config, loaded, dataset, pairs, toward, condition, progress):
    from autocustom.score.judge import (
        classifier_accuracy,
        classifier_splits,
        fit_pole_classifier,
        measure_gen_lean,
    )

    train, validation = classifier_splits(dataset)
    progress(ProgressEvent("gen", 0, len(pairs)))
    classifier = fit_pole_classifier(train, toward)
    boot = {"n_boot": config.bootstrap, "seed": config.seed}
    lean = measure_gen_lean(
        loaded.model,
        loaded.tokenizer,
        classifier,
        [p.question for p in pairs],
        condition=condition,
        max_new_tokens=config.gen_tokens,
        batch_size=config.batch_size,
        **boot,
    )
    progress(ProgressEvent("gen", len(pairs), len(pairs)))
    return lean, classifier_accuracy(classifier, validation, toward, **boot)


def _gates(config: ScoreConfig, metrics: dict[str, Estimate | None]) -> list[Gate]:
    """Each gate compares the point estimate with its threshold; the interval is reported beside it."""
    specs = (
        ("min-shift", "bias_shift", config.min_shift, lambda v, t: v >= t, 1.0),
        ("min-lean", "lean", config.min_lean, lambda v, t: v >= t, 1.0),
        ("max-mmlu-drop", "mmlu_delta_points", config.max_mmlu_drop, lambda v, t: v <= t, -1.0),
        ("max-drift", "drift", config.max_drift, lambda v, t: v <= t, 1.0),
    )
    gates = []
    for name, metric, threshold, ok, sign in specs:
        if threshold is None:
            continue
        estimate = metrics[metric]
        value = None if estimate is None else sign * estimate.value  # a drop is minus the delta
        gates.append(Gate(name, metric, threshold, value, value is not None and bool(ok(value, threshold))))
    return gates
