"""`steer`: chosen on validation (never test), measured like any method, resumed, written for llama.cpp."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.errors import OutputExistsError, UsageError
from autocustom.layout import STEER_GGUF, STEER_RESULT, STEER_VECTOR, steer_grid_file
from autocustom.scoring.stats import Estimate
from autocustom.steering.search import GridPoint, SteerConfig, choose, steer
from autocustom.steering.vector import SteeringVector, read_gguf
from tests.conftest import RUN_SIZES as SIZES


def _config(out, small_dataset, tiny_model_dir, toward: str = "formal", **options) -> SteerConfig:
    return SteerConfig(
        data=str(small_dataset),
        toward=toward,
        out=str(out),
        model=str(tiny_model_dir),
        coefficients=[1.0, 8.0],
        **SIZES,
        **options,
    )


@pytest.fixture(scope="module")
def steered(tmp_path_factory, small_dataset, tiny_model_dir):
    out = tmp_path_factory.mktemp("steer") / "run"
    return out, steer(_config(out, small_dataset, tiny_model_dir))


def test_the_grid_is_measured_on_validation_and_the_vector_on_test(steered):
    out, result = steered
    data = result.to_dict()
    assert data["validation_plan"]["split"] == "validation" and data["plan"]["split"] == "test"
    assert {tuple(p["layers"]) for p in data["grid"]} == {(1,)} and len(data["grid"]) == 2
    chosen = (tuple(data["layers"]), data["coefficient"])
    assert chosen in {(tuple(p["layers"]), p["coefficient"]) for p in data["grid"]}
    assert data["metrics"]["bias_shift"]["n"] == len(data["plan"]["pair_ids"])
    assert data["metrics"]["drift"] is not None and data["metrics"]["mmlu_delta_points"] is not None
    assert json.loads((out / STEER_RESULT).read_text())["coefficient"] == data["coefficient"]
    saved = SteeringVector.load(out / STEER_VECTOR)
    assert (saved.layers, saved.coefficient) == chosen
    assert torch_equal(read_gguf(out / STEER_GGUF)[1], saved.directions[1])


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_a_resumed_grid_equals_an_unbroken_one(steered, tmp_path, small_dataset, tiny_model_dir):
    out, result = steered
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    steer_grid_file(copy, "1", 8.0).unlink()  # as if killed before the last grid point
    (copy / STEER_RESULT).unlink()
    resumed = steer(_config(copy, small_dataset, tiny_model_dir))
    assert [p.to_dict() for p in resumed.fitted.grid] == [p.to_dict() for p in result.fitted.grid]
    assert resumed.to_dict()["metrics"] == result.to_dict()["metrics"]


def test_another_target_in_the_same_directory_is_refused(steered, small_dataset, tiny_model_dir):
    out, _ = steered
    with pytest.raises(OutputExistsError, match=r"other settings \(--toward formal -> casual\)"):
        steer(_config(out, small_dataset, tiny_model_dir, toward="casual"))


def _point(coefficient: float, shift: float, low: float, drift: float) -> GridPoint:
    return GridPoint(
        (1,),
        coefficient,
        {"bias_shift": Estimate(shift, low, shift + 0.1, 6), "drift": Estimate(drift, 0, 1, 4)},
    )


def test_the_choice_is_the_largest_shift_inside_the_drift_budget():
    grid = [_point(1, 0.1, 0.05, 0.01), _point(2, 0.3, 0.1, 0.2), _point(4, 0.9, 0.5, 2.0)]
    best, reason = choose(grid, max_drift=0.25)
    assert best.coefficient == 2 and "Drift <= 0.25" in reason
    best, reason = choose(grid, max_drift=0.001)
    assert best.coefficient == 1 and "exceeds" in reason
    best, reason = choose([_point(1, 0.1, -0.05, 0.01)], max_drift=0.25)
    assert "cannot tell it from no shift" in reason


def test_cli_steer_json_and_bad_input(tmp_path, small_dataset, tiny_model_dir):
    runner = CliRunner()
    args = ["steer", "--data", str(small_dataset), "--toward", "formal", "--model", str(tiny_model_dir)]
    sizes = ["--mmlu-questions", "4", "--drift-texts", "2", "--bootstrap", "50"]
    done = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--coefficients", "2", *sizes, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["coefficient"] == 2.0
    for bad in (["--coefficients", "0"], ["--layers", "9"], ["--max-drift", "-1"]):
        failed = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), *bad, *sizes])
        assert failed.exit_code == 2, (bad, failed.output)
        assert "Traceback" not in failed.output


def test_check_refuses_zero_coefficients(small_dataset, tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match="--coefficients"):
        SteerConfig(data=str(small_dataset), toward="formal", out=str(tmp_path), coefficients=[0.0]).check()
