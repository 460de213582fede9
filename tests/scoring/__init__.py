"""Tests of autocustom.score; `write_dataset` builds a small dataset directory by hand for them."""

from __future__ import annotations

from pathlib import Path

from autocustom.data.schema import Pair, Subarea
from tests.sample_dataset import FORMAL_CASUAL, write_dataset_dir

FORMAL = [
    "I would be delighted to assist you with this matter.",
    "Kindly find the requested information enclosed herewith.",
    "It is my considered opinion that the proposal has merit.",
    "Please accept my sincere apologies for the inconvenience.",
]
CASUAL = [
    "sure thing, happy to help lol",
    "yeah here's the stuff u wanted",
    "honestly i kinda like the idea",
    "oops my bad, sorry about that",
]
QUESTIONS = ["Can you help me?", "Where is the report?", "What do you think of the plan?", "Why was it late?"]


def write_dataset(path: Path, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    """formal:casual, 3 subareas, 4 pairs per split (test uses subareas s2 and s3)."""
    records = {
        split: [
            Pair(
                f"{split}{i}",
                "s1" if split != "test" else ("s2" if i < 2 else "s3"),
                f"{QUESTIONS[i]} ({split})" if offset else QUESTIONS[i],
                {"formal": FORMAL[(i + offset) % 4], "casual": CASUAL[(i + offset) % 4]},
            )
            for i in range(4)
        ]
        for offset, split in enumerate(splits)
    }
    subareas = [Subarea("s1", "work"), Subarea("s2", "apologies"), Subarea("s3", "opinions")]
    return write_dataset_dir(path, FORMAL_CASUAL, subareas, records)
