"""The pair check: does each pair answer one question twice, the same content in the two poles' ways?

A pair whose two answers say different things teaches content, not the axis; a degenerate answer
teaches a loop. Per pair, on the text alone (no model, so `generate` and `import` run it on every
dataset):

- **same content**: the cosine of the two answers' embeddings (the packaged MiniLM) is at least
  `content_threshold`. Measured on the packaged writer's three datasets (formal:casual,
  optimistic:pessimistic, conservative:progressive; 128 pairs): the two answers of one question have a
  median cosine of 0.47-0.55, answers to two different questions 0.10-0.13; at 0.2 the pairs left out
  are those whose answers share no subject ("Sure, you're welcome" against a sandwich recipe).
- **not degenerate**: neither answer is empty or loops (a word 4-gram three times,
  `parsing.is_repetitive`), and neither echoes the instruction instead of answering ("I'll answer this
  in the style of an optimistic person", "Formal answer:").

A pair failing a check here is dropped (dropped.jsonl, with the reason and the figure); the share of
pairs passing each check, with its 95% interval, goes into the manifest (`pair_check`).

Whether each answer **leans toward its own pole** needs a model, which the data layer does not load:
with `--lean-judge MODEL`, `generate`, `import` and `run` are handed a reader (`LeanReader`, built by
`scoring/pair_lean.py`: the contrast judge, MODEL told each pole in turn) that gives each pair its lean
margin, how much more pole-A-like its pole-A answer reads than its pole-B answer (mean log-prob per
token under "answer in pole A's way" minus under pole B's). `lean_check` drops the pairs at or below
`--lean-margin` and records the share leaning right (`lean_check`). A share whose interval reaches
chance cannot tell wrong pairs from a judge that does not know the axis, so then nothing is dropped and
the output says so. `inspect` reads the same figure for any dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autocustom.axis import Axis
from autocustom.data.dedup import embed
from autocustom.data.parsing import is_repetitive
from autocustom.data.schema import Dropped, Pair

# cosine of the two answers' MiniLM embeddings below which they do not say the same thing (module doc)
CONTENT_THRESHOLD = 0.2
CONTENT_THRESHOLD_HELP = "Cosine of a pair's two answers below which they say different things (dropped)."
CHECKS = ("same_content", "not_degenerate")
# A pair leans right when its lean margin is above this (nats/token): 0 asks only that the pole-A answer
# read more pole-A-like than the pole-B answer, the judge's sign; a positive margin also drops near-ties.
LEAN_MARGIN = 0.0
LEAN_MARGIN_HELP = "Lean margin (nats/token) at or below which a pair leans the wrong way (dropped)."
LEAN_JUDGE_HELP = (
    "Model told each pole in turn to read whether each pair's answers lean toward their own poles (e.g. "
    "the base you train); pairs leaning the wrong way are dropped. Not given: no lean check."
)
CHANCE = 0.5  # a share of pairs (or answers) judged right whose interval reaches this is no evidence
# pairs -> per pair, the judge's contrast score toward pole A of its pole-A answer minus its pole-B answer
LeanReader = Callable[[Sequence[Pair], Axis], np.ndarray]


@dataclass(frozen=True)
class PairVerdict:
    """One pair's checks: the answers' cosine and the first problem found ("" when none)."""

    cosine: float
    degenerate: str  # "", "empty", "loop" or "echo"

    def failure(self, content_threshold: float) -> tuple[str, str] | None:
        """(reason, detail) of the first failed check, or None."""
        if self.degenerate:
            return "degenerate", self.degenerate
        if self.cosine < content_threshold:
            return "content-mismatch", f"answers' cosine {self.cosine:.3f} < {content_threshold:g}"
        return None


def check_pairs(
    pairs: Sequence[Pair], axis: Axis, content_threshold: float = CONTENT_THRESHOLD, embed_texts=embed
) -> tuple[list[Pair], list[Dropped], dict[str, dict[str, float | int]]]:
    """(the pairs that pass, the ones dropped with their reason, the share passing each check)."""
    verdicts = verdicts_of(pairs, axis, embed_texts)
    kept, dropped = [], []
    for pair, verdict in zip(pairs, verdicts, strict=True):
        failure = verdict.failure(content_threshold)
        if failure is None:
            kept.append(pair)
        else:
            reason, detail = failure
            dropped.append(
                Dropped(
                    pair.id,
                    reason,
                    "pair-check",
                    similarity=round(verdict.cosine, 4),
                    text=pair.question,
                    detail=detail,
                )
            )
    passing = {
        "same_content": [v.cosine >= content_threshold for v in verdicts],
        "not_degenerate": [not v.degenerate for v in verdicts],
    }
    figures = {name: share(passed) for name, passed in passing.items()}
    cosine = median_interval([v.cosine for v in verdicts])
    return kept, dropped, {**figures, "content_cosine": cosine, "content_threshold": content_threshold}


def lean_figure(margins: Sequence[float], axis: Axis, margin: float, judge: str) -> dict[str, Any]:
    """The share of pairs leaning right (margin above `margin`) with its interval, the median margin
    with its interval, and whether the share can be read (its interval clears chance)."""
    figure = share([m > margin for m in margins])
    readable = bool(figure["low"] is not None and figure["low"] > CHANCE)
    return {
        "judge": judge,
        "poles": list(axis.poles),
        "margin": margin,
        **figure,
        "median_margin": median_interval(margins),
        "readable": readable,
    }


def lean_check(
    pairs: Sequence[Pair], axis: Axis, margins: Sequence[float], margin: float, judge: str
) -> tuple[list[Pair], list[Dropped], dict[str, Any]]:
    """(the pairs kept, the ones dropped as leaning the wrong way, the figure with `dropped`): nothing is
    dropped when the share cannot be read (module doc)."""
    figure = lean_figure(margins, axis, margin, judge)
    wrong = (
        {p.id: m for p, m in zip(pairs, margins, strict=True) if m <= margin} if figure["readable"] else {}
    )
    dropped = [
        Dropped(
            pair.id,
            "wrong-lean",
            "pair-check",
            text=pair.question,
            detail=f"the {axis.pole_a} answer reads {wrong[pair.id]:+.3f} nats/token more {axis.pole_a} "
            f"than the {axis.pole_b} answer (margin {margin:g})",
        )
        for pair in pairs
        if pair.id in wrong
    ]
    return [p for p in pairs if p.id not in wrong], dropped, {**figure, "dropped": len(dropped)}


def verdicts_of(pairs: Sequence[Pair], axis: Axis, embed_texts=embed) -> list[PairVerdict]:
    if not pairs:
        return []
    first = embed_texts([p.answers[axis.pole_a] for p in pairs])
    second = embed_texts([p.answers[axis.pole_b] for p in pairs])
    cosines = (np.asarray(first) * np.asarray(second)).sum(axis=1)
    echo = _echo_pattern(axis)
    return [
        PairVerdict(float(c), _degenerate(list(p.answers.values()), echo))
        for p, c in zip(pairs, cosines, strict=True)
    ]


def share(passed: Sequence[bool]) -> dict[str, float | int | None]:
    """k of n with its 95% Wilson interval (scipy), the form every share of the pair check takes."""
    from scipy.stats import binomtest

    n, k = len(passed), int(sum(passed))
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "low": None, "high": None}
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {
        "k": k,
        "n": n,
        "share": round(k / n, 4),
        "low": round(interval.low, 4),
        "high": round(interval.high, 4),
    }


def median_interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """The median with its 95% bootstrap interval (scipy, percentile method, fixed seed): how alike
    the two answers of a pair are, where the shares only say how many cleared the threshold."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        median = round(float(data[0]), 4) if len(data) else None
        return {"value": median, "low": None, "high": None, "n": len(data)}
    interval = bootstrap(
        (data,), np.median, confidence_level=0.95, n_resamples=2000, method="percentile", random_state=0
    ).confidence_interval
    return {
        "value": round(float(np.median(data)), 4),
        "low": round(float(interval.low), 4),
        "high": round(float(interval.high), 4),
        "n": len(data),
    }


