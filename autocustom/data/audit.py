"""The leakage audit: a held-out split must hold topics and questions the train split does not.

Pairs are split by subarea, so a test question is unseen only when no train subarea is the same topic
under another name and no train question is the same question reworded. After the split, every
validation and test subarea is compared with its nearest train subarea, and every validation and test
question with its nearest train question (cosine of the packaged MiniLM embeddings, `dedup.embed`):

- a held-out subarea at or above `subarea_threshold` of a train subarea is the same topic: its pairs
  move to train (`moved`);
- a held-out question at or above `question_threshold` of a train question is the same question: its
  pair is dropped (dropped.jsonl, reason "leak", naming the train question and the cosine).

The figures (n, the largest and the 95th percentile of the nearest-train cosines, after those fixes)
go into the manifest's `audit` with the thresholds; `shift-score` and `compare` print a warning for a
dataset that has no audit or whose audit failed (a held-out split left empty by the fixes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autocustom.data.dedup import SUBAREA_THRESHOLD, embed, subarea_text
from autocustom.data.pair_check import LeanReader, check_pairs, lean_check
from autocustom.data.schema import Dropped, Manifest, Pair, Subarea
from autocustom.data.split import split_pairs
from autocustom.errors import UsageError

log = logging.getLogger(__name__)

# A held-out question this close to a train question is the same question reworded (MiniLM cosine):
# the dedup's 0.90 keeps variants inside one topic; across the split line a lower bar is the safe side.
LEAK_THRESHOLD = 0.85
HELD_OUT = ("validation", "test")
LEAK_THRESHOLD_HELP = "Cosine at which a held-out question repeats a train question (its pair dropped)."
SUBAREA_THRESHOLD_HELP = "Cosine at which two subareas are one topic (merged; held out: moved to train)."


def check_thresholds(config: Any) -> None:
    """Every cosine threshold of a dataset config (`*_threshold`) lies in (0, 1]: UsageError otherwise."""
    for name, value in vars(config).items():
        if name.endswith("_threshold") and not 0.0 < value <= 1.0:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} {value} is outside (0, 1]", f"e.g. {option} 0.9")


@dataclass
class Audit:
    """What the audit found and did; `passed` is False when a held-out split was left empty."""

    question_threshold: float
    subarea_threshold: float
    questions: dict[str, float | int | None]  # n, max, p95 of held-out questions' nearest-train cosine
    subareas: dict[str, float | int | None]  # the same for held-out subareas
    moved: list[dict[str, Any]] = field(default_factory=list)  # held-out subareas moved to train
    dropped: int = 0  # held-out pairs dropped as leaks
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_and_audit(
    pairs: list[Pair],
    subareas: list[Subarea],
    ratios: Sequence[float],
    seed: int,
    *,
    question_threshold: float = LEAK_THRESHOLD,
    subarea_threshold: float = SUBAREA_THRESHOLD,
    embed_texts: Callable[[Sequence[str]], np.ndarray] = embed,
) -> tuple[dict[str, list[Pair]], dict[str, list[str]], list[Dropped], Audit]:
    """Split `pairs` by subarea, then audit the split: (pairs per split, subarea ids per split, the pairs
    dropped as leaks, the audit)."""
    by_split, assignment = split_pairs(pairs, ratios, seed)
    dropped, audit = audit_split(
        by_split,
        assignment,
        subareas,
        question_threshold=question_threshold,
        subarea_threshold=subarea_threshold,
        embed_texts=embed_texts,
    )
    return by_split, assignment, dropped, audit


def checked_split(
    pairs: list[Pair], subareas: list[Subarea], config: Any, read_lean: LeanReader | None = None
):
    """What `generate` and `import` do to their pairs before writing: the pair check (data/pair_check.py),
    with `config.lean_judge` the lean check through `read_lean`, then the split and its audit, with the
    settings of `config` (axis, content, lean, leak and subarea thresholds, split, seed). Returns (the
    kept pairs in split order, pairs per split, subarea ids per split, the dropped, the counts of the
    pair check, the lean check and the audit)."""
    pairs, unfit, pair_check = check_pairs(pairs, config.axis, config.content_threshold)
    counts: dict[str, Any] = {"pair_check": pair_check}
    if config.lean_judge:
        if read_lean is None:
            raise UsageError(
                "lean_judge is set but no lean reader was given",
                "pass read_lean=autocustom.scoring.pair_lean.PairLean(judge_model) (the command line does)",
            )
        margins = read_lean(pairs, config.axis) if pairs else []
        pairs, wrong, counts["lean_check"] = lean_check(
            pairs, config.axis, margins, config.lean_margin, config.lean_judge
        )
        unfit += wrong
    by_split, assignment, leaks, audit = split_and_audit(
        pairs,
        subareas,
        config.split,
        config.seed,
        question_threshold=config.leak_threshold,
        subarea_threshold=config.subarea_threshold,
    )
    kept = [p for split in ("train", *HELD_OUT) for p in by_split[split]]
    counts["audit"] = audit.to_dict()
    return kept, by_split, assignment, [*unfit, *leaks], counts


def audit_split(
    by_split: dict[str, list[Pair]],
    assignment: dict[str, list[str]],
    subareas: list[Subarea],
    *,
    question_threshold: float = LEAK_THRESHOLD,
    subarea_threshold: float = SUBAREA_THRESHOLD,
    embed_texts: Callable[[Sequence[str]], np.ndarray] = embed,
) -> tuple[list[Dropped], Audit]:
    """Audit a split in place (see the module doc): the pairs dropped as leaks, and the audit."""
    audit = Audit(question_threshold, subarea_threshold, {}, {})
    _move_repeated_topics(by_split, assignment, subareas, audit, embed_texts)
    dropped = _drop_repeated_questions(by_split, audit, embed_texts)
    audit.passed = all(by_split[name] for name in HELD_OUT if name in by_split) and bool(by_split["train"])
    return dropped, audit


def _move_repeated_topics(by_split, assignment, subareas: list[Subarea], audit: Audit, embed_texts) -> None:
    names = {s.id: subarea_text(s.name, s.description) for s in subareas}
    called = {s.id: s.name for s in subareas}
    train = [s for s in assignment["train"] if s in names]
    held = [(split, s) for split in HELD_OUT for s in assignment.get(split, []) if s in names]
    nearest = _nearest([names[s] for _, s in held], [names[s] for s in train], embed_texts)
    for (split, subarea), (index, cosine) in zip(held, nearest, strict=True):
        if cosine >= audit.subarea_threshold:
            assignment[split].remove(subarea)
            assignment["train"].append(subarea)
            moving = [p for p in by_split[split] if p.subarea == subarea]
            by_split[split] = [p for p in by_split[split] if p.subarea != subarea]
            by_split["train"].extend(moving)
            audit.moved.append(
                {
                    "subarea": subarea,
                    "name": called[subarea],
                    "from": split,
                    "like": train[index],
                    "like_name": called[train[index]],
                    "cosine": round(cosine, 4),
                }
            )
    kept = [c for (split, s), (_, c) in zip(held, nearest, strict=True) if s in assignment[split]]
    audit.subareas = _figures(kept)


def _drop_repeated_questions(by_split, audit: Audit, embed_texts) -> list[Dropped]:
    train = by_split["train"]
    held = [(split, p) for split in HELD_OUT for p in by_split.get(split, [])]
    nearest = _nearest([p.question for _, p in held], [p.question for p in train], embed_texts)
    dropped, kept = [], []
    for (split, pair), (index, cosine) in zip(held, nearest, strict=True):
        if cosine >= audit.question_threshold:
            by_split[split].remove(pair)
            dropped.append(
                Dropped(pair.id, "leak", "audit", train[index].id, round(cosine, 4), pair.question, split)
            )
        else:
            kept.append(cosine)
    audit.questions, audit.dropped = _figures(kept), len(dropped)
    return dropped


def _nearest(queries: list[str], pool: list[str], embed_texts) -> list[tuple[int, float]]:
    """For each query, the index of its most similar pool text and that cosine ((-1, -1.0): empty pool)."""
    if not queries:
        return []
    if not pool:
        return [(-1, -1.0)] * len(queries)
    similarity = embed_texts(queries) @ embed_texts(pool).T
    best = similarity.argmax(axis=1)
    return [(int(i), float(similarity[row, i])) for row, i in enumerate(best)]


def _figures(cosines: list[float]) -> dict[str, float | int | None]:
    if not cosines:
        return {"n": 0, "max": None, "p95": None}
    values = np.asarray(cosines)
    return {
        "n": len(values),
        "max": round(float(values.max()), 4),
        "p95": round(float(np.quantile(values, 0.95)), 4),
    }


def leakage_notes(manifest: Manifest) -> list[str]:
    """[the warning] for a dataset whose audit is missing or failed, logged too (a line on stderr); else []."""
    warning = audit_warning(manifest)
    if warning is not None:
        log.warning(warning)
    return [warning] if warning else []


def audit_warning(manifest: Manifest) -> str | None:
    """What to warn of a dataset whose held-out claim was not checked or did not hold, else None: the
    commands that score a split log it and add it to their notes."""
    audit = manifest.counts.get("audit")
    if audit is None:
        return (
            "this dataset has no leakage audit (made by hand or before autocustom checked it): its held-out "
            "subareas may repeat train topics; regenerate or re-import it to audit it"
        )
    if not audit.get("passed", False):
        return "this dataset's leakage audit failed (a held-out split is empty): see its manifest.json"
    return None
