"""The strength dial: s = 0 is the base and s = 1 the run, to shift-score's figures; resume; choice; bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocustom.axis import Axis
from autocustom.cli import app
from autocustom.data.schema import Pair, Subarea
from autocustom.errors import OutputExistsError, UsageError
from autocustom.layout import DIAL_PLOT, DIAL_RESULT, DIAL_TABLE, dial_scale_file
from autocustom.report import build_report
from autocustom.scoring.shift_score import ScoreConfig, shift_score
from autocustom.scoring.stats import Estimate
from autocustom.shipping.dial import DialConfig, DialPoint, check_scales, dial, recommend
from tests.conftest import RUN_SIZES as SIZES
from tests.images import PNG_SIZE, png_size
from tests.sample_dataset import write_dataset_dir

COMPARED = ("bias_shift", "lean", "tail_shift", "mmlu_delta_points", "drift")


def _score(model, small_dataset, **options) -> dict:
    report = shift_score(
        ScoreConfig(model=str(model), data=str(small_dataset), split="test", **SIZES, **options)
    )
    return report.to_dict()["metrics"]


def _same(point: DialPoint, metrics: dict) -> None:
    for name in COMPARED:
        expected = metrics[name]
        assert point.metrics[name].value == pytest.approx(expected["value"], abs=1e-6), name
        assert point.metrics[name].low == pytest.approx(expected["low"], abs=1e-6), name


@pytest.mark.parametrize("run", ["full_run", "lora_run"])
def test_scale_0_is_the_base_and_scale_1_the_run_as_shift_score_measures_them(
    request, run, small_dataset, tmp_path
):
    run_dir = request.getfixturevalue(run)
    result = dial(
        DialConfig(
            model=str(run_dir), data=str(small_dataset), out=str(tmp_path / "d"), scales=[0, 1, 2], **SIZES
        )
    )
    base, trained, amplified = result.points
    assert base.metrics["bias_shift"].value == pytest.approx(0.0, abs=1e-6)
    assert base.metrics["drift"].value == pytest.approx(0.0, abs=1e-6)
    assert base.metrics["mmlu_delta_points"].value == 0.0
    _same(trained, _score(run_dir, small_dataset))
    assert trained.metrics["bias_shift"].value != 0.0  # training moved it: s = 1 is not s = 0
    assert amplified.metrics["bias_shift"].value != pytest.approx(
        trained.metrics["bias_shift"].value, abs=1e-6
    )
    assert result.lora is (run == "lora_run")
    written = json.loads((tmp_path / "d" / DIAL_RESULT).read_text())
    assert written["schema"] == "autocustom.dial/1"
    assert [p["scale"] for p in written["scales"]] == [0, 1, 2]
    assert png_size(tmp_path / "d" / DIAL_PLOT) == PNG_SIZE
    assert "Recommended" in (tmp_path / "d" / DIAL_TABLE).read_text()


def test_the_dial_leaves_the_run_on_disk_as_it_was(full_run, small_dataset, tmp_path):
    before = _score(full_run, small_dataset)
    dial(
        DialConfig(
            model=str(full_run), data=str(small_dataset), out=str(tmp_path / "d"), scales=[0.5, 1.5], **SIZES
        )
    )
    assert _score(full_run, small_dataset) == before


def test_a_killed_dial_repeats_no_finished_scale_and_ends_as_an_unbroken_one(
    full_run, small_dataset, tmp_path
):
    config = DialConfig(
        model=str(full_run), data=str(small_dataset), out=str(tmp_path / "d"), scales=[0, 0.5, 1], **SIZES
    )
    unbroken = dial(config).to_dict()
    dial_scale_file(config.out, 0.5).unlink()  # as if killed while measuring 0.5
    (tmp_path / "d" / DIAL_RESULT).unlink()
    resumed = dial(config)
    assert resumed.reused == [0, 1]
    assert {**resumed.to_dict(), "reused": []} == {**unbroken, "reused": []}


def test_a_dial_directory_of_another_plan_is_refused(full_run, small_dataset, tmp_path):
    out = str(tmp_path / "d")
    dial(DialConfig(model=str(full_run), data=str(small_dataset), out=out, scales=[1], **SIZES))
    with pytest.raises(OutputExistsError, match=r"other settings .*--drift-texts 2 -> 3"):
        dial(
            DialConfig(
                model=str(full_run),
                data=str(small_dataset),
                out=out,
                scales=[1],
                **{**SIZES, "drift_texts": 3},
            )
        )


def test_the_report_of_a_run_with_a_dial_has_its_section(full_run, small_dataset):
    dial(
        DialConfig(model=str(full_run), data=str(small_dataset), scales=[0, 1], **SIZES)
    )  # default: run/dial
    report = build_report(full_run)
    assert "dial" in report.sections
    assert "## Strength dial" in report.path.read_text()


def test_the_dial_reads_replies_and_keeps_the_fluency_budget(full_run, small_dataset, tmp_path):
    options = {"judge": "contrast", "gen_tokens": 4, "max_fluency_drop": 50.0}
    result = dial(DialConfig(model=str(full_run), data=str(small_dataset), out=str(tmp_path / "d"),
                             scales=[0, 1], **options, **SIZES))  # fmt: skip
    base, trained = result.points
    assert base.metrics["reply_shift"].value == 0 and base.metrics["fluency_vs_base"].value == 0
    assert trained.metrics["reply_share"].n == trained.metrics["bias_shift"].n
    assert result.recommendation.rule == "budgets" or result.recommendation.scale is None
    assert (
        "fluency drop <= 50.0" in result.recommendation.reason
        or "no scale moved" in result.recommendation.reason
    )
    table = (tmp_path / "d" / DIAL_TABLE).read_text()
    assert "replies toward pole" in table and "fluency vs prompted" in table
    with pytest.raises(UsageError, match="add --judge contrast"):
        dial(DialConfig(model=str(full_run), data=str(small_dataset), out=str(tmp_path / "e"),
                        max_fluency_drop=0.1, **SIZES))  # fmt: skip


def _point(scale: float, shift: float, drift: float, mmlu: float = 0.0) -> DialPoint:
    def estimate(value: float) -> Estimate:
        return Estimate(value, value - 0.01, value + 0.01, 10)

    return DialPoint(
        scale, {"bias_shift": estimate(shift), "drift": estimate(drift), "mmlu_delta_points": estimate(mmlu)}
    )


CURVE = [
    _point(0, 0, 0),
    _point(0.5, 0.4, 0.01),
    _point(1, 0.6, 0.03),
    _point(1.5, 0.7, 0.09),
    _point(2, 0.72, 0.3),
]


def test_budgets_pick_the_strongest_scale_inside_them():
    assert recommend(CURVE, "formal", max_drift=0.05).scale == 1
    assert recommend(CURVE, "formal", max_drift=0.5).scale == 2
    mmlu = [*CURVE[:2], _point(1, 0.6, 0.03, mmlu=-3.0)]
    assert recommend(mmlu, "formal", max_mmlu_drop=2.0).scale == 0.5
    none = recommend(CURVE, "formal", max_drift=0.001)
    assert none.scale is None and "budgets" in none.reason


def test_the_fluency_budget_keeps_the_strongest_scale_whose_replies_stay_fluent():
    def with_fluency(point: DialPoint, drop: float) -> DialPoint:
        fluency = Estimate(-drop, -drop - 0.02, -drop + 0.02, 10)
        return DialPoint(point.scale, {**point.metrics, "fluency_vs_prompted": fluency})

    fluent = [with_fluency(p, drop) for p, drop in zip(CURVE, (0, 0.02, 0.08, 0.2, 0.5), strict=True)]
    chosen = recommend(fluent, "formal", max_fluency_drop=0.1)
    assert chosen.scale == 1 and "fluency drop <= 0.1" in chosen.reason
    assert recommend(fluent, "formal", max_fluency_drop=0.1, max_drift=0.02).scale == 0.5
    assert recommend(CURVE, "formal", max_fluency_drop=0.1).scale is None  # no reply figures: none qualifies


def test_without_budgets_the_knee_of_shift_against_drift():
    chosen = recommend(CURVE, "formal")
    assert chosen.rule == "knee"
    assert chosen.scale == 1  # 0.6 of 0.72 shift for a tenth of the Drift; past it Drift climbs fast


def test_no_shift_at_any_scale_is_said_in_words():
    flat = [_point(0, 0, 0), _point(1, -0.1, 0.02)]
    chosen = recommend(flat, "formal")
    assert chosen.scale is None
    assert "no scale moved the model toward formal" in chosen.reason


def test_a_shift_whose_interval_reaches_zero_is_not_chosen():
    wide = [
        _point(0, 0, 0),
        DialPoint(1, {"bias_shift": Estimate(0.1, -0.02, 0.2, 10), "drift": Estimate(0.2, 0.1, 0.3, 32)}),
    ]
    chosen = recommend(wide, "formal", max_drift=1.0)
    assert chosen.scale is None
    assert "n=10 pairs" in chosen.reason and "95% confidence" in chosen.reason


def test_a_curve_without_a_knee_says_to_set_a_budget():
    straight = [_point(s, 0.1 * s, 0.2 * s) for s in (0, 0.5, 1, 1.5, 2)]
    chosen = recommend(straight, "formal")
    assert chosen.scale is None and chosen.rule == "knee"
    assert "--max-drift" in chosen.reason
    assert recommend(straight, "formal", max_drift=0.25).scale == 1


@pytest.mark.parametrize(
    ("scales", "message"),
    [([0, -1], "negative"), ([1, 0.5], "not ascending"), ([0.5, 0.5], "not ascending"), ([], "empty")],
)
def test_bad_scales_are_refused(scales, message):
    with pytest.raises(UsageError, match=message):
        check_scales(scales)


def test_a_model_that_is_not_a_run_is_refused_in_one_line(tiny_model_dir, small_dataset):
    result = CliRunner().invoke(app, ["dial", "--model", str(tiny_model_dir), "--data", str(small_dataset)])
    assert result.exit_code == 2
    assert "is not a training run or a LoRA adapter" in result.output
    assert "Traceback" not in result.output


def test_a_run_of_another_axis_is_refused(full_run, tmp_path):
    pairs = {
        split: [
            Pair(f"{split}{i}", sid, f"Question {i}?", {"warm": "Dear friend!", "cold": "Noted."})
            for i in range(2)
        ]
        for split, sid in (("train", "s1"), ("validation", "s2"), ("test", "s3"))
    }
    subareas = [Subarea(sid, sid) for sid in ("s1", "s2", "s3")]
    other = write_dataset_dir(tmp_path / "tone", Axis("warm", "cold"), subareas, pairs)
    with pytest.raises(UsageError, match="trained on the axis formal:casual"):
        dial(DialConfig(model=str(full_run), data=str(other), **SIZES))


def test_cli_dial_json_and_negative_scales(full_run, small_dataset, tmp_path):
    runner = CliRunner()
    base = ["dial", "--model", str(full_run), "--data", str(small_dataset), "--out", str(tmp_path / "d")]
    sizes = ["--mmlu-questions", "4", "--drift-texts", "2", "--bootstrap", "50"]
    result = runner.invoke(app, [*base, "--scales", "0,1", *sizes, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["scale"] for p in data["scales"]] == [0, 1]
    assert data["recommendation"]["rule"] in ("knee", "none")
    bad = runner.invoke(app, [*base, "--scales", "0,-0.5"])
    assert bad.exit_code == 2
    assert "negative" in bad.output
