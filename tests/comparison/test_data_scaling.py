"""The pairs-needed curve: nested subsets, the same steps per pair, a power law recovered from its points."""

from __future__ import annotations

import json

import pytest

from autocustom.comparison.data_scaling import REACH_FRACTION, SizeCurve, SizePoint, fit_power_law, steps_for
from autocustom.comparison.study import CompareConfig, compare
from autocustom.data.schema import Pair
from autocustom.errors import UsageError
from autocustom.layout import compare_size_run, read_run_config
from autocustom.scoring.stats import Estimate
from autocustom.training.data import nested_subset
from tests.images import PNG_SIZE, png_size
from tests.sample_dataset import write_small_dataset


def _point(n: int, value: float, half: float = 0.01) -> SizePoint:
    return SizePoint(n, 1, Estimate(value, value - half, value + half, 12))


def test_the_fit_recovers_a_power_law():
    points = [_point(n, 0.02 * n**0.5) for n in (4, 8, 16, 32, 64)]
    fit = fit_power_law(points)
    assert fit.a == pytest.approx(0.02, rel=1e-3) and fit.b == pytest.approx(0.5, abs=1e-3)
    largest = 0.02 * 64**0.5
    assert 0.02 * fit.reach**0.5 == pytest.approx(REACH_FRACTION * largest, rel=1e-3)
    assert "n = 52 pairs" in SizeCurve("dpo", points, fit).sentence()  # (0.9 * 8)^2 = 51.8


def test_no_fit_is_said_in_words():
    assert "at least 3" in fit_power_law([_point(4, 0.1), _point(8, 0.2)]).reason
    assert "every BiasShift <= 0" in fit_power_law([_point(n, -0.1) for n in (4, 8, 16)]).reason
    falling = fit_power_law([_point(4, 0.3), _point(8, 0.2), _point(16, 0.1)])
    assert falling.reach is None and "does not rise" in falling.reason
    assert "no power law" in SizeCurve("dpo", [], fit_power_law([])).sentence()


def test_subsets_are_nested_and_steps_per_pair_are_kept():
    pairs = [Pair(f"p{i}", "s", f"q{i}", {"a": "x", "b": "y"}) for i in range(20)]
    small, large = nested_subset(pairs, 5, seed=3), nested_subset(pairs, 12, seed=3)
    assert large[:5] == small and len({p.id for p in large}) == 12
    assert nested_subset(pairs, 5, seed=4) != small
    assert steps_for(8, 32, 60) == 15 and steps_for(1, 100, 30) == 1


def test_compare_train_sizes(tmp_path, tiny_model_dir):
    data = write_small_dataset(tmp_path / "data")
    config = CompareConfig(
        data=str(data), toward="formal", out=str(tmp_path / "cmp"), models=[str(tiny_model_dir)],
        methods=["base", "contrastive"], padding=[], adversarial=False, train_sizes=[4, 8],
        max_steps=4, eval_steps=2, mmlu_questions=4, drift_texts=2, bootstrap=50,
    )  # fmt: skip
    result = compare(config)
    (curve,) = result.train_sizes
    assert [p["pairs"] for p in curve["points"]] == [4, 8, 16]  # the full run (16 train pairs) last
    assert [p["steps"] for p in curve["points"]] == [1, 2, 4]
    assert all(p["bias_shift"]["n"] == result.n_pairs for p in curve["points"])
    assert read_run_config(compare_size_run(tmp_path / "cmp", "contrastive", 4))["train_pairs"] == 4
    assert png_size(tmp_path / "cmp" / "plots" / "train_sizes.png") == PNG_SIZE
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert written["train_sizes"][0]["fit"]["fraction"] == REACH_FRACTION
    assert "contrastive against train pairs" in (tmp_path / "cmp" / "compare.md").read_text()


def test_bad_train_sizes_are_refused_before_any_work(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    for sizes, methods in (([16], ["base", "dpo"]), ([0], ["dpo"]), ([4], ["base"])):
        config = CompareConfig(
            data=str(data), toward="formal", out=str(tmp_path / "o"), methods=methods, train_sizes=sizes
        )
        with pytest.raises(UsageError, match="--train-sizes"):
            compare(config)
    assert not (tmp_path / "o").exists()
