"""`selectivity`: every run on every axis, to shift-score's figures; resume per cell; words; bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocustom.axis import Axis
from autocustom.cli import app
from autocustom.comparison.selectivity import Cell, SelectivityConfig, selectivity
from autocustom.data.schema import Pair, Subarea
from autocustom.layout import SELECTIVITY_PLOT, SELECTIVITY_RESULT, SELECTIVITY_TABLE
from autocustom.scoring.shift_score import ScoreConfig, shift_score
from autocustom.scoring.stats import Estimate
from tests.conftest import RUN_SIZES as SIZES
from tests.images import PNG_SIZE, png_size
from tests.sample_dataset import write_dataset_dir

OWN, OTHER = "formal:casual", "optimistic:pessimistic"


def optimism_dataset(path) -> str:
    """A second axis: optimistic against pessimistic answers, three held-out test pairs."""
    subareas = [Subarea("s1", "Weather"), Subarea("s2", "Work"), Subarea("s3", "Money")]

    def pair(number: int, subarea: str) -> Pair:
        answers = {
            "optimistic": f"Plan {number} will surely go well, and things are looking up!",
            "pessimistic": f"Plan {number} will probably fail, as things usually do.",
        }
        return Pair(f"p{number}", subarea, f"How will plan {number} turn out?", answers)

    splits = {
        "train": [pair(1, "s1")],
        "validation": [pair(2, "s2")],
        "test": [pair(n, "s3") for n in (3, 4, 5)],
    }
    return str(write_dataset_dir(path, Axis("optimistic", "pessimistic"), subareas, splits))


@pytest.fixture(scope="module")
def measured(tmp_path_factory, full_run, small_dataset):
    other = optimism_dataset(tmp_path_factory.mktemp("optimism"))
    config = SelectivityConfig(
        runs=[str(full_run)],
        data=[str(small_dataset), other],
        out=str(tmp_path_factory.mktemp("sel")),
        **SIZES,
    )
    return selectivity(config), config, other


def test_each_axis_is_measured_as_shift_score_measures_it(measured, full_run, small_dataset):
    result, _config, other = measured
    own, off = result.cell(str(full_run), OWN), result.cell(str(full_run), OTHER)
    assert (own.own_axis, own.toward, off.own_axis, off.toward) == (True, "formal", False, "optimistic")
    scored_own = shift_score(ScoreConfig(model=str(full_run), data=str(small_dataset), **SIZES)).metrics
    scored_off = shift_score(
        ScoreConfig(model=str(full_run), data=other, toward="optimistic", **SIZES)
    ).metrics
    for cell, scored in ((own, scored_own), (off, scored_off)):
        assert cell.shift.value == pytest.approx(scored["bias_shift"].value, abs=1e-6)
        assert cell.shift.low == pytest.approx(scored["bias_shift"].low, abs=1e-6)
        assert cell.shift.n == scored["bias_shift"].n
    assert own.metrics["drift"].value == pytest.approx(scored_own["drift"].value, abs=1e-6)
    assert (
        off.metrics["drift"] is None and off.metrics["mmlu_delta_points"] is None
    )  # the run's, measured once


def test_the_table_the_heat_map_and_the_words_are_written(measured, full_run):
    result, _config, _other = measured
    data = json.loads((result.out / SELECTIVITY_RESULT).read_text())
    assert data["axes"] == [OWN, OTHER] and len(data["cells"]) == 2
    table = (result.out / SELECTIVITY_TABLE).read_text()
    assert f"| {full_run} | **" in table and "→ optimistic" in table and SELECTIVITY_PLOT in table
    assert png_size(result.out / SELECTIVITY_PLOT) == PNG_SIZE
    [finding] = data["findings"]
    assert finding.startswith(f"{full_run}: toward formal on its own axis")


def test_a_stopped_measurement_resumes_without_loading_a_model(measured, monkeypatch):
    result, config, _other = measured

    def no_loading(*_args, **_kwargs):
        raise AssertionError("a measured cell was measured again")

    monkeypatch.setattr("autocustom.shipping.strength.open_scaled", no_loading)
    again = selectivity(config)
    assert again.reused == 2
    assert [c.to_dict() for c in again.cells] == [c.to_dict() for c in result.cells]


def _cell(axis: str, value: float, low: float, high: float, own: bool = False) -> Cell:
    return Cell("runs/formal", axis, axis.split(":")[0], own, {"bias_shift": Estimate(value, low, high, 20)})


def test_an_off_axis_move_whose_interval_excludes_zero_is_named():
    from autocustom.comparison.selectivity import SelectivityResult

    cells = [
        _cell(OWN, 0.2, 0.1, 0.3, own=True),
        _cell(OTHER, 0.05, 0.01, 0.09),
        _cell("polite:rude", 0.0, -0.1, 0.1),
    ]
    [line] = SelectivityResult(None, ["runs/formal"], [OWN, OTHER, "polite:rude"], cells).findings()
    assert "NOT selective" in line and "optimistic:pessimistic toward optimistic +0.050" in line
    assert "polite:rude" not in line
    cells[1] = _cell(OTHER, 0.0, -0.05, 0.05)
    [line] = SelectivityResult(None, ["runs/formal"], [OWN, OTHER, "polite:rude"], cells).findings()
    assert "selective: no off-axis BiasShift excludes 0 on the 2 other axes" in line


def test_bad_input_is_one_line_and_exit_2(tmp_path, full_run, small_dataset):
    other = optimism_dataset(tmp_path / "optimism")
    cases = {
        "the same axis twice": ["--runs", str(full_run), "--data", f"{small_dataset},{small_dataset}"],
        "no dataset of the run's axis": ["--runs", str(full_run), "--data", other],
        "a plain model is no run": ["--runs", str(small_dataset), "--data", str(small_dataset)],
        "a run listed twice": ["--runs", f"{full_run},{full_run}", "--data", str(small_dataset)],
    }
    for name, argv in cases.items():
        out = tmp_path / name.replace(" ", "-")
        outcome = CliRunner().invoke(app, ["selectivity", *argv, "--out", str(out)])
        assert outcome.exit_code == 2, name
        assert outcome.output.startswith("error: ") and "Traceback" not in outcome.output, name
        assert not out.exists(), name  # nothing claimed


def test_with_the_contrast_judge_each_axis_reads_the_replies_with_its_own_poles(
    tmp_path, full_run, small_dataset
):
    other = optimism_dataset(tmp_path / "optimism")
    config = SelectivityConfig(
        runs=[str(full_run)],
        data=[str(small_dataset), other],
        out=str(tmp_path / "sel"),
        judge="contrast",
        judge_split="test",
        gen_tokens=4,
        **SIZES,
    )
    result = selectivity(config)
    for axis in (OWN, OTHER):
        metrics = result.cell(str(full_run), axis).metrics
        assert metrics["reply_share"].n == 3 and metrics["judge_accuracy"].n == 3  # this axis' 3 test pairs