def _degenerate(answers: list[str], echo: re.Pattern[str]) -> str:
    for answer in answers:
        if not answer.strip():
            return "empty"
        if is_repetitive(answer):
            return "loop"
        if echo.search(answer):
            return "echo"
    return ""


def _echo_pattern(axis: Axis) -> re.Pattern[str]:
    """An answer that talks about the instruction instead of answering: "a formal answer", "as a casual
    person", "in the style of", "Formal answer:"."""
    poles = "|".join(re.escape(p) for p in axis.poles)
    return re.compile(
        rf"\b(?:{poles})\s+(?:answer|reply|response|person)\b|\bin the style of\b", re.IGNORECASE
    )


def checks_lines(counts: dict[str, Any]) -> list[str]:
    """The pair check and the leakage audit of a dataset's counts in words, one line each (what
    `generate`, `import`, `inspect` and the run report print); nothing for a figure that is absent."""
    lines = []
    checks = counts.get("pair_check")
    if checks:
        cosine = checks.get("content_cosine")  # absent in datasets made before it was recorded
        median = f"; answers' median cosine {_median_text(cosine)}" if cosine and cosine["n"] else ""
        lines.append(
            f"pair check: same content {share_text(checks['same_content'])}; not degenerate "
            f"{share_text(checks['not_degenerate'])} (answers' cosine threshold {checks['content_threshold']})"
            + median
        )
    if counts.get("lean_check"):
        lines.append(lean_line(counts["lean_check"]))
    audit = counts.get("audit")
    if audit:
        question, subarea = audit["questions"], audit["subareas"]
        verdict = "passed" if audit["passed"] else "FAILED (a held-out split is empty)"
        lines.append(
            f"leakage audit: {verdict}; held-out questions' nearest train question: max {question['max']}, "
            f"95th percentile {question['p95']} (n={question['n']}, threshold {audit['question_threshold']}); "
            f"held-out subareas' nearest train subarea: max {subarea['max']} (n={subarea['n']}, threshold "
            f"{audit['subarea_threshold']}); {len(audit['moved'])} subarea(s) moved to train, "
            f"{audit['dropped']} pair(s) dropped"
        )
        lines += [
            f"  {moved['from']} subarea '{moved['name']}' is the train topic '{moved['like_name']}' "
            f"(cosine {moved['cosine']}): moved to train"
            for moved in audit["moved"]
        ]
    return lines


