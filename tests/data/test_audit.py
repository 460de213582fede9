"""The leakage audit on the real embedder: a held-out topic that repeats a train topic moves to train,
a held-out question that repeats a train question is dropped, and the figures say what is left."""

from __future__ import annotations

from autocustom.data.audit import LEAK_THRESHOLD, audit_split, audit_warning, split_and_audit
from autocustom.data.schema import Manifest, Pair, Subarea

ANSWERS = {"formal": "Certainly.", "casual": "Sure thing!"}
SUBAREAS = [
    Subarea("s1", "Job interviews"),
    Subarea("s2", "Wedding toasts"),
    Subarea("s3", "Tax forms"),
    Subarea("s4", "Interviews for a job"),  # the topic of s1 under another name
]
QUESTIONS = {
    "s1": ["How do I prepare for a job interview?", "What should I wear to an interview at a bank?"],
    "s2": ["How long should a best man's speech be?", "How do I end a toast at my sister's wedding?"],
    "s3": ["Which tax form do I need as a freelancer?", "When is the deadline for filing my taxes?"],
    "s4": ["How do I answer a question about my biggest weakness?", "Should I send a note afterwards?"],
}


def _pairs(subarea: str) -> list[Pair]:
    return [Pair(f"{subarea}q{i}", subarea, q, ANSWERS) for i, q in enumerate(QUESTIONS[subarea])]


def test_a_held_out_topic_that_repeats_a_train_topic_moves_to_train():
    by_split = {"train": _pairs("s1") + _pairs("s3"), "validation": _pairs("s2"), "test": _pairs("s4")}
    assignment = {"train": ["s1", "s3"], "validation": ["s2"], "test": ["s4"]}
    _, audit = audit_split(by_split, assignment, SUBAREAS)
    assert [m["subarea"] for m in audit.moved] == ["s4"] and audit.moved[0]["like"] == "s1"
    assert {p.subarea for p in by_split["train"]} == {"s1", "s3", "s4"} and by_split["test"] == []
    assert not audit.passed  # the test split is left empty: said, not hidden
    assert audit_warning(Manifest({}, "", "", {}, {}, {"audit": audit.to_dict()})) is not None


def test_a_planted_near_duplicate_question_is_dropped_from_test():
    planted = Pair("s3x", "s3", "How should I get ready for a job interview?", ANSWERS)
    by_split = {"train": _pairs("s1"), "validation": _pairs("s2"), "test": [*_pairs("s3"), planted]}
    assignment = {"train": ["s1"], "validation": ["s2"], "test": ["s3"]}
    dropped, audit = audit_split(by_split, assignment, SUBAREAS[:3])
    assert [(d.id, d.reason, d.of) for d in dropped] == [("s3x", "leak", "s1q0")]
    assert dropped[0].similarity >= LEAK_THRESHOLD and planted not in by_split["test"]
    assert audit.passed and audit.dropped == 1 and audit.moved == []
    assert audit.questions["n"] == 4 and audit.questions["max"] < LEAK_THRESHOLD
    assert audit.subareas["n"] == 2 and audit.subareas["max"] < audit.subarea_threshold


def test_every_split_dataset_carries_its_audit():
    pairs = [p for s in ("s1", "s2", "s3") for p in _pairs(s)]
    _, assignment, dropped, audit = split_and_audit(pairs, SUBAREAS[:3], (0.34, 0.33, 0.33), 0)
    assert sorted(len(v) for v in assignment.values()) == [1, 1, 1] and dropped == [] and audit.passed
    assert audit_warning(Manifest({}, "", "", {}, {}, {})) is not None  # no audit: a warning
    assert audit_warning(Manifest({}, "", "", {}, {}, {"audit": audit.to_dict()})) is None
