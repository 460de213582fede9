"""Tolerant parsing of LLM replies: lists of subareas or questions, and single answers.

Small models answer a "numbered list" request with bullets, JSON, bold headings, preambles and
trailing chatter. Rather than demand a format they cannot keep, we accept every common shape and
clean each item; a reply that yields nothing usable is retried by the caller, then recorded as dropped.
"""

from __future__ import annotations

import json
import re
from collections import Counter

_NUMBERED = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|#{1,6}\s*\d{1,3}[.):]?)\s+(.+)$")
_BULLET = re.compile(r"^\s*[-*•+·]\s+(.+)$")
_MARKDOWN = re.compile(r"\*\*|__|`|^#+\s*")
_WRAPPING_QUOTES = "\"'“”‘’«»"
_LABEL = re.compile(r"^\s*(?:answer|response|reply|question|topic|subarea)\s*\d*\s*[:.-]\s*", re.IGNORECASE)
_REFUSALS = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|i apologi[sz]e|sorry, (?:but )?i|i can(?:not|'t|’t)\b"
    r"|i am (?:not able|unable)|i'?m (?:not able|unable)"
    r"|as an ai\b|as a(?:n ai)? language model|i won'?t be able)",
    re.IGNORECASE,
)
_JSON_LIST_KEYS = ("name", "topic", "subarea", "question", "title", "text")
_QUESTION_START = re.compile(
    r"^(?:how|what|why|when|where|which|who|whom|whose|should|can|could|is|are|do|does|did|would|will|may)\b",
    re.IGNORECASE,
)
REPEAT_NGRAM = 4  # word n-gram that marks a loop ...
REPEAT_TIMES = 3  # ... when it occurs this often in one text: rare in a few sentences of prose
_WORD = re.compile(r"\w+")
SUBAREA_MAX_WORDS = 8
# list numbering left in an item: "2. ", "(3) ", "4) ", also after a bullet ("* 1. How to ...")
_ENUMERATOR = re.compile(r"^\s*(?:[-*•+·]\s*)?\(?\d{1,3}[.):]\s+")
_NOT_A_TOPIC = re.compile(
    r"^(?:sure|okay|ok|certainly|here (?:are|is)|to avoid|note|for example|e\.g\.?|example|remember"
    r"|the following|topics?|subareas?|list|these are|hint)\b",
    re.IGNORECASE,
)
QUESTION_MIN_WORDS = 3
# A line that introduces the answer instead of being it ("Sure, here is the rewritten answer:", "Your
# answer would be:", "Here is a revised version:"): a short sentence ending a line in a colon that names
# the task.
_LEAD_IN = re.compile(
    r"(?:^|(?<=[.!?] ))[^\n:.!?]{0,100}\b(?:rewrit\w*|revis\w*|rephras\w*|version|answer|response|reply)\b"
    r"[^\n:.!?]{0,40}:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


def parse_list(text: str) -> list[str]:
    """The items of a list reply: a JSON array/object, numbered lines or bulleted lines.

    Returns [] when the reply holds no recognisable list (the caller's cue to retry). Preambles
    ("Sure, here are...") and closing chatter are ignored because only list lines are taken.
    """
    items = _json_items(text)
    if items:
        return items
    numbered, bulleted = [], []
    for line in text.splitlines():
        if match := _NUMBERED.match(line):
            numbered.append(match.group(1))
        elif match := _BULLET.match(line):
            bulleted.append(match.group(1))
    chosen = numbered or bulleted  # bullets under numbered items are details ("- Formal answer: ...")
    return [item for item in (strip_markup(raw) for raw in chosen) if item]


def _json_items(text: str) -> list[str]:
    """Items of the first JSON array or object in the text (fenced or bare), else []."""
    for opener, closer in (("[", "]"), ("{", "}")):
        start, end = text.find(opener), text.rfind(closer)
        if start == -1 or end <= start:
            continue
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):  # {"questions": [...]} or {"1": "...", "2": "..."}
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if lists else list(data.values())
        items = [_json_item_text(item) for item in data]
        return [strip_markup(item) for item in items if item and item.strip()]
    return []


