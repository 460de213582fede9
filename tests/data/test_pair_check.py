"""The pair check on the real embedder: a swapped-content pair, a degenerate answer and an answer that
echoes the instruction are caught; a pair that says one thing in two registers passes. The lean check's
drop rule on given margins (the judge that reads them: tests/scoring/test_pair_lean.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autocustom.axis import Axis
from autocustom.data.audit import checked_split
from autocustom.data.pair_check import CONTENT_THRESHOLD, LEAN_MARGIN, check_pairs, lean_check, lean_line
from autocustom.data.schema import Pair, Subarea
from autocustom.errors import UsageError

AXIS = Axis("formal", "casual")
GOOD = Pair(
    "p1",
    "s1",
    "How do I store bread?",
    {
        "formal": "Bread keeps best in a cool, dry place, wrapped in a cloth; for longer storage, freeze it.",
        "casual": "Just wrap your bread in a towel and keep it somewhere cool, or toss it in the freezer!",
    },
)
MISMATCHED = Pair(  # the casual answer is about something else: a pair that teaches content
    "p2",
    "s1",
    "How do I store bread?",
    {"formal": GOOD.answers["formal"], "casual": "Lol my cat just knocked the plant over again, whatever."},
)
LOOP = Pair(
    "p3",
    "s1",
    "How do I cook rice?",
    {"formal": "One rinses the rice, then simmers it.", "casual": "vegan vegan vegan cheese " * 4},
)
ECHO = Pair(
    "p4",
    "s1",
    "How do I cook rice?",
    {"formal": "A formal answer is one that is polite.", "casual": "Rinse it, boil it, done!"},
)


def test_mismatched_degenerate_and_echoing_pairs_are_dropped_with_their_reason():
    kept, dropped, figures = check_pairs([GOOD, MISMATCHED, LOOP, ECHO], AXIS)
    assert kept == [GOOD]
    reasons = {d.id: (d.reason, d.detail) for d in dropped}
    assert reasons["p2"][0] == "content-mismatch" and str(CONTENT_THRESHOLD) in reasons["p2"][1]
    assert reasons["p3"] == ("degenerate", "loop") and reasons["p4"] == ("degenerate", "echo")
    assert figures["not_degenerate"]["k"] == 2 and figures["not_degenerate"]["n"] == 4
    content = figures["same_content"]
    assert content["n"] == 4 and content["low"] <= content["share"] <= content["high"]
    cosine = figures["content_cosine"]
    assert cosine["n"] == 4 and cosine["low"] <= cosine["value"] <= cosine["high"]


def test_the_answers_median_cosine_is_higher_for_a_minimal_pair_than_for_a_mismatched_one():
    """The figure `--pairing rewrite` is judged on: how alike a pair's two answers are, with its interval."""
    _, _, alike = check_pairs([GOOD] * 3, AXIS)
    _, _, unlike = check_pairs([MISMATCHED] * 3, AXIS)
    assert alike["content_cosine"]["value"] > unlike["content_cosine"]["value"]
    _, _, one = check_pairs([GOOD], AXIS)
    assert one["content_cosine"]["low"] is None  # one pair: a median, no interval


def test_the_lean_check_drops_pairs_at_or_below_the_margin_and_says_so():
    pairs = [Pair(f"p{i}", "s1", f"Q{i}?", GOOD.answers) for i in range(12)]
    margins = [0.4] * 11 + [-0.2]  # one pair's formal answer reads less formal than its casual one

    kept, dropped, figure = lean_check(pairs, AXIS, margins, LEAN_MARGIN, "judge")
    assert [d.id for d in dropped] == ["p11"] and dropped[0].reason == "wrong-lean"
    assert len(kept) == 11 and figure["k"] == 11 and figure["n"] == 12 and figure["dropped"] == 1
    assert figure["readable"] and figure["low"] < figure["share"] < figure["high"]
    line = lean_line(figure)
    assert "11/12" in line and "1 pair(s) leaning the wrong way dropped" in line

    stricter = lean_check(pairs, AXIS, margins, 0.5, "judge")  # a margin above every pair's: all at chance
    assert stricter[1] == [] and not stricter[2]["readable"] and "no pair dropped" in lean_line(stricter[2])


def test_a_lean_check_at_chance_drops_nothing():
    pairs = [Pair(f"p{i}", "s1", f"Q{i}?", GOOD.answers) for i in range(10)]
    kept, dropped, figure = lean_check(pairs, AXIS, [0.1, -0.1] * 5, LEAN_MARGIN, "judge")
    assert kept == pairs and dropped == [] and figure["share"] == 0.5 and not figure["readable"]
    assert "cannot be read" in lean_line(figure)


def test_a_lean_judge_without_a_reader_is_a_usage_error():
    config = SimpleNamespace(axis=AXIS, content_threshold=CONTENT_THRESHOLD, lean_judge="m", lean_margin=0.0)
    with pytest.raises(UsageError, match="no lean reader"):
        checked_split([GOOD], [Subarea("s1", "bread", "")], config)
