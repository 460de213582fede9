"""Free replies and the judge of them: which of two replies is more the target pole, asked both ways.

The model answers held-out questions freely (greedy); for each question a judge LLM (the local
packaged model, or any OpenAI-compatible server) is shown the method's reply and the base model's
reply and asked which one is more *target pole*, the poles' descriptions in the prompt
(`prompts/judge.md`). Each pair is judged in both orders, because LLM judges favour a position: a
question whose two verdicts disagree counts as a tie, and the share of questions judged the same way
in both orders (the position consistency) says how far the judge can be trusted. Calls go through the
same SQLite cache as `generate`, so a resumed or repeated measurement asks nothing twice.

This replaces GenLean (an embedding classifier of replies fitted on the train answers): on the
demo data it labelled validation answers 54% [33%, 75%] correctly and every reply of every model +1,
a figure that said nothing; a pairwise verdict against the base says what it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autocustom.axis import Axis, Poles
from autocustom.errors import UsageError
from autocustom.fields import NEUTRAL, URL
from autocustom.llm.base import ChatBackend, GenerationParams
from autocustom.llm.chat import PLAIN, PromptCondition, render_prompt
from autocustom.scoring.contrast import ContrastJudge, contrast_notes
from autocustom.scoring.stats import Estimate

PAIRWISE_JUDGES = ("local", "openai")  # an LLM asked which of two replies is more the pole
CONTRAST = "contrast"  # a model told each pole in turn (scoring/contrast.py): offline, no position
JUDGES = (*PAIRWISE_JUDGES, CONTRAST)
DEFAULT_GEN_TOKENS = 48  # greedy reply length for the judged replies: a few sentences
JUDGE_PARAMS = GenerationParams(max_new_tokens=8, temperature=0.0, top_p=1.0, seed=0)  # one letter, greedy
# below this share of questions judged alike in both orders the verdicts follow the position more
# than the replies (a judge that always says "A" scores 0, a coin 0.5), and the output says so
READABLE_CONSISTENCY = 0.7
VERDICT = re.compile(r"\b([AB])\b")


@dataclass(kw_only=True)
class JudgeOptions:
    """Which judge reads the free replies (`shift-score`, `dial` and `compare` share these options)."""

    judge: str | None = field(
        default=None,
        metadata={
            "help": "Judge the model's free replies: contrast (the base told each pole reads them: "
            "reply share, fluency, repetition), or local/openai (a pairwise LLM judge against the base's "
            "replies); slow on CPU: it generates. Default: no reply figures."
        },
    )
    judge_model: str | None = field(
        default=None,
        metadata={
            "help": "The judge's model: for contrast any local model or run (default: the base); for "
            "local the packaged model by default; required for openai."
        },
    )
    judge_split: str = field(
        default="validation",
        metadata={"help": "Split whose written answers validate the contrast judge before it is read."},
    )
    base_url: str | None = field(
        default=None,
        metadata={URL: True, "help": "OpenAI-compatible server of the judge (key: $OPENAI_API_KEY)."},
    )
    judge_concurrency: int = field(
        default=4, metadata={NEUTRAL: True, "help": "Parallel judge requests (openai)."}
    )
    gen_tokens: int = field(
        default=DEFAULT_GEN_TOKENS, metadata={"help": "Max new tokens per reply for --judge."}
    )

    def check_judge(self) -> None:
        if self.judge is not None and self.judge not in JUDGES:
            raise UsageError(f"unknown --judge '{self.judge}'", f"use one of: {', '.join(JUDGES)}")
        if self.judge != CONTRAST and self.judge_split != "validation":
            raise UsageError("--judge-split validates --judge contrast only", "add --judge contrast")
        if self.judge == "openai" and not self.judge_model:
            raise UsageError("--judge openai needs --judge-model", "e.g. --judge-model gpt-4o-mini")
        if self.gen_tokens < 1 or self.judge_concurrency < 1:
            raise UsageError(
                "--gen-tokens and --judge-concurrency must be at least 1", "fix the option values"
            )

    @property
    def check_split(self) -> str | None:
        """The split whose written answers validate the judge (only the contrast judge is validated)."""
        return self.judge_split if self.judge == CONTRAST else None

    @property
    def judge_label(self) -> str | None:
        """How outputs name the judge, e.g. `local:smollm2-135m` (None: no judge)."""
        if self.judge is None:
            return None
        if self.judge == CONTRAST:
            return f"{CONTRAST}:{self.judge_model or 'base'}"
        from autocustom.assets import DEFAULT_MODEL

        return f"{self.judge}:{self.judge_model or DEFAULT_MODEL}"


class Judge:
    """Pairwise verdicts of a chat backend on (method reply, base reply), in both orders."""

    def __init__(self, backend: ChatBackend, axis: Axis) -> None:
        self.backend = backend
        self.axis = axis

    def verdicts(
        self, questions: Sequence[str], replies: Sequence[str], base_replies: Sequence[str], poles: Poles
    ) -> np.ndarray:
        """(n, 2): 1 where the judge found the method's reply more `poles.toward`, 0 the base's, 0.5
        where its answer named neither; column 0 with the method's reply shown first, column 1 second."""
        conversations = []
        for question, mine, theirs in zip(questions, replies, base_replies, strict=True):
            conversations.append(self._prompt(question, mine, theirs, poles))
            conversations.append(self._prompt(question, theirs, mine, poles))
        picks = [parse_verdict(answer) for answer in self.backend.complete(conversations, JUDGE_PARAMS)]
        first = [{"A": 1.0, "B": 0.0}.get(p, 0.5) for p in picks[0::2]]
        second = [{"B": 1.0, "A": 0.0}.get(p, 0.5) for p in picks[1::2]]
        return np.column_stack([first, second]) if first else np.zeros((0, 2))

    def _prompt(self, question: str, reply_a: str, reply_b: str, poles: Poles):
        from autocustom.prompts import load_prompt

        toward, opposite = poles.toward, poles.opposite
        notes = [f"{pole}: {text}" for pole in (toward, opposite) if (text := self.axis.description(pole))]
        return load_prompt("judge").render(
            pole=toward,
            opposite=opposite,
            descriptions=f" ({'; '.join(notes)})" if notes else "",
            question=question,
            reply_a=reply_a or "(empty reply)",
            reply_b=reply_b or "(empty reply)",
        )


