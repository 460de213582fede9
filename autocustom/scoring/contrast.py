"""The pole-contrast judge of free replies, and what a customization costs them (fluency, repetition).

A reply's lean is read from a judge model told each pole in turn (`prompts/contrast.md`):

    r(reply) = lp(reply | system: "Answer in a <toward> way") - lp(reply | system: "Answer in a <opposite> way")

mean per-token log-probs, so r > 0 says the judge finds the reply more typical of an answer written the
target pole's way. The judge is the base model unless another is named: it needs no second model, has
no position to be biased by (the pairwise judge of `scoring/judge.py` gave the same verdict in both
orders for 0% of questions on the packaged model) and reads offline. It knows only the poles its model
knows, so before a figure is read it is **validated on written answers**: on a split's pairs (the
validation split by default) the share of answers whose sign is right (the target pole's answer
r > 0, the opposite's r < 0). Below `READABLE_ACCURACY`, or with an interval that reaches chance, the
reply figures are called unreadable.

The same scores price the move. **Fluency** is lp(reply | told the target pole's way): how likely the
judge finds the reply as an answer in that pole's way, compared per question with the judge's own
replies under that instruction (what prompting gets) and with the base's unprompted replies. Greedy
replies favour the model that made them, so the prompted judge's own replies are a generous reference:
a trained model's fluency below it is a cost, not noise. **Repetition** is the share of replies that
loop (a word 4-gram three or more times, or nothing at all), the degenerate case a mean log-prob can
hide (a loop of likely tokens scores well).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autocustom.axis import Axis, Poles
from autocustom.data.pair_check import CHANCE  # its interval must clear chance: a lucky 6 of 8 is no evidence
from autocustom.data.parsing import REPEAT_NGRAM, REPEAT_TIMES, is_repetitive
from autocustom.data.schema import Pair
from autocustom.llm.chat import PromptCondition, render_prompt
from autocustom.scoring.stats import Estimate, estimate_from

# Below this share of written answers judged on the right side, one reply in four or more would be
# labelled the wrong pole: its reply share could not tell a moved model from judge error. The packaged
# model clears it on formal:casual (93-95%) and optimistic:pessimistic (83%), not on political lean.
READABLE_ACCURACY = 0.75
DEFAULT_FLUENCY_BUDGET = 0.1  # nats/token below the prompted judge's replies: ~10% less likely per token
# the figures the judge's validation stands behind: without it they cannot be read
JUDGED = ("reply_share", "base_reply_share", "reply_shift", "reply_share_gain")


def pole_condition(axis: Axis, pole: str) -> PromptCondition:
    """The system message the judge reads a reply under: answer in `pole`'s way."""
    from autocustom.prompts import load_prompt

    description = axis.description(pole)
    text = load_prompt("contrast").render(pole=pole, description=f" ({description})" if description else "")
    return PromptCondition(system=text[-1]["content"])


