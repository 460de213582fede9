"""Split by subarea: a partition, no subarea in two splits, every split non-empty from 3 subareas."""

from __future__ import annotations

import pytest

from autocustom.data.split import split_subareas
from autocustom.errors import UsageError

RATIOS = [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.34, 0.33, 0.33), (0.5, 0.0, 0.5), (0.9, 0.05, 0.05)]


@pytest.mark.parametrize("ratios", RATIOS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13, 40])
def test_split_invariants(ratios, n):
    ids = [f"s{i:02d}" for i in range(n)]
    for seed in range(6):
        split = split_subareas(ids, ratios, seed)
        assigned = [sid for names in split.values() for sid in names]
        assert sorted(assigned) == ids  # a partition: each subarea in exactly one split
        assert split["train"]
        if n >= 3:
            for name, ratio in zip(("validation", "test"), ratios[1:], strict=True):
                assert bool(split[name]) == (ratio > 0)
        assert split_subareas(list(reversed(ids)), ratios, seed) == split  # order of input irrelevant


def test_split_is_deterministic_per_seed_and_varies_across_seeds():
    ids = [f"s{i:02d}" for i in range(20)]
    assert split_subareas(ids, (0.7, 0.15, 0.15), 3) == split_subareas(ids, (0.7, 0.15, 0.15), 3)
    assert len({str(split_subareas(ids, (0.7, 0.15, 0.15), seed)) for seed in range(10)}) > 1


def test_split_sizes_follow_the_ratios():
    split = split_subareas([f"s{i:02d}" for i in range(20)], (0.7, 0.15, 0.15), 0)
    assert [len(split[name]) for name in ("train", "validation", "test")] == [14, 3, 3]


@pytest.mark.parametrize("ratios", [(0.7, 0.2, 0.2), (0.5, 0.1), (-0.1, 0.6, 0.5), (0.0, 0.5, 0.5)])
def test_bad_ratios_are_usage_errors(ratios):
    with pytest.raises(UsageError) as info:
        split_subareas(["a", "b", "c"], ratios, 0)
    assert "0.7,0.15,0.15" in str(info.value)


def test_counts_follow_the_ratios_without_shorting_train():
    """6 subareas at 0.5/0.25/0.25: 3 train (plain rounding of 1.5 up twice would leave train 2)."""
    counts = {
        name: len(ids)
        for name, ids in split_subareas([f"s{i}" for i in range(6)], (0.5, 0.25, 0.25), 0).items()
    }
    assert counts["train"] == 3 and counts["validation"] + counts["test"] == 3
