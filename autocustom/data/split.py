"""Split pairs into train / validation / test by subarea, so test subareas are never seen in training.

Splitting by subarea rather than by pair measures whether a shift generalises to unseen topics,
not whether the model memorised neighbours of its training questions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from autocustom.data.schema import SPLITS, Pair
from autocustom.errors import UsageError

SPLIT_EXAMPLE = "--split 0.7,0.15,0.15"


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions summing to 1 (train, validation, test); UsageError otherwise."""
    values = tuple(float(r) for r in ratios)
    if len(values) != 3:
        raise UsageError(
            f"a split needs 3 numbers (train, validation, test fractions), got {len(values)}", SPLIT_EXAMPLE
        )
    if any(v < 0 or math.isnan(v) for v in values) or values[0] <= 0:
        raise UsageError(f"split {values} has a negative fraction or no train share", f"e.g. {SPLIT_EXAMPLE}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise UsageError(f"split fractions {values} sum to {sum(values):g}, not 1", f"e.g. {SPLIT_EXAMPLE}")
    return values  # type: ignore[return-value]


def split_subareas(subarea_ids: Sequence[str], ratios: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Assign each subarea to exactly one split; deterministic for a seed and a set of ids.

    Counts are the ratios times the number of subareas, apportioned by largest remainder (so they add
    up to the number of subareas and train is not shorted by rounding); with 3 or more subareas every split
    with a positive ratio gets at least one (a test split with no subarea would make scoring
    impossible), taken from train. With 2 subareas: train and test; with 1: train only.
    """
    ratios = check_ratios(ratios)
    ids = sorted(set(subarea_ids))
    random.Random(seed).shuffle(ids)
    n = len(ids)
    counts = dict(zip(SPLITS, _apportion(n, ratios), strict=True))
    if n >= 3:
        for name, ratio in zip(SPLITS[1:], ratios[1:], strict=True):
            counts[name] = max(counts[name], 1) if ratio > 0 else 0
    else:
        counts = {"train": 1 if n else 0, "validation": 0, "test": 1 if n == 2 and ratios[2] > 0 else 0}
    counts["train"] = n - counts["validation"] - counts["test"]
    while counts["train"] < 1 and n >= 3:  # rounding gave the held-out splits too much
        largest = max(("validation", "test"), key=lambda name: counts[name])
        counts[largest] -= 1
        counts["train"] += 1
    assignment, start = {}, 0
    for name in SPLITS:
        assignment[name] = sorted(ids[start : start + counts[name]])
        start += counts[name]
    return assignment


def _apportion(n: int, ratios: Sequence[float]) -> list[int]:
    """Whole counts summing to n, closest to n * ratio: floors, then the largest remainders.

    Ties go to train, then test, then validation: the held-out result needs test pairs more than
    early stopping needs validation pairs.
    """
    exact = [n * ratio for ratio in ratios]
    counts = [math.floor(x) for x in exact]
    tie_order = {0: 0, 2: 1, 1: 2}  # train, test, validation
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], tie_order[i]))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_pairs(
    pairs: Sequence[Pair], ratios: Sequence[float], seed: int
) -> tuple[dict[str, list[Pair]], dict[str, list[str]]]:
    """Pairs by split (every pair goes where its subarea went), and the subarea ids of each split."""
    assignment = split_subareas(sorted({p.subarea for p in pairs}), ratios, seed)
    split_of = {sid: name for name, ids in assignment.items() for sid in ids}
    by_split: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        by_split[split_of[pair.subarea]].append(pair)
    return by_split, assignment