def parse_verdict(answer: str) -> str | None:
    """The first standalone A or B of the judge's answer ("A", "Reply B", "**A**"), else None."""
    match = VERDICT.search(answer)
    return match.group(1) if match else None


@contextmanager
def open_judge(
    options: JudgeOptions, axis: Axis, *, device: str | None = None, cache: Path | None = None
) -> Iterator[Judge | ContrastJudge | None]:
    """The judge the options ask for (None when none was). A pairwise judge's calls are cached in
    `cache` (default: the user cache, shared by every command: a verdict already given is never asked
    for again); a contrast judge computes log-probs, which cost less than a cache lookup would save."""
    if options.judge is None:
        yield None
        return
    if options.judge == CONTRAST:
        yield _contrast_judge(options, axis, device)
        return
    from autocustom.assets import cache_dir
    from autocustom.layout import JUDGE_CALLS
    from autocustom.llm.cache import CachedBackend, CallCache
    from autocustom.llm.factory import make_backend

    backend = make_backend(
        options.judge,
        options.judge_model,
        base_url=options.base_url,
        concurrency=options.judge_concurrency,
        device=device,
    )
    check = getattr(backend, "check_reachable", None)
    if check is not None:
        check()
    with CallCache(cache or cache_dir() / JUDGE_CALLS) as calls:
        yield Judge(CachedBackend(backend, calls), axis)


def is_contrast(judge: str | None) -> bool:
    """Whether a judge label (`JudgeOptions.judge_label`, as outputs record it) names the contrast judge."""
    return judge is not None and judge.startswith(f"{CONTRAST}:")


def _contrast_judge(options: JudgeOptions, axis: Axis, device: str | None) -> ContrastJudge:
    """The contrast judge: the base of each measurement, or the model `--judge-model` names."""
    if options.judge_model is None:
        return ContrastJudge(axis, options.judge_label)
    from autocustom.llm.models import load_model
    from autocustom.runtime import resolve_device

    loaded = load_model(options.judge_model, device=resolve_device(device))
    return ContrastJudge(axis, options.judge_label, loaded.model, loaded.tokenizer)


def judge_notes(judge: str | None, metrics: dict[str, Estimate | None]) -> list[str]:
    """What the judge's figures can be trusted for, in words (nothing when no judge ran)."""
    if is_contrast(judge):
        return contrast_notes(judge, metrics)
    consistency = metrics.get("judge_consistency")
    if judge is None or consistency is None:
        return []
    if consistency.value < READABLE_CONSISTENCY:
        return [
            f"the judge ({judge}) gave the same verdict in both orders for only {consistency.value:.0%} of "
            f"questions (n={consistency.n}, below {READABLE_CONSISTENCY:.0%}): its verdicts follow the "
            "position of the replies, so the win rates cannot be read; use a stronger judge (--judge openai)"
        ]
    return [
        f"the judge ({judge}) gave the same verdict in both orders for {consistency.value:.0%} of questions "
        f"{consistency}; a disagreement counts as a tie"
    ]


def generate_replies(
    model,
    tokenizer,
    questions: list[str],
    *,
    condition: PromptCondition = PLAIN,
    max_new_tokens: int = DEFAULT_GEN_TOKENS,
    batch_size: int = 16,
) -> list[str]:
    """Greedy replies to the questions under `condition` (what the model says, not what it scores)."""
    from autocustom.llm.generation import generate_texts

    prompts = [render_prompt(tokenizer, condition.conversation(q)) for q in questions]
    return generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
