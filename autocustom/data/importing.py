"""`autocustom import`: a user's own pair data as an autocustom dataset, with the same dedup, split and schema.

Two shapes are read: one answer column per pole (columns named like the poles are found by themselves,
others mapped with `pole_columns`), or TRL's `prompt/chosen/rejected` with `chosen_pole` naming the pole
of `chosen`. Cells may be text or chat messages (lists of `{role, content}`). Without a subarea column,
subareas are found by clustering the question embeddings (k-means), each named by its most central
question, so the split still holds out unseen topics.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom import __version__
from autocustom.axis import Axis, parse_axis
from autocustom.data.audit import (
    LEAK_THRESHOLD,
    LEAK_THRESHOLD_HELP,
    SUBAREA_THRESHOLD_HELP,
    check_thresholds,
    checked_split,
)
from autocustom.data.dedup import SUBAREA_THRESHOLD
from autocustom.data.io import write_dataset_dir
from autocustom.data.pair_check import (
    CONTENT_THRESHOLD,
    CONTENT_THRESHOLD_HELP,
    LEAN_JUDGE_HELP,
    LEAN_MARGIN,
    LEAN_MARGIN_HELP,
    LeanReader,
)
from autocustom.data.schema import SPLITS, Dropped, Manifest, Pair, Subarea
from autocustom.data.sources import Row, read_rows
from autocustom.data.split import check_ratios
from autocustom.errors import DataError, UsageError
from autocustom.fields import AXIS_HELP, SPLIT_HELP, option, required
from autocustom.fileio import require_new_dir, staged_dir
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress

QUESTION_COLUMNS = ("question", "prompt", "instruction", "input", "q")
SUBAREA_COLUMNS = ("subarea", "topic", "category")
DEFAULT_DEDUP = 0.90  # as `generate`: cosine at which two questions are near-duplicates
_CHECK_SETTINGS = ("subarea_threshold", "leak_threshold", "content_threshold", "lean_judge", "lean_margin")
MIN_CLUSTERS, MAX_CLUSTERS = 3, 30  # 3: train, validation and test each get a topic; 30: still readable


@dataclass
class ImportConfig:
    """Everything `import` needs; its fields are the command's options (cli/options.py)."""

    source: str = required(
        "CSV/TSV, JSONL/JSON, Parquet, a save_to_disk directory or a hub id.", argument=True
    )
    axis: Axis = required(AXIS_HELP, cli_type=str)  # "formal:casual" or a YAML file, parsed on creation
    out: Path = required("Dataset directory to create (must not exist or be empty).")
    question_column: str | None = option(
        None, "Question column (default: question, prompt, instruction, input or q).", flag="--question-col"
    )
    # pole -> column; the command line gives it as repeated --pole-col POLE=COLUMN (cli/pairs_cmd.py)
    pole_columns: dict[str, str] = field(default_factory=dict, metadata={"cli": False})
    chosen_pole: str | None = option(None, "prompt/chosen/rejected data: the pole `chosen` answers as.")
    subarea_column: str | None = option(
        None, "Subarea column (default: subarea, topic or category; else clustered).", flag="--subarea-col"
    )
    clusters: int | None = option(  # None: cluster_count(n)
        None, "Subareas to find by clustering (default sqrt(pairs/2), within 3..30)."
    )
    dedup_threshold: float = option(DEFAULT_DEDUP, "Cosine of a near-duplicate question.")
    subarea_threshold: float = option(SUBAREA_THRESHOLD, SUBAREA_THRESHOLD_HELP)
    leak_threshold: float = option(LEAK_THRESHOLD, LEAK_THRESHOLD_HELP)
    content_threshold: float = option(CONTENT_THRESHOLD, CONTENT_THRESHOLD_HELP)
    lean_judge: str | None = option(None, LEAN_JUDGE_HELP)
    lean_margin: float = option(LEAN_MARGIN, LEAN_MARGIN_HELP)
    split: tuple[float, float, float] = option((0.7, 0.15, 0.15), SPLIT_HELP, cli_type=list[float])
    seed: int = option(0, "Seed of the clustering and the split.")

    def __post_init__(self) -> None:
        self.axis = parse_axis(self.axis) if isinstance(self.axis, str) else self.axis
        self.out = Path(self.out)
        self.split = check_ratios(self.split)
        if self.clusters is not None and self.clusters < 1:  # 0 would read as "not given"
            raise UsageError(
                f"--clusters {self.clusters} must be at least 1",
                "e.g. --clusters 6, or leave it out for the default",
            )
        check_thresholds(self)


@dataclass
class ImportResult:
    out: Path
    counts: dict[str, Any]
    subareas: list[Subarea]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "counts": self.counts, "subareas": [s.to_dict() for s in self.subareas]}