def _json_item_text(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in _JSON_LIST_KEYS:
            if isinstance(item.get(key), str):
                return item[key]
    return ""


def strip_markup(text: str) -> str:
    """Remove markdown emphasis, a leading label ("Question 1:") and wrapping quotes."""
    text = _MARKDOWN.sub("", text).strip()
    text = _LABEL.sub("", text).strip()
    while len(text) >= 2 and text[0] in _WRAPPING_QUOTES and text[-1] in _WRAPPING_QUOTES:
        text = text[1:-1].strip()
    return text


def clean_subarea(item: str) -> tuple[str, str] | None:
    """(name, description) from a list item such as "Job interviews: how people ...", or None.

    The name is what comes before the first ':' / ',' / ' - ' / '(', without list numbering, Markdown
    or quotes ("* 2. How to bake a cake*" is "How to bake a cake"). The rule for what is not a topic:
    an item that ends with ':' (a header that introduces a list: "To avoid confusion, use the following
    topic names:"), a name that opens like chatter or an instruction (`_NOT_A_TOPIC`: "Sure", "Here are",
    "For example", "Note", "Topics"), and a name that is a sentence rather than a topic (more than
    `SUBAREA_MAX_WORDS` words: small models often write whole answers).
    """
    if item.rstrip().endswith(":"):
        return None
    item = topic_name(item)
    name, description = re.split(r"[:,(]|\s[-–—]\s", item, maxsplit=1)[0], ""
    if len(name) < len(item):
        description = item[len(name) :].lstrip(":,-–—( ").rstrip(") ").strip()
    name = strip_markup(name).rstrip(".;,").strip("*_ ")
    words = name.split()
    if not words or len(words) > SUBAREA_MAX_WORDS or not any(c.isalpha() for c in name):
        return None
    if _NOT_A_TOPIC.match(name):
        return None
    return name, description


def topic_name(text: str) -> str:
    """A topic as named without list numbering, Markdown or stray emphasis: "* 2. How to bake a cake*"
    is "How to bake a cake"."""
    return _ENUMERATOR.sub("", strip_markup(text)).strip("*_ ")


def clean_question(item: str) -> str | None:
    """The question in a list item, cut after its first '?'; None when the item is not a question.

    An item without '?' that opens like a question ("How to brew tea:") gets its '?': small models
    often drop it, and greedy servers cannot be re-sampled into adding it.
    """
    item = strip_markup(item)
    mark = item.find("?")
    if mark != -1:
        question = strip_markup(item[: mark + 1])
    elif _QUESTION_START.match(item):
        question = re.split(r"[:;]|\s[-–—]\s", item, maxsplit=1)[0].rstrip(" .,!") + "?"
    else:
        return None
    return question if len(question.split()) >= QUESTION_MIN_WORDS else None


def clean_answer(text: str) -> str:
    """An answer without a lead-in line, its label, wrapping quotes, or a last sentence cut off by the
    token limit; after a lead-in line, what follows the last one is the answer."""
    lead_ins = list(_LEAD_IN.finditer(text))
    if lead_ins and text[lead_ins[-1].end() :].strip():
        text = text[lead_ins[-1].end() :]
    text = strip_markup(text.strip())
    if text and text[-1] not in ".!?\"')”":
        last_end = max(text.rfind(mark) for mark in (". ", "! ", "? "))
        if last_end > len(text) // 3:
            text = text[: last_end + 1]
    return text.strip()


def answer_problem(text: str) -> str | None:
    """'empty' or 'refused' when an answer cannot be used (the drop reason), else None."""
    if not text.strip() or not any(c.isalpha() for c in text):
        return "empty"
    if _REFUSALS.match(text):
        return "refused"
    return None


def normalized(text: str) -> str:
    """A key under which two spellings of the same item compare equal (case, spaces, punctuation)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def is_repetitive(text: str) -> bool:
    """True for an empty text or one in which a word 4-gram occurs three or more times (a loop): the
    degenerate reply a log-prob can hide (`contrast`'s repetition) and the degenerate written answer
    (the pair check's)."""
    words = _WORD.findall(text.lower())
    if not words:
        return True
    grams = Counter(tuple(words[i : i + REPEAT_NGRAM]) for i in range(len(words) - REPEAT_NGRAM + 1))
    return bool(grams) and max(grams.values()) >= REPEAT_TIMES
