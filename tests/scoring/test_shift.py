from __future__ import annotations

import numpy as np
import pytest

from autocustom.scoring.shift import bias_shift, lean, per_subarea, tail_shift


def test_bias_shift_is_the_paired_mean_change():
    est = bias_shift([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5, 2.0], n_boot=200)
    assert est.value == pytest.approx(1.25)
    assert est.n == 4 and est.low <= est.value <= est.high


def test_lean_maps_share_to_signed_scale():
    assert lean([1.0, 2.0, -1.0, 0.5]).value == pytest.approx(0.5)
    assert lean([-1.0, -2.0]).value == -1.0


def test_tail_shift_averages_the_least_moved_questions():
    change = np.arange(20, dtype=float)  # 10% tail = the two smallest changes: 0 and 1
    est = tail_shift(change, np.zeros(20), 0.1, n_boot=300)
    assert est.value == pytest.approx(0.5)
    assert est.low <= 0.5 <= est.high and est.n == 20
    with pytest.raises(ValueError):
        tail_shift(change, change, 0.0)


def test_per_subarea_rows():
    rows = per_subarea(["a", "b", "a"], [1.0, -1.0, 2.0], [0.0, 0.0, 0.0], names={"a": "alpha"}, n_boot=50)
    assert [r["subarea"] for r in rows] == ["a", "b"]
    assert rows[0]["name"] == "alpha" and rows[0]["n"] == 2
    assert rows[0]["bias_shift"]["value"] == pytest.approx(1.5)
    assert rows[1]["lean"]["value"] == -1.0
    assert per_subarea(["a"], [1.0])[0]["bias_shift"] is None