def cluster_count(n: int) -> int:
    """The number of topics found in n questions: sqrt(n / 2), within [3, 30] (and at most n)."""
    return min(n, max(MIN_CLUSTERS, min(MAX_CLUSTERS, round(math.sqrt(n / 2)))))


def import_pairs(
    config: ImportConfig, *, read_lean: LeanReader | None = None, progress: ProgressCallback = no_progress
) -> ImportResult:
    """Read, map, validate, find subareas, dedup, check, split and write `config.out` (refused when not
    empty). `read_lean` reads the pairs' lean when `config.lean_judge` is set (as `generate`'s)."""
    _check_config(config)
    rows, kind = read_rows(config.source)
    mapping = column_mapping(config, rows)
    progress(ProgressEvent("import", 0, len(rows), f"{len(rows)} rows ({kind})"))
    pairs, dropped = _pairs(rows, mapping)
    if not pairs:
        first = f"{dropped[0].detail}: {dropped[0].reason}" if dropped else "no rows"
        raise DataError(
            config.source,
            f"has no usable row (first: {first})",
            "give each row a question and two different answers",
        )
    subareas, pairs, merged = _subareas(config, pairs, mapping)
    pairs, dropped = _dedup(config, pairs, dropped)
    pairs, by_split, assignment, checked_out, checks = checked_split(pairs, subareas, config, read_lean)
    dropped.extend(checked_out)
    counts = {
        "rows": len(rows),
        "pairs": len(pairs),
        "subareas": len(subareas),
        "subareas_merged": merged,
        **checks,
        "pairs_per_split": {name: len(by_split[name]) for name in SPLITS},
        "subareas_per_split": {name: len(assignment[name]) for name in SPLITS},
        "dropped": dict(Counter(d.reason for d in dropped)),
    }
    manifest = Manifest(
        axis=config.axis.to_dict(),
        backend="import",
        model="none",
        prompts={},
        settings=_settings(config, kind, mapping),
        counts=counts,
        seed=config.seed,
        version=__version__,
    )
    _write(config.out, manifest, subareas, pairs, dropped, by_split)
    progress(ProgressEvent("import", len(rows), len(rows), f"{len(pairs)} pairs in {len(subareas)} subareas"))
    return ImportResult(config.out, counts, subareas)


def _check_config(config: ImportConfig) -> None:
    for pole in [*config.pole_columns, *([config.chosen_pole] if config.chosen_pole else [])]:
        config.axis.opposite(pole)  # AxisError (exit 2) naming the poles when `pole` is not one
    require_new_dir(Path(config.out))


@dataclass(frozen=True)
class Mapping:
    question: str
    answers: dict[str, str]  # pole -> column
    subarea: str | None


def column_mapping(config: ImportConfig, rows: list[Row]) -> Mapping:
    """Which column is the question, each pole's answer and the subarea; DataError lists the columns."""
    columns = list(dict.fromkeys(name for row in rows for name in row.values))
    found = {name.lower(): name for name in columns}

    def pick(given: str | None, usual: tuple[str, ...], what: str, required: bool = True) -> str | None:
        if given is not None:
            if given not in columns:
                raise DataError(
                    config.source,
                    f"has no column '{given}' ({what})",
                    f"columns there are: {', '.join(columns)}",
                )
            return given
        hit = next((found[u] for u in usual if u in found), None)
        if hit is None and required:
            raise DataError(
                config.source,
                f"has no {what} column (looked for {', '.join(usual)})",
                f"name it with --{what}-col; columns there are: {', '.join(columns)}",
            )
        return hit

    question = pick(config.question_column, QUESTION_COLUMNS, "question")
    subarea = pick(config.subarea_column, SUBAREA_COLUMNS, "subarea", required=False)
    if config.chosen_pole is not None:
        answers = {
            config.chosen_pole: pick(None, ("chosen",), "chosen"),
            config.axis.opposite(config.chosen_pole): pick(None, ("rejected",), "rejected"),
        }
    else:
        answers = {
            pole: pick(config.pole_columns.get(pole), (pole.lower(),), f"'{pole}' answer")
            for pole in config.axis.poles
        }
    return Mapping(question, answers, subarea)  # type: ignore[arg-type]


def _pairs(rows: list[Row], mapping: Mapping) -> tuple[list[Pair], list[Dropped]]:
    """One pair per usable row; an empty answer or the same text for both poles is dropped with its row."""
    ids = [str(row.values.get("id", "")) for row in rows]
    keep_ids = all(ids) and len(set(ids)) == len(ids)  # the source's own ids, when they are ids
    width = max(4, len(str(len(rows))))
    pairs, dropped = [], []
    for index, row in enumerate(rows):
        pair_id = ids[index] if keep_ids else f"p{index + 1:0{width}d}"
        question = _text(row.values.get(mapping.question), "user")
        answers = {
            pole: _text(row.values.get(column), "assistant") for pole, column in mapping.answers.items()
        }
        reason = _unusable(question, answers)
        if reason is not None:
            dropped.append(Dropped(pair_id, reason, "import", text=question, detail=row.where))
            continue
        subarea = str(row.values.get(mapping.subarea, "")) if mapping.subarea else ""
        pairs.append(Pair(pair_id, subarea, question, answers))
    return pairs, dropped


