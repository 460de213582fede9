"""The generation pipeline: subareas -> questions -> one answer per pole, then dedup and split.

Every LLM call goes through a SQLite cache in the output directory, and the files are written
atomically only at the end, so a killed run restarted with the same command re-asks only the calls
that were in flight, and a finished run restarted makes no call at all.

Small models repeat themselves and ignore formats. Each list stage therefore asks again, in bounded
rounds, with what was already kept listed as "not these"; each unparseable reply is retried with a new
sample (a new seed) a bounded number of times and then recorded in dropped.jsonl, never silently lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom import __version__, layout
from autocustom.axis import Axis, parse_axis
from autocustom.data import parsing
from autocustom.data.asking import (
    Asked,
    Parser,
    ask_parsed,
    parse_answer,
    parse_questions,
    parse_subareas,
    rewrite_parser,
)
from autocustom.data.audit import (
    LEAK_THRESHOLD,
    LEAK_THRESHOLD_HELP,
    SUBAREA_THRESHOLD_HELP,
    check_thresholds,
    checked_split,
)
from autocustom.data.dedup import DEFAULT_BLOCK, SUBAREA_THRESHOLD, dedup_texts, subarea_text
from autocustom.data.io import check_output_dir, stale_temp_files, write_dataset_dir
from autocustom.data.pair_check import (
    CONTENT_THRESHOLD,
    CONTENT_THRESHOLD_HELP,
    LEAN_JUDGE_HELP,
    LEAN_MARGIN,
    LEAN_MARGIN_HELP,
    LeanReader,
)
from autocustom.data.schema import SPLITS, Dropped, Manifest, Pair, Subarea
from autocustom.data.split import check_ratios
from autocustom.errors import UsageError
from autocustom.fields import AXIS_HELP, SPLIT_HELP, config_record, library_only, option, required
from autocustom.llm.base import ChatBackend, GenerationParams
from autocustom.llm.chat import Conversation
from autocustom.llm.generation import GENERATION_BATCH
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.prompts import load_prompt

log = logging.getLogger(__name__)

PROMPTS = ("subareas", "questions", "answers")
# independent: each pole answers the question on its own (the paper's way; the two answers may differ in
# content). rewrite: a minimal pair, as in counterfactual data augmentation: one pole answers, then that
# answer is rewritten into the other pole keeping its content, so the pair differs along the axis only.
PAIRINGS = ("independent", "rewrite")
PAIRING_HELP = (
    "independent: each pole answers on its own; rewrite: one pole answers and the writer rewrites that "
    "answer into the other pole keeping its content (the first pole alternates by question)."
)
# A list reply needs ~15-20 tokens per item; capping at this many stops a small model's repetition
# loops ("1. Professionalism, 2. Professionalism, ...") early instead of at --max-new-tokens.
LIST_TOKENS_PER_ITEM, LIST_TOKENS_EXTRA = 24, 32
ROUND_SEED_STRIDE = 1000  # seeds of round r are seed + r*1000 + attempt: rounds never share a sample


@dataclass
class GenerateConfig:
    """Everything `generate` needs; its fields are the command's options (cli/options.py)."""

    axis: Axis = required(AXIS_HELP, cli_type=str)  # "formal:casual" or a YAML file, parsed on creation
    out: Path = required("Dataset directory (created; the same command resumes it).", neutral=True)
    subareas: int = option(8, "Subareas (topics) where the poles differ.")
    questions_per_subarea: int = option(10, "Questions per subarea.")
    # cosine on MiniLM embeddings; 0.9 drops rewordings, keeps variants
    dedup_threshold: float = option(0.90, "Cosine at which a question is a near-duplicate.")
    subarea_threshold: float = option(SUBAREA_THRESHOLD, SUBAREA_THRESHOLD_HELP)
    leak_threshold: float = option(LEAK_THRESHOLD, LEAK_THRESHOLD_HELP)
    content_threshold: float = option(CONTENT_THRESHOLD, CONTENT_THRESHOLD_HELP)
    lean_judge: str | None = option(None, LEAN_JUDGE_HELP)
    lean_margin: float = option(LEAN_MARGIN, LEAN_MARGIN_HELP)
    pairing: str = option(PAIRINGS[0], PAIRING_HELP)
    split: tuple[float, float, float] = option((0.7, 0.15, 0.15), SPLIT_HELP, cli_type=list[float])
    seed: int = option(0, "Seed of the sampling and the split.")
    backend: str = option("local", "local (transformers) or openai (any compatible server).")
    model: str | None = option(  # None: the packaged smollm2-135m for local; required for openai
        None, "Model: packaged name, path or hub id (local); served name (openai)."
    )
    base_url: str | None = option(None, "OpenAI-compatible server URL; key from OPENAI_API_KEY.", url=True)
    concurrency: int = option(4, "Parallel requests (openai).", neutral=True)
    batch_size: int = option(GENERATION_BATCH, "Prompts per generate() batch (local).", neutral=True)
    device: str | None = option(None, "auto, cpu, cuda, cuda:N (local).", neutral=True)
    max_retries: int = option(3, "New samples for an unusable reply before it is dropped.")
    max_rounds: int = option(4, "Asks per list when the model returns too few distinct items.")
    max_new_tokens: int = option(200, "Token limit of list replies.")  # a list of 10 questions is ~150
    # answers of ~50 words; a small model rambles past any instruction
    answer_max_new_tokens: int = option(96, "Token limit of answers.")
    answer_words: int = library_only(50)  # the length both poles are instructed to match
    temperature: float = option(0.7, "Sampling temperature.")
    dedup_block: int = library_only(DEFAULT_BLOCK)

    def __post_init__(self) -> None:
        self.axis = parse_axis(self.axis) if isinstance(self.axis, str) else self.axis
        self.out = Path(self.out)
        self.split = check_ratios(self.split)
        positive = {
            "subareas": (self.subareas, "--subareas 6"),
            "questions_per_subarea": (self.questions_per_subarea, "--questions-per-subarea 10"),
            "max_rounds": (self.max_rounds, "--max-rounds 4"),
            "max_new_tokens": (self.max_new_tokens, "--max-new-tokens 200"),
            "answer_max_new_tokens": (self.answer_max_new_tokens, "--answer-max-new-tokens 96"),
        }
        for name, (value, example) in positive.items():
            if value < 1:
                raise UsageError(
                    f"{name.replace('_', '-')} is {value}; it must be at least 1", f"e.g. {example}"
                )
        if self.pairing not in PAIRINGS:
            raise UsageError(
                f"pairing is '{self.pairing}'; it must be one of {', '.join(PAIRINGS)}",
                "e.g. --pairing rewrite",
            )
        if self.max_retries < 0:
            raise UsageError(
                f"max-retries is {self.max_retries}; it must be 0 or more", "e.g. --max-retries 3"
            )
        check_thresholds(self)

    def settings(self) -> dict[str, Any]:
        """The options that shaped the data, for the manifest (no secrets: the key is never here)."""
        data = config_record(self)
        for name in ("axis", "out", "backend", "model", "seed"):  # recorded in their own manifest fields
            data.pop(name)
        return data


