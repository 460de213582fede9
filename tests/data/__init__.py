"""Scripted LLM replies shared by the data and CLI tests: a well-behaved generator for one axis.

`fake_reply(messages)` answers the three prompt stages the way a capable model would (numbered
topics, numbered questions, one answer per pole), with deliberate imperfections that the pipeline
must handle: a repeated question, a near-duplicate question and a refusal for one question.
"""

from __future__ import annotations

import re

TOPICS = [
    "job interviews",
    "wedding toasts",
    "customer complaints",
    "team meetings",
    "birthday wishes",
    "tax forms",
]
QUESTIONS = {
    "job interviews": [
        "How do I prepare for a job interview?",
        "What should I wear to an interview at a bank?",
        "How do I answer a question about my biggest weakness?",
        "Should I send a note after the interview?",
    ],
    "wedding toasts": [
        "How long should a best man's speech be?",
        "Is it fine to tell jokes about the groom's past?",
        "How do I end a toast at my sister's wedding?",
        "What if I get nervous speaking in front of the guests?",
    ],
    "customer complaints": [
        "How do I reply to a customer whose parcel arrived broken?",
        "What should a refund email say?",
        "How can a shop apologise for a rude employee?",
        "How should a hotel answer a bad online review?",
    ],
    "team meetings": [
        "How do I open the weekly team meeting?",
        "What is a good way to disagree with my manager in a meeting?",
        "How can I ask a colleague to stop interrupting?",
        "How should meeting notes be written up?",
    ],
    "birthday wishes": [
        "What can I write in my grandmother's 90th birthday card?",
        "How do I wish my boss a happy birthday?",
        "What is a nice birthday message for a child turning five?",
        "How do I congratulate a friend I have not seen in years?",
    ],
    "tax forms": [
        "Which documents do I need to file my taxes?",
        "How do I ask the tax office for more time?",
        "Can I deduct the cost of my home office?",
        "What happens if I made a mistake on last year's return?",
    ],
}
NEAR_DUPLICATE = "How should I prepare for a job interview?"  # of QUESTIONS["job interviews"][0]
REFUSED_QUESTION = QUESTIONS["tax forms"][1]


def fake_reply(messages: list[dict[str, str]]) -> str:
    """The reply to one rendered prompt of prompts/subareas.md, questions.md or answers.md."""
    text = messages[-1]["content"]
    if match := re.search(r"questions a person might ask about (.+?), where", text):
        topic = match.group(1).lower()
        lines = [*QUESTIONS.get(topic, [f"What is special about {topic}?"])]
        if topic == "job interviews":
            lines[1:1] = [NEAR_DUPLICATE, lines[0]]  # a near-duplicate and an exact repeat
        return "Sure! Here are some questions:\n" + "".join(f"{i}. {q}\n" for i, q in enumerate(lines, 1))
    if match := re.search(r"Question: (.+)\nAnswer this question in the style of an? (\w+) person", text):
        question, pole = match.groups()
        if question == REFUSED_QUESTION:
            return "I'm sorry, I can't help with that."
        return f"Speaking as someone {pole}: about '{question}', here is what I would do. It works well."
    if "topics" in text:
        count = int(re.search(r"List (\d+) everyday topics", text).group(1))
        taken = re.search(r"Do not repeat any of these, which we already have: (.+)\.", text)
        avoid = taken.group(1).lower().split("; ") if taken else []
        fresh = [t for t in TOPICS if t not in avoid][:count]
        return "\n".join(f"{i}. **{t.title()}**: where tone matters" for i, t in enumerate(fresh, 1))
    return "I do not understand."
