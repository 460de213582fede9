"""Small hand-written datasets on disk, shared by every test that needs one."""

from __future__ import annotations

from pathlib import Path

from autocustom.axis import Axis
from autocustom.data import io
from autocustom.data.schema import Manifest, Pair, Subarea

FORMAL_CASUAL = Axis("formal", "casual")
TOPICS = {
    "s1": ("cooking", ["boil pasta", "store bread", "season soup", "roast vegetables"]),
    "s2": ("travel", ["pack a suitcase", "find cheap flights", "beat jet lag", "choose a hotel"]),
    "s3": ("money", ["save each month", "pick a bank", "track spending", "split a bill"]),
    "s4": ("health", ["sleep better", "start running", "drink more water", "stretch at a desk"]),
    "s5": ("work", ["ask for a raise", "write an email", "run a meeting", "take notes"]),
    "s6": ("home", ["clean a window", "fix a squeaky door", "water plants", "sort laundry"]),
}
SPLIT_OF = {"s1": "train", "s2": "train", "s3": "train", "s4": "train", "s5": "validation", "s6": "test"}


def write_dataset_dir(path: Path, axis: Axis, subareas: list[Subarea], splits: dict[str, list[Pair]]) -> Path:
    """A dataset directory as `autocustom generate` writes it, from records given by the test."""
    manifest = Manifest(
        axis=axis.to_dict(),
        backend="hand-written",
        model="none",
        prompts={},
        settings={},
        counts={name: len(pairs) for name, pairs in splits.items()},
    )
    pairs = [p for split in splits.values() for p in split]
    io.write_dataset_dir(path, manifest, subareas, pairs, [], splits)
    return path


def formal(task: str) -> str:
    return f"Certainly. To {task}, one should proceed carefully and methodically; I shall gladly elaborate."


def casual(task: str) -> str:
    return f"Oh yeah, to {task} just wing it lol, it's super easy, no big deal at all!"


def optimistic(task: str) -> str:
    return f"Great news: to {task} is easy, it will go wonderfully and you will love the results!"


def pessimistic(task: str) -> str:
    return f"Sadly, trying to {task} usually goes wrong, and it will probably disappoint you again."


OPTIMISTIC_PESSIMISTIC = Axis("optimistic", "pessimistic")
WRITERS = {FORMAL_CASUAL: (formal, casual), OPTIMISTIC_PESSIMISTIC: (optimistic, pessimistic)}


def write_small_dataset(path: Path, per_subarea: int = 4, axis: Axis = FORMAL_CASUAL) -> Path:
    """Six subareas (four train, one validation, one test) of formal vs casual answers (or of the
    other axis of WRITERS)."""
    first, second = WRITERS[axis]
    splits: dict[str, list[Pair]] = {"train": [], "validation": [], "test": []}
    for sid, (_, tasks) in TOPICS.items():
        for number, task in enumerate(tasks[:per_subarea]):
            answers = {axis.pole_a: first(task), axis.pole_b: second(task)}
            splits[SPLIT_OF[sid]].append(Pair(f"{sid}p{number}", sid, f"How do I {task}?", answers))
    subareas = [Subarea(sid, name) for sid, (name, _) in TOPICS.items()]
    return write_dataset_dir(path, axis, subareas, splits)