@dataclass
class GenerateResult:
    """What a run produced: where, the counts (shortfall included) and the manifest written."""

    out: Path
    manifest: Manifest
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def shortfall(self) -> dict[str, int]:
        return self.counts.get("shortfall", {})

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "axis": self.manifest.axis, "counts": self.counts}


def generate(
    config: GenerateConfig,
    *,
    backend: ChatBackend | None = None,
    read_lean: LeanReader | None = None,
    progress: ProgressCallback = no_progress,
) -> GenerateResult:
    """Generate a contrastive dataset for `config.axis` into `config.out` (resumable, see module doc).

    `read_lean` reads the pairs' lean when `config.lean_judge` is set (`scoring.pair_lean.PairLean`:
    a model is above the data layer, so it is handed in)."""
    from autocustom.llm.cache import CachedBackend, CallCache

    check_output_dir(config.out, config.axis)
    names = PROMPTS + (("rewrite",) if config.pairing == "rewrite" else ())
    templates = {name: load_prompt(name) for name in names}
    if backend is None:
        backend = _make_backend(config)
    config.out.mkdir(parents=True, exist_ok=True)
    with CallCache(config.out / layout.CALL_CACHE) as cache:
        cached = CachedBackend(backend, cache)
        run = _Run(config, cached, progress)
        subareas = run.subareas()
        questions = run.questions(subareas)
        pairs = run.answers(questions)
        counts_calls = {"calls_made": cached.calls_made, "cache_hits": cached.cache_hits}
    return _write_dataset(config, backend, templates, subareas, pairs, run, counts_calls, read_lean)


