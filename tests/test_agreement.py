"""Figures agree across commands by construction: train, shift-score and compare measure through one layer.

The training summary, a compare row and `shift-score` on the same model, split and sizes must give the
same numbers (to 1e-6) and name the same evaluation plan.
"""

from __future__ import annotations

import pytest

from autocustom.comparison.study import CompareConfig, compare
from autocustom.layout import compare_method_run
from autocustom.scoring.shift_score import ScoreConfig, shift_score
from autocustom.training.config import TrainConfig
from autocustom.training.trainer import train
from tests.sample_dataset import write_small_dataset

SIZES = {"mmlu_questions": 4, "drift_texts": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("agreement-data"), per_subarea=3)


def score(model, data, **options):
    return shift_score(ScoreConfig(model=str(model), data=str(data), split="test", **SIZES, **options))


def same(a: dict, b: dict) -> None:
    for key in ("value", "low", "high", "n"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_train_summary_equals_shift_score_whatever_the_training_seed(tmp_path, dataset, tiny_model_dir, lora):
    """Under LoRA both sides measure against the run's own base with the adapter disabled."""
    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            data=str(dataset), toward="formal", out=str(out), model=str(tiny_model_dir), lora=lora,
            seed=1, max_steps=2, eval_steps=1, batch_size=2, max_length=48, lr=1e-2 if lora else 1e-3,
            reg_weight=0.0, **SIZES,
        )
    ).to_dict()  # fmt: skip
    report = score(out, dataset).to_dict()
    placed = score(out, dataset, device_map="auto").to_dict()  # accelerate's placement: the same figures
    same(placed["metrics"]["bias_shift"], report["metrics"]["bias_shift"])
    assert summary["bias_shift_test"]["value"] != 0.0  # training moved the model: the check is not 0 == 0
    same(summary["bias_shift_test"], report["metrics"]["bias_shift"])
    same(summary["mmlu_after"], report["metrics"]["mmlu_accuracy"])
    same(summary["mmlu_before"], report["metrics"]["mmlu_base_accuracy"])
    same(summary["mmlu_delta_points"], report["metrics"]["mmlu_delta_points"])
    same(summary["drift"], report["metrics"]["drift"])
    assert summary["plans"]["final"] == report["plan"]  # the same items, sizes and seeds, by fingerprint too
    assert summary["plans"]["final"]["eval_seed"] == 0


def test_a_compare_row_equals_shift_score_of_its_model(tmp_path, dataset, tiny_model_dir):
    config = CompareConfig(
        data=str(dataset), toward="formal", out=str(tmp_path / "cmp"), models=[str(tiny_model_dir)],
        methods=["base", "dpo"], padding=[], adversarial=False, max_steps=2, eval_steps=2, bootstrap=200, **SIZES,
    )  # fmt: skip
    result = compare(config)
    row = next(r for r in result.rows if r.method == "dpo" and r.condition == "plain")
    report = score(compare_method_run(config.out, "dpo"), dataset, bootstrap=200).to_dict()
    for name in ("lean", "bias_shift", "mmlu_delta_points", "drift"):
        same(row.metrics[name].to_dict(), report["metrics"][name])
    assert result.to_dict()["plan"]["fingerprint"] == report["plan"]["fingerprint"]
    summary = result.training["dpo"]
    assert summary["bias_shift_test"]["value"] == pytest.approx(row.metrics["bias_shift"].value, abs=1e-6)
