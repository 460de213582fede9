"""One measurement: a model against its base on an evaluation plan. Every command's figures come from here.

`measure(model, reference, plan)` is what the training evaluation callback, `shift-score`, `compare` and
`run` call. It first observes per-item numbers (margins, MMLU correctness, per-text Drift, the judge's
verdicts on free replies), then computes every metric of `METRICS` from them: a metric is a row of data (name, whether
it needs a base, unit, the observations it reads, its function), so a new metric touches one place.

The base side of a measurement (its margins under a condition, its MMLU answers, its free replies)
is computed once by `Reference` and reused by every measurement against that base: each
evaluation of a training run, each row of a comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocustom.llm.chat import PromptCondition
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.scoring.plan import EvalPlan
from autocustom.scoring.shift import bias_shift, lean, per_subarea, tail_shift
from autocustom.scoring.stats import Estimate, bootstrap, metrics_dict, paired_difference
from autocustom.scoring.winrate import length_controlled_win_rate, position_consistency, win_rate


@dataclass
class Observations:
    """Per-item numbers of one measurement; None where the plan or the lack of a base left them out."""

    margins: np.ndarray | None = None  # m(q) of the model, per pair
    base_margins: np.ndarray | None = None  # m(q) of the base under plan.base_condition
    mmlu_correct: np.ndarray | None = None  # 0/1 per retention question
    base_mmlu_correct: np.ndarray | None = None
    drift: np.ndarray | None = None  # KL(base || model) per neutral text, nats/token
    verdicts: np.ndarray | None = None  # (n, 2) the judge: 1 the model's reply is more the pole, 0 the base's
    reply_tokens: np.ndarray | None = None  # length of each free reply, in tokens
    base_reply_tokens: np.ndarray | None = None
    # the contrast judge (scoring/contrast.py): r per reply, fluency (lp told the target pole) per reply
    contrast: np.ndarray | None = None
    base_contrast: np.ndarray | None = None
    fluency: np.ndarray | None = None
    base_fluency: np.ndarray | None = None  # the base's replies under plan.base_condition
    prompted_fluency: np.ndarray | None = None  # the judge's own replies when told the target pole
    repetitive: np.ndarray | None = None  # 1 per reply that loops or is empty
    base_repetitive: np.ndarray | None = None
    judge_check: np.ndarray | None = None  # per written pair: share of its answers judged right


@dataclass(frozen=True)
class Metric:
    """One reported figure: computed from `inputs` (Observations fields) by `compute(plan, *inputs)`."""

    name: str
    label: str  # how tables and plots title it
    needs_base: bool
    unit: str
    inputs: tuple[str, ...]
    compute: Callable[..., Estimate]

    def __call__(self, plan: EvalPlan, observations: Observations) -> Estimate | None:
        values = [getattr(observations, name) for name in self.inputs]
        return None if any(v is None for v in values) else self.compute(plan, *values)


METRICS: tuple[Metric, ...] = (
    Metric("bias_shift", "BiasShift", True, "nats/token", ("margins", "base_margins"), lambda p, t, b: bias_shift(t, b, **p.boot)),
    Metric("lean", "Lean", False, "[-1, 1]", ("margins",), lambda p, m: lean(m, **p.boot)),
    Metric("base_lean", "base Lean", True, "[-1, 1]", ("base_margins",), lambda p, m: lean(m, **p.boot)),
    Metric(
        "tail_shift", "TailShift", True, "nats/token", ("margins", "base_margins"),
        lambda p, t, b: tail_shift(t, b, p.tail, **p.boot),
    ),
    Metric("win_rate", "win rate vs base", True, "share", ("verdicts",), lambda p, v: win_rate(v, **p.boot)),
    Metric(
        "lc_win_rate", "LC win rate", True, "share", ("verdicts", "reply_tokens", "base_reply_tokens"),
        lambda p, v, n, b: length_controlled_win_rate(v, n, b, **p.boot),
    ),
    Metric("judge_consistency", "judge consistency", True, "share", ("verdicts",), lambda p, v: position_consistency(v, **p.boot)),
    Metric("reply_tokens", "reply tokens", False, "tokens", ("reply_tokens",), lambda p, n: bootstrap(n, **p.boot)),
    Metric("judge_accuracy", "judge accuracy", True, "share", ("judge_check",), lambda p, c: bootstrap(c, **p.boot)),
    Metric("reply_share", "replies toward pole", True, "share", ("contrast",), lambda p, r: bootstrap(r > 0, **p.boot)),
    Metric("base_reply_share", "base replies toward pole", True, "share", ("base_contrast",), lambda p, r: bootstrap(r > 0, **p.boot)),
    Metric(
        "reply_shift", "reply shift", True, "nats/token", ("contrast", "base_contrast"),
        lambda p, r, b: paired_difference(r, b, **p.boot),
    ),
    Metric(  # the share's own paired change: replies the judge moved across to the pole, net of those moved back
        "reply_share_gain", "reply share vs base", True, "share", ("contrast", "base_contrast"),
        lambda p, r, b: paired_difference(r > 0, b > 0, **p.boot),
    ),
    Metric("fluency", "fluency", True, "nats/token", ("fluency",), lambda p, f: bootstrap(f, **p.boot)),
    Metric(
        "fluency_vs_prompted", "fluency vs prompted", True, "nats/token", ("fluency", "prompted_fluency"),
        lambda p, f, g: paired_difference(f, g, **p.boot),
    ),
    Metric(
        "fluency_vs_base", "fluency vs base", True, "nats/token", ("fluency", "base_fluency"),
        lambda p, f, g: paired_difference(f, g, **p.boot),
    ),
    Metric("repetition", "repetition", False, "share", ("repetitive",), lambda p, r: bootstrap(r, **p.boot)),
    Metric("base_repetition", "base repetition", True, "share", ("base_repetitive",), lambda p, r: bootstrap(r, **p.boot)),
    Metric("mmlu_accuracy", "MMLU", False, "share", ("mmlu_correct",), lambda p, c: bootstrap(c, **p.boot)),
    Metric("mmlu_base_accuracy", "base MMLU", True, "share", ("base_mmlu_correct",), lambda p, c: bootstrap(c, **p.boot)),
    Metric(
        "mmlu_delta_points", "MMLU Δ (pts)", True, "accuracy points", ("mmlu_correct", "base_mmlu_correct"),
        lambda p, a, b: paired_difference(a * 100, b * 100, **p.boot),
    ),
    Metric("drift", "Drift", True, "nats/token", ("drift",), lambda p, d: bootstrap(d, **p.boot)),
)  # fmt: skip
LABELS = {m.name: m.label for m in METRICS}
METRIC = {m.name: m for m in METRICS}


@dataclass
class Measurement:
    """The figures of one model on one plan, with the observations they were computed from."""

    plan: EvalPlan
    observations: Observations
    metrics: dict[str, Estimate | None]
    subareas: list[dict[str, Any]] = field(default_factory=list)

    def metrics_dict(self) -> dict[str, dict[str, float | int] | None]:
        return metrics_dict(self.metrics)


class Reference:
    """The base model's side of every measurement against it, each part computed once and kept.

    Holds the frozen base (Drift needs its distributions, so it stays loaded) and memoises its margins
    per (pairs, condition), its MMLU answers per question set and its free replies per question set
    and condition. `judge` compares a model's replies with the base's (None: no reply figures).
    `model=None` is a measurement without a base: only the figures that need none are computed.
    """

    def __init__(self, model, tokenizer, judge=None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.judge = judge
        self._memo: dict[tuple, Any] = {}

    def margins(self, plan: EvalPlan) -> np.ndarray | None:
        if self.model is None:
            return None
        key = ("margins", plan.data, _pair_key(plan), plan.base_condition, plan.max_length)
        return self._remember(key, lambda: _margins(self.model, self.tokenizer, plan, plan.base_condition))

    def mmlu_correct(self, plan: EvalPlan) -> np.ndarray | None:
        if self.model is None or not plan.mmlu:
            return None
        key = ("mmlu", tuple(q.id for q in plan.mmlu))
        return self._remember(key, lambda: _mmlu(self.model, self.tokenizer, plan))

    def replies(self, plan: EvalPlan) -> tuple[list[str], np.ndarray]:
        """The base's free replies under `plan.base_condition`, and their lengths in tokens."""
        key = ("replies", plan.gen_questions, plan.base_condition, plan.gen_tokens)
        return self._remember(key, lambda: _replies(self.model, self.tokenizer, plan, plan.base_condition))

    def judge_check(self, plan: EvalPlan) -> np.ndarray:
        """The contrast judge's verdicts on the plan's written pairs (its validation)."""
        key = ("judge_check", plan.toward, *(p.id for p in plan.judge_pairs))
        return self._remember(
            key,
            lambda: self.judge.check(self.judge_scorer(), plan.judge_pairs, plan.poles, **_batching(plan)),
        )

    def reply_scores(self, plan: EvalPlan, questions, replies, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        """The contrast judge's (r, fluency) of replies the reference made, kept under `key`."""
        key = ("reply_scores", plan.toward, plan.gen_questions, plan.gen_tokens, *key)
        return self._remember(
            key,
            lambda: self.judge.reply_scores(
                self.judge_scorer(), questions, replies, plan.poles, **_batching(plan)
            ),
        )

    def prompted_replies(self, plan: EvalPlan) -> list[str]:
        """The contrast judge's own replies when told the target pole: what prompting gets."""
        from autocustom.scoring.contrast import pole_condition

        key = ("prompted_replies", plan.gen_questions, plan.toward, plan.gen_tokens)
        model, tokenizer = self.judge_scorer()
        condition = pole_condition(self.judge.axis, plan.toward)
        return self._remember(key, lambda: _replies(model, tokenizer, plan, condition)[0])

    def judge_scorer(self) -> tuple[Any, Any]:
        """The (model, tokenizer) the contrast judge reads with: its own, or this base."""
        return self.judge.scorer(self.model, self.tokenizer)

    def _remember(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def measure(
    model,
    reference: Reference,
    plan: EvalPlan,
    *,
    tokenizer=None,
    progress: ProgressCallback = no_progress,
) -> Measurement:
    """Every metric of `model` against `reference` on `plan` (model in eval mode for the duration).

    `model` may be the reference's own model (a base scored against itself, a prompting baseline):
    its margins are then the memoised base margins where the conditions agree, and its Drift is 0.
    """
    tokenizer = tokenizer or reference.tokenizer
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        observations = _observe(model, tokenizer, reference, plan, progress)
    finally:
        model.train(was_training)
    metrics = {metric.name: metric(plan, observations) for metric in METRICS}
    subareas = per_subarea(
        [p.subarea for p in plan.pairs],
        observations.margins,
        observations.base_margins,
        names=plan.subarea_names,
        **plan.boot,
    )
    return Measurement(plan, observations, metrics, subareas)


def _observe(model, tokenizer, reference: Reference, plan: EvalPlan, progress) -> Observations:
    is_base = model is reference.model
    progress(ProgressEvent("pairs", 0, len(plan.pairs)))
    if is_base and plan.condition == plan.base_condition:
        margins = reference.margins(plan)
    else:
        margins = _margins(model, tokenizer, plan, plan.condition)
    observed = Observations(margins=margins, base_margins=reference.margins(plan))
    progress(ProgressEvent("pairs", len(plan.pairs), len(plan.pairs)))
    if plan.mmlu:
        progress(ProgressEvent("mmlu", 0, len(plan.mmlu)))
        observed.base_mmlu_correct = reference.mmlu_correct(plan)
        observed.mmlu_correct = observed.base_mmlu_correct if is_base else _mmlu(model, tokenizer, plan)
        progress(ProgressEvent("mmlu", len(plan.mmlu), len(plan.mmlu)))
    if plan.drift_texts and reference.model is not None:
        progress(ProgressEvent("drift", 0, len(plan.drift_texts)))
        observed.drift = (
            np.zeros(len(plan.drift_texts)) if is_base else _drift(model, tokenizer, reference, plan)
        )
        progress(ProgressEvent("drift", len(plan.drift_texts), len(plan.drift_texts)))
    if plan.gen_questions and reference.judge is not None and reference.model is not None:
        progress(ProgressEvent("replies", 0, len(plan.gen_questions)))
        _judge(model, tokenizer, reference, plan, observed, is_base)
        progress(ProgressEvent("replies", len(plan.gen_questions), len(plan.gen_questions)))
    return observed


def _margins(model, tokenizer, plan: EvalPlan, condition: PromptCondition) -> np.ndarray:
    from autocustom.scoring.logprobs import pair_margins

    return pair_margins(
        model,
        tokenizer,
        list(plan.pairs),
        plan.toward,
        condition=condition,
        batch_size=plan.batch_size,
        max_length=plan.max_length,
    )


def _mmlu(model, tokenizer, plan: EvalPlan) -> np.ndarray:
    from autocustom.scoring.mmlu import mmlu_correct

    return mmlu_correct(model, tokenizer, plan.mmlu, batch_size=plan.batch_size)


def _drift(model, tokenizer, reference: Reference, plan: EvalPlan) -> np.ndarray:
    from autocustom.scoring.drift import drift_per_text

    return drift_per_text(model, reference.model, tokenizer, plan.drift_texts, batch_size=plan.batch_size)


def _judge(
    model, tokenizer, reference: Reference, plan: EvalPlan, observed: Observations, is_base: bool
) -> None:
    """The model's free replies, their lengths, and what the judge reads in them against the base's.

    The base under its own condition is not judged against itself: its replies are the comparison.
    """
    from autocustom.scoring.contrast import ContrastJudge

    base_replies, observed.base_reply_tokens = reference.replies(plan)
    if is_base and plan.condition == plan.base_condition:
        replies, observed.reply_tokens = base_replies, observed.base_reply_tokens
    else:
        replies, observed.reply_tokens = _replies(model, tokenizer, plan, plan.condition)
    if isinstance(reference.judge, ContrastJudge):
        _contrast(reference, plan, observed, replies, base_replies)
    elif replies is not base_replies:
        observed.verdicts = reference.judge.verdicts(plan.gen_questions, replies, base_replies, plan.poles)


def _contrast(
    reference: Reference, plan: EvalPlan, observed: Observations, replies: list[str], base_replies: list[str]
) -> None:
    """The contrast judge's figures: its validation, then the replies' lean, fluency and loops."""
    from autocustom.scoring.contrast import repetitive

    questions = plan.gen_questions
    observed.judge_check = reference.judge_check(plan)
    base = reference.reply_scores(plan, questions, base_replies, ("base", plan.base_condition))
    observed.base_contrast, observed.base_fluency = base
    prompted = reference.prompted_replies(plan)
    observed.prompted_fluency = reference.reply_scores(plan, questions, prompted, ("prompted",))[1]
    if replies is base_replies:
        observed.contrast, observed.fluency = base
    else:
        judge = reference.judge
        observed.contrast, observed.fluency = judge.reply_scores(
            reference.judge_scorer(), questions, replies, plan.poles, **_batching(plan)
        )
    observed.repetitive, observed.base_repetitive = repetitive(replies), repetitive(base_replies)


def _replies(model, tokenizer, plan: EvalPlan, condition: PromptCondition) -> tuple[list[str], np.ndarray]:
    """Greedy replies to the plan's questions and their lengths in tokens (a method that only makes
    replies longer or shorter shows here, and the length-controlled win rate discounts it)."""
    from autocustom.scoring.judge import generate_replies

    replies = generate_replies(
        model,
        tokenizer,
        list(plan.gen_questions),
        condition=condition,
        max_new_tokens=plan.gen_tokens,
        batch_size=plan.batch_size,
    )
    lengths = [len(tokenizer(reply, add_special_tokens=False)["input_ids"]) for reply in replies]
    return replies, np.asarray(lengths, dtype=np.float64)


def _batching(plan: EvalPlan) -> dict[str, int]:
    return {"batch_size": plan.batch_size, "max_length": plan.max_length}


def _pair_key(plan: EvalPlan) -> tuple[str, ...]:
    return (plan.toward, *(p.id for p in plan.pairs))