def _text(value: Any, role: str) -> str:
    """A cell as text: itself, or the last `role` message of a chat-message list (byte-exact)."""
    if isinstance(value, list):
        messages = [m for m in value if isinstance(m, dict) and m.get("role") == role]
        return str(messages[-1].get("content", "")) if messages else ""
    return "" if value is None else str(value)


def _unusable(question: str, answers: dict[str, str]) -> str | None:
    if not question.strip() or not all(a.strip() for a in answers.values()):
        return "empty"
    if len(set(answers.values())) == 1:
        return "same-answer"
    return None


def _subareas(
    config: ImportConfig, pairs: list[Pair], mapping: Mapping
) -> tuple[list[Subarea], list[Pair], list[dict[str, Any]]]:
    """Subareas from the subarea column (pairs carry its raw value until here), values naming one topic
    merged ("Cooking" and "cooking recipes" above `subarea_threshold`); else by clustering. Also returns
    the merges, for the manifest."""
    from autocustom.data.dedup import dedup_texts

    if mapping.subarea is None:
        return (*cluster_subareas(pairs, config.clusters or cluster_count(len(pairs)), config.seed), [])
    names = sorted({p.subarea for p in pairs})
    result = dedup_texts([name or "(none)" for name in names], config.subarea_threshold)
    into = {names[i]: names[of] for i, (of, _) in result.duplicates.items()}
    kept = [names[i] for i in result.kept]
    ids = {name: f"s{i + 1:02d}" for i, name in enumerate(kept)}
    ids.update({name: ids[target] for name, target in into.items()})
    subareas = [Subarea(ids[name], name or "(none)") for name in kept]
    merged = [
        {"name": names[i], "into": names[of], "cosine": round(similarity, 4)}
        for i, (of, similarity) in sorted(result.duplicates.items())
    ]
    return subareas, [Pair(p.id, ids[p.subarea], p.question, p.answers) for p in pairs], merged


def cluster_subareas(pairs: list[Pair], k: int, seed: int) -> tuple[list[Subarea], list[Pair]]:
    """k-means over the normalised question embeddings; a cluster is named by its most central question."""
    import numpy as np
    from sklearn.cluster import KMeans

    from autocustom.data.dedup import embed

    vectors = embed([p.question for p in pairs])
    k = min(k, len(pairs))
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
    labels = model.labels_
    subareas = []
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        distances = np.linalg.norm(vectors[members] - model.cluster_centers_[cluster], axis=1)
        central = pairs[int(members[int(np.argmin(distances))])].question
        subareas.append(
            Subarea(f"s{cluster + 1:02d}", central, f"{len(members)} questions, found by clustering")
        )
    labelled = [
        Pair(p.id, f"s{int(label) + 1:02d}", p.question, p.answers)
        for p, label in zip(pairs, labels, strict=True)
    ]
    return subareas, labelled


def _dedup(
    config: ImportConfig, pairs: list[Pair], dropped: list[Dropped]
) -> tuple[list[Pair], list[Dropped]]:
    """The same near-duplicate removal as `generate`, over the questions in file order."""
    from autocustom.data.dedup import dedup_texts

    result = dedup_texts([p.question for p in pairs], config.dedup_threshold)
    for index, (of, similarity) in result.duplicates.items():
        dropped.append(
            Dropped(
                pairs[index].id,
                "near-duplicate",
                "import",
                pairs[of].id,
                round(similarity, 4),
                pairs[index].question,
            )
        )
    return [pairs[i] for i in result.kept], dropped


def _settings(config: ImportConfig, kind: str, mapping: Mapping) -> dict[str, Any]:
    source = Path(config.source)
    return {
        "source": config.source,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None,
        "format": kind,
        "columns": {"question": mapping.question, "answers": mapping.answers, "subarea": mapping.subarea},
        "chosen_pole": config.chosen_pole,
        "clusters": None if mapping.subarea else config.clusters,
        "dedup_threshold": config.dedup_threshold,
        **{name: getattr(config, name) for name in _CHECK_SETTINGS},
        "split": list(config.split),
    }


def _write(out: Path, manifest: Manifest, subareas, pairs, dropped, by_split) -> None:
    """Written into a temporary directory and renamed into place: a failed import leaves nothing."""
    with staged_dir(Path(out)) as staging:
        write_dataset_dir(staging, manifest, subareas, pairs, dropped, by_split)