def lean_line(figure: dict[str, Any]) -> str:
    """The lean check in words: the share leaning right, the median margin, what was dropped, or that the
    share is at chance and why nothing was."""
    first, second = figure["poles"]
    line = (
        f"lean check ({figure['judge']} told each pole): the {first} answer reads more {first} than the "
        f"{second} one by more than {figure['margin']:g} nats/token in {share_text(figure)} of pairs; "
        f"median margin {_median_text(figure['median_margin'])}"
    )
    if not figure["readable"]:
        return line + (
            "; at chance, so it cannot be read: the answers may not differ along the axis, or the judge "
            "may not know it" + ("; no pair dropped" if "dropped" in figure else "")
        )
    if "dropped" in figure:
        line += f"; {figure['dropped']} pair(s) leaning the wrong way dropped"
    return line


def share_text(figure: dict[str, Any]) -> str:
    """ "36/42 = 0.86 [0.72, 0.93]" (k/n = share [95% interval]), or that there was nothing to read."""
    if not figure["n"]:
        return "no pairs to read"
    return f"{figure['k']}/{figure['n']} = {figure['share']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def _median_text(figure: dict[str, Any]) -> str:
    if figure["low"] is None:
        return f"{figure['value']:.2f} (n={figure['n']}: too few pairs for an interval)"
    return f"{figure['value']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}] (n={figure['n']})"
