"""Tolerant list/answer parsing on the shapes small and large models actually produce."""

from __future__ import annotations

import pytest

from autocustom.data.parsing import (
    answer_problem,
    clean_answer,
    clean_question,
    clean_subarea,
    normalized,
    parse_list,
)


@pytest.mark.parametrize(
    "reply",
    [
        "1. alpha\n2. beta\n3. gamma",
        "Sure, here they are:\n\n1) alpha\n2) beta\n3) gamma\n\nI hope this helps!",
        "- alpha\n- beta\n* gamma",
        '• **alpha**\n• beta\n• "gamma"',
        '["alpha", "beta", "gamma"]',
        'Here you go:\n```json\n["alpha", "beta", "gamma"]\n```',
        '{"topics": ["alpha", "beta", "gamma"]}',
        '[{"name": "alpha"}, {"name": "beta"}, {"question": "gamma"}]',
        "### 1. alpha\n### 2. beta\n### 3. gamma",
    ],
)
def test_parse_list_accepts_common_shapes(reply):
    assert parse_list(reply) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("reply", ["", "I don't know what you mean.", "{not json", "The answer is 42."])
def test_parse_list_returns_nothing_for_junk(reply):
    assert parse_list(reply) == []


def test_numbered_lines_win_over_stray_bullets():
    reply = "1. alpha\n   - a detail\n   - more\n2. beta\n   - another\n   - more\n3. gamma"
    assert parse_list(reply) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("Job Interviews: where tone matters", ("Job Interviews", "where tone matters")),
        ("Emails - to a boss", ("Emails", "to a boss")),
        ("Greetings (hello vs hi)", ("Greetings", "hello vs hi")),
        ("Taxation", ("Taxation", "")),
        ("Basic facts, such as the weather and health", ("Basic facts", "such as the weather and health")),
        ("A formal person would answer the topic of me and my friend with delight", None),
        ("42", None),
    ],
)
def test_clean_subarea(item, expected):
    assert clean_subarea(item) == expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("How do I greet my boss? Use Mr. or Ms.", "How do I greet my boss?"),
        ('"Is it rude to text late?"', "Is it rude to text late?"),
        ("Question 3: Why wear a tie?", "Why wear a tie?"),
        ("Write an email to your boss.", None),
        ("How to make a cup of tea: - Formal answer", "How to make a cup of tea?"),
        ("should I wear a tie to dinner.", "should I wear a tie to dinner?"),
        ("Why?", None),
    ],
)
def test_clean_question(item, expected):
    assert clean_question(item) == expected


def test_clean_answer_drops_label_quotes_and_a_cut_last_sentence():
    assert clean_answer('Answer: "Hello there."') == "Hello there."
    assert (
        clean_answer('I would say: "Good day to you." Then bow.')
        == 'I would say: "Good day to you." Then bow.'
    )
    cut = "Greet them warmly. Offer a seat and a drink. Then ask how the trip"
    assert clean_answer(cut) == "Greet them warmly. Offer a seat and a drink."
    assert clean_answer("Just one unfinished thought about") == "Just one unfinished thought about"


@pytest.mark.parametrize(
    "reply",
    [
        "Sure, I'd suggest rewriting the answer as follows:\n\nKeep it simple. Stay flexible.",
        "Plan it well.\n\nYour answer would be:\n\nKeep it simple. Stay flexible.",
        "Please provide a response in the format of a formal invitation, as it is a private event and the"
        " use of a general greeting is considered casual. Here is a revised version:\n\nKeep it simple."
        " Stay flexible.",
    ],
)
def test_clean_answer_keeps_what_follows_a_lead_in_line(reply):
    """Replies of the packaged model to prompts/rewrite.md (runs of 2026-12-07)."""
    assert clean_answer(reply) == "Keep it simple. Stay flexible."


def test_a_colon_inside_an_answer_is_not_a_lead_in():
    reply = "Three things matter:\n1. Punctuality.\n2. Dress."
    assert clean_answer(reply) == reply


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("I'm sorry, I can't help with that.", "refused"),
        ("I cannot answer this question.", "refused"),
        ("As an AI, I do not have opinions.", "refused"),
        ("As a language model I can't say.", "refused"),
        ("", "empty"),
        ("   \n ", "empty"),
        ("...", "empty"),
        ("Sorry to hear that! Here is how to fix it.", None),
        ("I can help: wear a suit.", None),
        ("Hey, no worries, just say hi.", None),
    ],
)
def test_answer_problem(text, problem):
    assert answer_problem(text) == problem


def test_normalized_ignores_case_space_and_punctuation():
    assert normalized("  Job   Interviews!") == normalized("job interviews")


# The packaged model's four replies to the subarea prompt in `make demo` (main 9fe99d2, issue 26), as
# its call cache kept them (the first cut after three of its lines; the rest repeat the third): numbering
# and Markdown in the names, a header echoing the prompt, repeats.
DEMO_SUBAREA_REPLIES = [
    "1. To avoid confusion, use the following topic names:\n* To avoid confusion, use the numbered topic "
    'names:\n* For example, "to avoid confusion, use the numbered topic names:',
    "1. How to cook a sandwich\n2. How to play a musical instrument\n3. How to play a musical instrument\n"
    "4. How to bake a cake\n5. How to play a musical instrument\n6. How to play a musical instrument\n"
    "7. How to cook a meal\n8. How to play a musical instrument\n9. How to play a musical instrument\n"
    "10. How to cook a meal",
    "Sure, here are 10 everyday topics where a formal person and a casual person would give different "
    "answers:\n1. How to Cook a Sandwich\n2. How to Play a Musical Instrument\n3. How to Bake a Cake\n"
    "4. How to Cook a Meal\n5. How to Bake a Cake\n6. How to Cook a Sandwich",
    "* 1. How to cook a sandwich*\n* 2. How to play a musical instrument*\n* 3. How to bake a cake*\n"
    "* 4. How to cook a meal*",
]


def test_the_demos_subarea_lines_clean_to_four_distinct_topics():
    names = [
        item[0] for reply in DEMO_SUBAREA_REPLIES for item in map(clean_subarea, parse_list(reply)) if item
    ]
    assert "To avoid confusion" not in names  # the header that echoed the prompt is not a topic
    assert all(name[0].isalpha() and name[-1].isalpha() for name in names)  # no "1. ", no "*"
    assert {normalized(name) for name in names} == {
        "how to cook a sandwich",
        "how to play a musical instrument",
        "how to bake a cake",
        "how to cook a meal",
    }


@pytest.mark.parametrize(
    "item",
    ["To avoid confusion, use the following topic names:", "Here are the topics", "Note: be brief", "Topics"],
)
def test_headers_and_instruction_echoes_are_not_topics(item):
    assert clean_subarea(item) is None