def _make_backend(config: GenerateConfig) -> ChatBackend:
    from autocustom.llm.factory import make_backend

    backend = make_backend(
        config.backend,
        config.model,
        base_url=config.base_url,
        concurrency=config.concurrency,
        device=config.device,
        batch_size=config.batch_size,
    )
    check = getattr(backend, "check_reachable", None)
    if check is not None:
        check()  # an unreachable server or a refused key fails now, not after the first stage
    if config.backend == "local":
        from autocustom.llm.models import check_loadable

        check_loadable(backend.model)  # a missing path or offline hub id fails now; weights load lazily
    return backend


@dataclass
class _Question:
    id: str
    subarea: str
    text: str


_Answers = dict[str, dict[str, str]]  # question id -> pole -> answer
_Failures = dict[str, tuple[str, str, str]]  # question id -> (reason, pole, last reply)


class _Run:
    """The three stages over one cached backend; collects dropped records and counts as it goes."""

    def __init__(self, config: GenerateConfig, backend: ChatBackend, progress: ProgressCallback) -> None:
        self.config = config
        self.backend = backend
        self.progress = progress
        self.dropped: list[Dropped] = []
        self.counts: dict[str, Any] = {}
        axis = config.axis
        self.poles_note = _poles_note(axis)

    def _sample(
        self,
        stage: str,
        conversations: list[Conversation],
        parse: Parser | list[Parser],
        params: GenerationParams,
    ) -> list[Asked]:
        return ask_parsed(
            self.backend, stage, conversations, parse, params, self.config.max_retries, self.progress
        )

    def _params(self, round_index: int, max_new_tokens: int) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=self.config.temperature,
            seed=self.config.seed + round_index * ROUND_SEED_STRIDE,
        )

    # -- stage 1 -----------------------------------------------------------------------------------

    def subareas(self) -> list[Subarea]:
        config, axis = self.config, self.config.axis
        template = load_prompt("subareas")
        found: dict[str, tuple[str, str]] = {}  # normalised name -> (name, description), in order found
        kept: list[int] = []  # indices into found of the distinct topics (near-duplicates merged)
        for round_index in range(config.max_rounds):
            if len(kept) >= config.subareas:
                break
            # The full count every round, not only the missing ones: a small model asked for "1 topic"
            # often writes prose instead of a list; extra items beyond the count are not taken.
            messages = template.render(
                pole_a=axis.pole_a,
                pole_b=axis.pole_b,
                count=config.subareas,
                poles_note=self.poles_note,
                avoid=_avoid([list(found.values())[i][0] for i in kept]),
            )
            params = self._params(round_index, _list_tokens(config, config.subareas))
            [(items, reply, reason)] = self._sample("subareas", [messages], parse_subareas, params)
            if items is None:
                self._drop(f"subareas-round{round_index + 1}", "parse-failed", "subareas", reply, reason)
                continue
            for position, (name, description) in enumerate(items, 1):
                key = parsing.normalized(name)
                item_id = f"subareas-round{round_index + 1}-{position}"
                if key in {parsing.normalized(pole) for pole in axis.poles}:  # "Formal": a pole, not a topic
                    self._drop(item_id, "not-a-topic", "subareas", name)
                elif key in found:
                    self._drop(item_id, "duplicate-subarea", "subareas", name)
                else:
                    found[key] = (name, description)
            kept = self._distinct(list(found.values()))
        chosen = [list(found.values())[i] for i in kept[: config.subareas]]
        width = max(2, len(str(config.subareas)))
        subareas = [Subarea(f"s{i:0{width}d}", name, desc) for i, (name, desc) in enumerate(chosen, 1)]
        self.counts["subareas_asked"] = config.subareas
        self.counts["subareas"] = len(subareas)
        return subareas

    def _distinct(self, found: list[tuple[str, str]]) -> list[int]:
        """The found subareas that are distinct topics, in order: one within `subarea_threshold` cosine
        of an earlier one is merged into it (greedy and prefix-stable, as the question dedup), and the
        merges so far are recorded in the manifest's counts."""
        texts = [subarea_text(name, description) for name, description in found]
        result = dedup_texts(texts, self.config.subarea_threshold)
        self.counts["subareas_merged"] = [
            {"name": found[i][0], "into": found[of][0], "cosine": round(similarity, 4)}
            for i, (of, similarity) in sorted(result.duplicates.items())
        ]
        return result.kept

    # -- stage 2 -----------------------------------------------------------------------------------

    def questions(self, subareas: Sequence[Subarea]) -> list[_Question]:
        """Questions per subarea, near-duplicates removed across all subareas after every round.

        Greedy dedup in a fixed order is prefix-stable, so re-running it over the growing candidate
        list never changes an earlier decision; only the questions still missing are asked again.
        """
        config, axis = self.config, self.config.axis
        template = load_prompt("questions")
        per_subarea = config.questions_per_subarea
        candidates: list[_Question] = []
        seen: set[str] = set()
        kept_ids: set[str] = set()
        duplicates: dict[int, tuple[int, float]] = {}
        width = max(4, len(str(len(subareas) * per_subarea * config.max_rounds)))
        for round_index in range(config.max_rounds):
            kept_by_subarea = Counter(q.subarea for q in candidates if q.id in kept_ids)
            short = [s for s in subareas if kept_by_subarea[s.id] < per_subarea]
            if not short:
                break
            kept_texts = {
                s.id: [q.text for q in candidates if q.subarea == s.id and q.id in kept_ids] for s in short
            }
            conversations = [
                template.render(
                    pole_a=axis.pole_a,
                    pole_b=axis.pole_b,
                    subarea=s.name,
                    count=per_subarea,  # the full count again, as for subareas
                    poles_note=self.poles_note,
                    avoid=_avoid(kept_texts[s.id]),
                )
                for s in short
            ]
            params = self._params(round_index, _list_tokens(config, per_subarea))
            results = self._sample("questions", conversations, parse_questions, params)
            for subarea, (items, reply, reason) in zip(short, results, strict=True):
                if items is None:
                    self._drop(
                        f"{subarea.id}-round{round_index + 1}", "parse-failed", "questions", reply, reason
                    )
                    continue
                need = per_subarea - kept_by_subarea[subarea.id]
                for text in items:
                    key = parsing.normalized(text)
                    if key in seen or need <= 0:
                        continue
                    seen.add(key)
                    candidates.append(_Question(f"p{len(candidates) + 1:0{width}d}", subarea.id, text))
                    need -= 1
            kept_ids, duplicates = self._dedup(candidates)
        kept = [q for q in candidates if q.id in kept_ids]
        self._record_duplicates(candidates, duplicates)
        self.counts["questions_asked"] = len(subareas) * per_subarea
        self.counts["questions_generated"] = len(candidates)
        self.counts["questions_kept"] = len(kept)
        return kept

    def _record_duplicates(
        self, candidates: Sequence[_Question], duplicates: dict[int, tuple[int, float]]
    ) -> None:
        for q_index, (of, similarity) in duplicates.items():
            question = candidates[q_index]
            self.dropped.append(
                Dropped(
                    question.id,
                    "near-duplicate",
                    "questions",
                    candidates[of].id,
                    round(similarity, 4),
                    question.text,
                )
            )

    def _dedup(self, candidates: Sequence[_Question]) -> tuple[set[str], dict[int, tuple[int, float]]]:
        self.progress(ProgressEvent("dedup", 0, len(candidates)))
        result = dedup_texts(
            [q.text for q in candidates], self.config.dedup_threshold, block_size=self.config.dedup_block
        )
        self.progress(ProgressEvent("dedup", len(candidates), len(candidates)))
        return {candidates[i].id for i in result.kept}, result.duplicates

    # -- stage 3 -----------------------------------------------------------------------------------

    def answers(self, questions: Sequence[_Question]) -> list[Pair]:
        """One answer per pole per question; a question loses its pair when either answer is unusable."""
        if self.config.pairing == "rewrite":
            answers, failed = self._rewritten(questions)
        else:
            answers, failed = self._answer([(q, pole) for q in questions for pole in self.config.axis.poles])
        pairs = []
        for question in questions:
            if question.id in failed:
                reason, pole, reply = failed[question.id]
                self.dropped.append(
                    Dropped(
                        question.id, reason, "answers", text=question.text, detail=f"{pole}: {reply[:200]}"
                    )
                )
            else:
                pairs.append(Pair(question.id, question.subarea, question.text, answers[question.id]))
        self.counts["pairs"] = len(pairs)
        return pairs

    def _rewritten(self, questions: Sequence[_Question]) -> tuple[_Answers, _Failures]:
        """Minimal pairs: the first pole answers (alternating by question, so neither pole is always
        the rewrite), then the writer rewrites each answer into the other pole, the answer in the prompt."""
        axis = self.config.axis
        first = {q.id: axis.poles[i % 2] for i, q in enumerate(questions)}
        answers, failed = self._answer([(q, first[q.id]) for q in questions])
        jobs = [(q, axis.opposite(first[q.id])) for q in questions if q.id not in failed]
        sources = {q.id: answers[q.id][first[q.id]] for q, _pole in jobs}
        rewrites, rewrite_failed = self._answer(jobs, sources=sources)
        self.counts["rewrite_first"] = dict(Counter(first[q.id] for q, _pole in jobs))
        for question_id, written in rewrites.items():
            answers[question_id].update(written)
        return answers, {**failed, **rewrite_failed}

    def _answer(
        self, jobs: Sequence[tuple[_Question, str]], sources: dict[str, str] | None = None
    ) -> tuple[_Answers, _Failures]:
        """Ask one answer per (question, pole) job: written from the question, or, with `sources`,
        rewritten from the other pole's answer to it. Returns the answers and the first failure of
        each question (reason, pole, reply)."""
        config, axis = self.config, self.config.axis
        stage = "rewrites" if sources is not None else "answers"
        template = load_prompt("rewrite" if sources is not None else "answers")
        conversations, parsers = [], []
        for question, pole in jobs:
            values = {"pole": pole, "question": question.text, "words": config.answer_words}
            values["pole_note"] = _pole_note(axis, pole)
            if sources is not None:
                values |= {"source_pole": axis.opposite(pole), "answer": sources[question.id]}
            conversations.append(template.render(**values))
            parsers.append(parse_answer if sources is None else rewrite_parser(sources[question.id]))
        params = self._params(0, config.answer_max_new_tokens)
        results = self._sample(stage, conversations, parsers, params)
        answers: _Answers = {}
        failed: _Failures = {}
        for (question, pole), (text, reply, reason) in zip(jobs, results, strict=True):
            if text is None:
                failed.setdefault(question.id, (reason or "empty", pole, reply))
            else:
                answers.setdefault(question.id, {})[pole] = text
        return answers, failed

    def _drop(self, item_id: str, reason: str, stage: str, text: str, detail: str | None = None) -> None:
        self.dropped.append(Dropped(item_id, reason, stage, text=text[:500], detail=detail or ""))


