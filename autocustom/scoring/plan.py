"""The evaluation plan: a frozen record of everything one measurement uses, chosen once by one seed policy.

`train` (every evaluation and the final one), `shift-score`, `compare` and `run` build their plan with
`make_plan`, so the same dataset split and sizes give the same items everywhere, and the figures they
report agree by construction. The plan is written (`EvalPlan.describe()`) into every output that reports
figures, so a reader can see what was measured.

Seed policy: the evaluation items (MMLU retention questions, Drift texts) are a fixed set, drawn with
`EVAL_SEED` whatever the training seed, so figures compare across runs and seeds; the pairs are the
whole split, in file order. `bootstrap_seed` seeds only the intervals.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from autocustom.axis import Poles
from autocustom.data.io import Dataset
from autocustom.data.schema import SPLITS, Pair
from autocustom.errors import UsageError
from autocustom.llm.chat import PLAIN, PromptCondition
from autocustom.scoring.judge import DEFAULT_GEN_TOKENS
from autocustom.scoring.sizes import DRIFT_TEXTS, MMLU_QUESTIONS, evaluation_size
from autocustom.scoring.stats import DEFAULT_BOOTSTRAP

EVAL_SEED = 0  # evaluation subsets: one fixed set for every run, seed and command
EVAL_MAX_LENGTH = 512  # tokens of prompt + answer when scoring a pair; training's --max-length is its own
DEFAULT_TAIL = 0.1  # TailShift: the 10% of questions that moved least
DEFAULT_BATCH_SIZE = 16  # sequences per evaluation forward pass


@dataclass(frozen=True)
class Sizes:
    """How many evaluation items a plan uses and where each number came from (for the output)."""

    mmlu_questions: int
    mmlu_source: str
    drift_texts: int
    drift_source: str


@dataclass(frozen=True)
class EvalPlan:
    """What a measurement reads: pairs and their split, target pole, prompt condition, items and sizes.

    `condition` is the prompt the measured model sees; `base_condition` the one its base sees (the same
    stress without the method's own prompt), so BiasShift compares like with like. Empty `mmlu`,
    `drift_texts` or `gen_questions` mean those figures are not measured.
    """

    data: str
    split: str
    toward: str
    opposite: str
    pairs: tuple[Pair, ...]
    subarea_names: dict[str, str] = field(default_factory=dict, compare=False)
    condition: PromptCondition = PLAIN
    base_condition: PromptCondition = PLAIN
    mmlu: tuple = ()  # MMLUQuestion
    drift_texts: tuple[tuple[str, str], ...] = ()
    gen_questions: tuple[str, ...] = ()  # answered freely and judged against the base's replies
    judge: str | None = None  # which judge reads them, e.g. "local:smollm2-135m" or "contrast:base"
    judge_pairs: tuple[Pair, ...] = ()  # written pairs the contrast judge is validated on first
    gen_tokens: int = DEFAULT_GEN_TOKENS
    tail: float = DEFAULT_TAIL
    bootstrap: int = DEFAULT_BOOTSTRAP
    bootstrap_seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int = EVAL_MAX_LENGTH
    sizes: Sizes | None = None

    @property
    def poles(self) -> Poles:
        """The target pole and its opposite, as `make_plan` checked them."""
        return Poles(self.toward, self.opposite)

    @property
    def boot(self) -> dict[str, int]:
        """Keyword arguments of every interval this plan's figures get."""
        return {"n_boot": self.bootstrap, "seed": self.bootstrap_seed}

    def under(self, condition: PromptCondition, base_condition: PromptCondition) -> EvalPlan:
        """The same items scored under other prompts (compare's methods and stress conditions)."""
        return replace(self, condition=condition, base_condition=base_condition)

    def pairs_only(self) -> EvalPlan:
        """The pair figures alone: no MMLU, Drift or replies (prompting rows, stress conditions)."""
        return replace(self, mmlu=(), drift_texts=(), gen_questions=(), judge_pairs=())

    def describe(self) -> dict[str, Any]:
        """The plan as written into outputs: ids and sizes, not texts, and a fingerprint of all of it."""
        described = {
            "data": self.data,
            "split": self.split,
            "toward": self.toward,
            "opposite": self.opposite,
            "pair_ids": [p.id for p in self.pairs],
            "condition": _condition_dict(self.condition),
            "base_condition": _condition_dict(self.base_condition),
            "mmlu_ids": [q.id for q in self.mmlu],
            "drift_text_ids": _drift_ids(self.drift_texts),
            "gen_questions": len(self.gen_questions),
            "gen_tokens": self.gen_tokens if self.gen_questions else None,
            "judge": self.judge if self.gen_questions else None,
            "judge_pair_ids": [p.id for p in self.judge_pairs],
            "tail": self.tail,
            "bootstrap": self.bootstrap,
            "bootstrap_seed": self.bootstrap_seed,
            "eval_seed": EVAL_SEED,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "sizes": None if self.sizes is None else vars(self.sizes).copy(),
        }
        text = json.dumps({**described, "texts": [_pair_text(p) for p in self.pairs]}, sort_keys=True)
        return {**described, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}


def make_plan(
    dataset: Dataset,
    split: str,
    toward: str,
    *,
    device_type: str,
    mmlu_questions: int | None = None,
    drift_texts: int | None = None,
    mmlu: bool = True,
    drift: bool = True,
    judge: str | None = None,
    check_split: str | None = None,
    condition: PromptCondition = PLAIN,
    **settings: Any,
) -> EvalPlan:
    """The plan for one split of `dataset` toward `toward`; `settings` are EvalPlan's scalar fields.

    Sizes left None take the device's defaults (scoring/sizes.py); `mmlu`/`drift` False measure none;
    `judge` (its label) asks for free replies to every question, judged against the base's;
    `check_split` names the split whose written pairs validate that judge.
    """
    from autocustom.scoring.drift import neutral_texts
    from autocustom.scoring.mmlu import retention_subset

    pairs = dataset.split(split)
    if not pairs:
        raise UsageError(f"split '{split}' of {dataset.path} is empty", "score another split with --split")
    axis = dataset.axis
    if toward not in axis.poles:
        raise UsageError(
            f"--toward '{toward}' is not a pole of {axis.label}", f"use one of: {', '.join(axis.poles)}"
        )
    poles = axis.toward(toward)
    mmlu_n, mmlu_source = evaluation_size(mmlu_questions, MMLU_QUESTIONS, device_type)
    drift_n, drift_source = evaluation_size(drift_texts, DRIFT_TEXTS, device_type)
    sizes = Sizes(mmlu_n if mmlu else 0, mmlu_source, drift_n if drift else 0, drift_source)
    return EvalPlan(
        data=str(dataset.path),
        split=split,
        toward=poles.toward,
        opposite=poles.opposite,
        pairs=tuple(pairs),
        subarea_names={s.id: s.name for s in dataset.subareas},
        condition=condition,
        mmlu=tuple(retention_subset(mmlu_n, seed=EVAL_SEED)) if mmlu else (),
        drift_texts=tuple(neutral_texts(drift_n, seed=EVAL_SEED)) if drift else (),
        gen_questions=tuple(p.question for p in pairs) if judge else (),
        judge=judge,
        judge_pairs=_judge_pairs(dataset, check_split) if judge else (),
        sizes=sizes,
        **settings,
    )


def _judge_pairs(dataset: Dataset, split: str | None) -> tuple[Pair, ...]:
    if split is None:
        return ()
    if split not in SPLITS:
        raise UsageError(f"unknown --judge-split '{split}'", f"use one of: {', '.join(SPLITS)}")
    pairs = dataset.splits.get(split)
    if not pairs:
        raise UsageError(
            f"split '{split}' of {dataset.path} is empty: the contrast judge has no written answers to be "
            "validated on",
            "pass --judge-split with a split that has pairs (e.g. --judge-split test)",
        )
    return tuple(pairs)


def _condition_dict(condition: PromptCondition) -> dict[str, Any]:
    return {
        "system": condition.system,
        "user_suffix": condition.user_suffix,
        "few_shot": len(condition.few_shot),
        "padding_text": condition.padding_text is not None,
        "adversarial_turn": condition.adversarial_turn,
    }


def _drift_ids(texts: tuple[tuple[str, str], ...]) -> list[str]:
    return [hashlib.sha256("\n".join(t).encode()).hexdigest()[:12] for t in texts]


def _pair_text(pair: Pair) -> list[str]:
    return [pair.question, *(pair.answers[p] for p in sorted(pair.answers))]
