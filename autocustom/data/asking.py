"""Asking the writer for something parseable: a bounded number of new samples per unusable reply.

Small models ignore formats; a reply the stage's parser rejects is asked again with a new seed, and
after `max_retries` new samples its last reply and reason are handed back for dropped.jsonl.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from autocustom.data import parsing
from autocustom.llm.base import ChatBackend, GenerationParams
from autocustom.llm.chat import Conversation
from autocustom.progress import ProgressCallback, ProgressEvent

Parser = Callable[[str], object]  # returns the parsed value or raises Unusable(reason)
Asked = tuple[object, str, str | None]  # (value or None, last reply, last reason or None)


class Unusable(Exception):
    """A reply the stage cannot use; `reason` becomes the drop reason when no sample is usable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ask_parsed(
    backend: ChatBackend,
    stage: str,
    conversations: list[Conversation],
    parse: Parser | list[Parser],
    params: GenerationParams,
    max_retries: int,
    progress: ProgressCallback,
) -> list[Asked]:
    """Ask every conversation; re-ask (seed + attempt) those whose reply `parse` rejects.

    `parse` is one parser for all or one per conversation. All pending conversations of an attempt go
    in one batch, so local batching and server concurrency are used.
    """
    parsers = parse if isinstance(parse, list) else [parse] * len(conversations)
    results: list[Asked] = [(None, "", None)] * len(conversations)
    pending = list(range(len(conversations)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        tick = _ticker(progress, stage, len(pending), f"attempt {attempt + 1}" if attempt else "")
        batch = [conversations[i] for i in pending]
        attempt_params = dataclasses.replace(params, seed=params.seed + attempt)
        replies = backend.complete(batch, attempt_params, on_reply=tick)
        still = []
        for index, reply in zip(pending, replies, strict=True):
            try:
                results[index] = (parsers[index](reply), reply, None)
            except Unusable as exc:
                results[index] = (None, reply, exc.reason)
                still.append(index)
        pending = still
    return results


def _ticker(progress: ProgressCallback, stage: str, total: int, message: str) -> Callable[[int, str], None]:
    """An on_reply callback that reports one unit of progress per reply as it arrives."""
    done = 0

    def tick(_index: int, _reply: str) -> None:
        nonlocal done
        done += 1
        progress(ProgressEvent(stage, done, total, message))

    return tick


def parse_subareas(reply: str) -> list[tuple[str, str]]:
    items = [s for s in (parsing.clean_subarea(item) for item in parsing.parse_list(reply)) if s]
    if not items:
        raise Unusable("no list of short topics in the reply")
    return items


def parse_questions(reply: str) -> list[str]:
    items = [q for q in (parsing.clean_question(item) for item in parsing.parse_list(reply)) if q]
    if not items:
        raise Unusable("no list of questions in the reply")
    return items


def parse_answer(reply: str) -> str:
    text = parsing.clean_answer(reply)
    problem = parsing.answer_problem(text)
    if problem:
        raise Unusable(problem)
    return text


def rewrite_parser(source: str) -> Callable[[str], str]:
    """The answer parser for a rewrite of `source`; a rewrite that repeats its source is unusable
    ("unchanged"), so a new sample is asked."""

    def parse(reply: str) -> str:
        text = parse_answer(reply)
        if parsing.normalized(text) == parsing.normalized(source):
            raise Unusable("unchanged")
        return text

    return parse