@dataclass(frozen=True)
class ContrastJudge:
    """Scores replies by the pole-contrast score under `model` (None: the base of each measurement)."""

    axis: Axis
    label: str
    model: Any = None
    tokenizer: Any = None

    def scorer(self, reference_model, reference_tokenizer) -> tuple[Any, Any]:
        """The (model, tokenizer) that reads: the judge's own, or the base's."""
        if self.model is None:
            return reference_model, reference_tokenizer
        return self.model, self.tokenizer

    def reply_scores(
        self, scorer, questions: Sequence[str], replies: Sequence[str], poles: Poles, **batching: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(r, fluency) per reply: the contrast score toward `poles.toward`, and lp under its instruction."""
        lp_toward = _reply_logprobs(scorer, self.axis, questions, replies, poles.toward, **batching)
        lp_opposite = _reply_logprobs(scorer, self.axis, questions, replies, poles.opposite, **batching)
        return lp_toward - lp_opposite, lp_toward

    def check(self, scorer, pairs: Sequence[Pair], poles: Poles, **batching: int) -> np.ndarray:
        """Per written pair, the share of its two answers the judge puts on the right side (0, 0.5 or 1)."""
        r_toward_answer, r_opposite_answer = self.written_scores(scorer, pairs, poles, **batching)
        return ((r_toward_answer > 0).astype(float) + (r_opposite_answer < 0).astype(float)) / 2

    def written_scores(
        self, scorer, pairs: Sequence[Pair], poles: Poles, **batching: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per written pair, the contrast score toward `poles.toward` of its toward answer and of its
        opposite answer: the validation of the judge, and the pair check's lean (`inspect`)."""
        from autocustom.scoring.logprobs import pair_logprobs

        model, tokenizer = scorer
        toward, opposite = poles.toward, poles.opposite
        told_toward = pair_logprobs(
            model, tokenizer, list(pairs), toward, condition=pole_condition(self.axis, toward), **batching
        )
        told_opposite = pair_logprobs(
            model, tokenizer, list(pairs), toward, condition=pole_condition(self.axis, opposite), **batching
        )
        return told_toward[0] - told_opposite[0], told_toward[1] - told_opposite[1]


def _reply_logprobs(
    scorer, axis: Axis, questions: Sequence[str], replies: Sequence[str], pole: str, **batching: int
) -> np.ndarray:
    from autocustom.scoring.logprobs import answer_logprobs

    model, tokenizer = scorer
    condition = pole_condition(axis, pole)
    prompts = [render_prompt(tokenizer, condition.conversation(q)) for q in questions]
    return answer_logprobs(model, tokenizer, prompts, list(replies), **batching)


def repetitive(replies: Sequence[str]) -> np.ndarray:
    return np.array([float(is_repetitive(r)) for r in replies])


def judge_readable(metrics: dict[str, Any]) -> bool | None:
    """Whether the contrast judge cleared its validation (None: no contrast judge ran).

    Takes Estimates or their dicts, so renderers of written JSON read the same rule.
    """
    accuracy = metrics.get("judge_accuracy")
    if accuracy is None:
        return None
    if not isinstance(accuracy, Estimate):
        accuracy = Estimate(**accuracy)
    return bool(accuracy.value >= READABLE_ACCURACY and accuracy.low > CHANCE)


def contrast_notes(judge: str, metrics: dict[str, Estimate | None]) -> list[str]:
    """What the contrast judge's figures say and whether they can be read, in words."""
    accuracy = metrics.get("judge_accuracy")
    if accuracy is None:
        return []
    notes = [_accuracy_note(judge, accuracy)]
    fluency = metrics.get("fluency_vs_prompted")
    if fluency is not None:
        notes.append(_fluency_note(fluency, "the judge's own replies when told the target pole"))
    base_fluency = metrics.get("fluency_vs_base")
    if base_fluency is not None:
        notes.append(_fluency_note(base_fluency, "the base's unprompted replies"))
    repeated = metrics.get("repetition")
    if repeated is not None:
        base = metrics.get("base_repetition")
        against = f", the base's {base.value:.0%}" if base is not None else ""
        notes.append(
            f"{repeated.value:.0%} [{repeated.low:.0%}, {repeated.high:.0%}] of replies loop (a word "
            f"{REPEAT_NGRAM}-gram {REPEAT_TIMES}+ times, or empty; n={repeated.n}){against}"
        )
    return notes


def _accuracy_note(judge: str, accuracy: Estimate) -> str:
    told = (
        f"the contrast judge ({judge}) put {accuracy.value:.0%} [{accuracy.low:.0%}, {accuracy.high:.0%}] of "
        f"written answers on their own pole's side (n={accuracy.n} pairs)"
    )
    unreadable = (
        "so the reply figures (replies toward pole, reply shift) are unreadable; name a model that knows "
        "the axis with --judge-model"
    )
    if accuracy.value < READABLE_ACCURACY:
        return f"{told}, below {READABLE_ACCURACY:.0%}: this judge cannot tell the poles apart, {unreadable}"
    if accuracy.low <= CHANCE:
        return f"{told}, an interval that reaches chance ({CHANCE:.0%}) on so few pairs, {unreadable}"
    return f"{told}: its reply figures can be read"


def _fluency_note(difference: Estimate, reference: str) -> str:
    """A paired log-prob difference per token in words: how many times less likely per token."""
    interval = f"{difference.value:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}] nats/token, n={difference.n}"
    if difference.low <= 0 <= difference.high:
        return f"fluency: replies are not distinguishable from {reference} ({interval})"
    ratio = float(np.exp(abs(difference.value)))
    direction = "less" if difference.value < 0 else "more"
    return f"fluency: replies are {ratio:.2g}x {direction} likely per token than {reference} ({interval})"


def reply_sentence(metrics: dict[str, Any], toward: str) -> str | None:
    """The model's own replies in one sentence (`run`'s closing line); None when none were judged."""
    share, base = metrics.get("reply_share"), metrics.get("base_reply_share")
    if share is None or base is None:
        return None
    n = share["n"]
    if not judge_readable(metrics):
        return (
            f"its own replies cannot be read on this axis: the contrast judge put only "
            f"{metrics['judge_accuracy']['value']:.0%} of written answers on their own pole's side."
        )
    shift = metrics["reply_shift"]
    if shift["low"] > 0:
        moved = f"more {toward} than the base's"
    elif shift["high"] < 0:
        moved = f"less {toward} than the base's"
    else:
        moved = "not distinguishable from the base's"
    gain = metrics.get("reply_share_gain")  # absent from figures written before it was measured
    paired = f"paired change {gain['value']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}]; " if gain else ""
    return (
        f"Its own replies: the judge reads {round(share['value'] * n)} of {n} held-out replies as {toward}, "
        f"against {round(base['value'] * n)} of the base's ({paired}reply shift {shift['value']:+.3f} "
        f"[{shift['low']:+.3f}, {shift['high']:+.3f}] nats/token: {moved})."
    )


def reply_lines(judge: str, figures: dict[str, Any], toward: str) -> list[str]:
    """A model's own replies in words, from their figures as JSON (`train`'s closing lines with a
    fluency budget): how many the judge reads as the pole against the base's, then its check, what the
    replies cost and how many loop."""
    sentence = reply_sentence(figures, toward)
    notes = contrast_notes(judge, {name: estimate_from(value) for name, value in figures.items()})
    return ([sentence] if sentence else []) + notes
