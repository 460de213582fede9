"""Win rates: ties count half, length control changes nothing at equal lengths and discounts length."""

from __future__ import annotations

import numpy as np
import pytest

from autocustom.scoring.winrate import length_controlled_win_rate, position_consistency, win_rate


def _verdicts(outcomes: list[float]) -> np.ndarray:
    """Both orders agreeing on each outcome (1 win, 0 loss), 0.5 as a split verdict."""
    return np.array([[o, o] if o != 0.5 else [1.0, 0.0] for o in outcomes])


@pytest.mark.parametrize("outcomes", [[1, 0, 1, 1, 0.5, 0, 1, 1], [0, 0, 1, 0.5, 0.5, 0, 0, 1, 0, 0]])
def test_at_equal_lengths_the_length_controlled_rate_is_the_raw_rate(outcomes):
    verdicts = _verdicts(outcomes)
    lengths = np.full(len(outcomes), 40.0)
    raw = win_rate(verdicts, n_boot=200)
    controlled = length_controlled_win_rate(verdicts, lengths, lengths, n_boot=200)
    assert controlled.value == pytest.approx(raw.value, abs=1e-6)
    assert controlled.n == raw.n == len(outcomes)
    assert controlled.low <= controlled.value <= controlled.high


def _length_loving_judge(longer: int, shorter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A judge that mostly picks the longer reply: wins 80% when longer, 20% when shorter."""
    outcomes, differences = [], []
    for count, sign in ((longer, 1), (shorter, -1)):
        wins = round(count * (0.8 if sign > 0 else 0.2))
        outcomes += [1.0] * wins + [0.0] * (count - wins)
        differences += [sign * 30.0] * count
    lengths = 50 + np.array(differences)
    return _verdicts(outcomes), lengths, np.full(len(outcomes), 50.0)


def test_a_method_that_wins_by_length_is_discounted():
    verdicts, lengths, base = _length_loving_judge(longer=30, shorter=10)
    raw = win_rate(verdicts, n_boot=200).value  # 0.65: mostly longer, so mostly chosen
    controlled = length_controlled_win_rate(verdicts, lengths, base, n_boot=200).value
    assert controlled < raw - 0.1
    assert controlled == pytest.approx(0.5, abs=0.05)  # at equal length the judge has no preference


def test_a_method_that_loses_by_brevity_is_credited():
    verdicts, lengths, base = _length_loving_judge(longer=10, shorter=30)
    assert (
        length_controlled_win_rate(verdicts, lengths, base, n_boot=200).value > win_rate(verdicts).value + 0.1
    )


def test_one_sided_verdicts_need_no_fit():
    verdicts = _verdicts([1, 1, 1])
    assert length_controlled_win_rate(verdicts, np.array([9.0, 1, 5]), np.ones(3), n_boot=50).value == 1.0


def test_position_consistency_counts_questions_decided_alike():
    verdicts = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    assert position_consistency(verdicts).value == 0.5


def test_when_length_does_not_predict_the_verdict_nothing_is_discounted():
    outcomes = [1, 1, 0, 0.5] * 2  # the same outcomes for the longer and the shorter replies
    verdicts = _verdicts(outcomes)
    lengths = np.array([60.0] * 4 + [40.0] * 4)
    controlled = length_controlled_win_rate(verdicts, lengths, np.full(8, 50.0), n_boot=100)
    assert controlled.value == pytest.approx(win_rate(verdicts).value, abs=1e-4)
