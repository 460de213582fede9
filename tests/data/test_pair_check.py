"""The pair check on the real embedder: a swapped-content pair, a degenerate answer and an answer that
echoes the instruction are caught; a pair that says one thing in two registers passes."""

from __future__ import annotations

from autocustom.axis import Axis
from autocustom.data.pair_check import CONTENT_THRESHOLD, check_pairs
from autocustom.data.schema import Pair

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