def _list_tokens(config: GenerateConfig, items: int) -> int:
    return min(config.max_new_tokens, LIST_TOKENS_PER_ITEM * items + LIST_TOKENS_EXTRA)


def _avoid(items: Sequence[str]) -> str:
    """The "not these" sentence for a repeated ask; empty on the first ask."""
    if not items:
        return ""
    listed = "; ".join(items)
    return f"\nDo not repeat any of these, which we already have: {listed}."


def _poles_note(axis: Axis) -> str:
    notes = [f'"{p}" means: {axis.description(p)}' for p in axis.poles if axis.description(p)]
    return f"\nHere {'; '.join(notes)}." if notes else ""


def _pole_note(axis: Axis, pole: str) -> str:
    return f'\nHere "{pole}" means: {axis.description(pole)}.' if axis.description(pole) else ""


def _write_dataset(
    config: GenerateConfig,
    backend: ChatBackend,
    templates: dict[str, Any],
    subareas: list[Subarea],
    pairs: list[Pair],
    run: _Run,
    calls: dict[str, int],
    read_lean: LeanReader | None,
) -> GenerateResult:
    """Check the pairs, split by subarea, audit the split, and write every file atomically, the manifest
    last (it marks completion)."""
    pairs, by_split, assignment, checked_out, checks = checked_split(pairs, subareas, config, read_lean)
    run.dropped.extend(checked_out)
    counts = {**run.counts, "pairs": len(pairs), **checks}
    counts["pairs_per_split"] = {name: len(by_split[name]) for name in SPLITS}
    counts["subareas_per_split"] = {name: len(assignment[name]) for name in SPLITS}
    counts["dropped"] = dict(Counter(d.reason for d in run.dropped))
    counts.update(calls)
    counts["shortfall"] = {
        "subareas": config.subareas - counts["subareas"],
        "questions": counts["questions_asked"] - counts["questions_kept"],
        "pairs": counts["questions_asked"] - counts["pairs"],
    }
    manifest = Manifest(
        axis=config.axis.to_dict(),
        backend=backend.name,
        model=backend.model,
        prompts={name: template.sha256 for name, template in templates.items()},
        settings=config.settings(),
        counts=counts,
        seed=config.seed,
        version=__version__,
    )
    out = config.out
    for stale in stale_temp_files(out):
        stale.unlink(missing_ok=True)
    write_dataset_dir(out, manifest, subareas, pairs, run.dropped, by_split)
    if any(counts["shortfall"].values()):
        log.info("shortfall against what was asked: %s", counts["shortfall"])
    return GenerateResult(out, manifest, counts)
