"""`run` end to end: scripted LLM + tiny model (fast), and the real packaged models (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autocustom.axis import Axis
from autocustom.data.generate import GenerateConfig
from autocustom.pipeline import run
from autocustom.scoring.shift_score import ScoreConfig
from autocustom.training.config import TrainConfig
from tests.conftest import ScriptedBackend
from tests.data import fake_reply
from tests.images import PNG_SIZE, png_size


def configs(tmp_path, model: str):
    generate = GenerateConfig(
        Axis("formal", "casual"), tmp_path, subareas=6, questions_per_subarea=3, split=(0.5, 0.25, 0.25)
    )
    train = TrainConfig(
        data="",
        toward="formal",
        out="",
        model=model,
        max_steps=2,
        eval_steps=1,
        mmlu_questions=4,
        drift_texts=2,
    )
    score = ScoreConfig(
        model="", data="", base=model, toward="formal", mmlu_questions=4, drift_texts=2, bootstrap=50
    )
    return generate, train, score


def test_run_writes_every_stage_and_a_report_and_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    backend = ScriptedBackend(fake_reply)
    result = run(out, *configs(tmp_path, str(tiny_model_dir)), backend=backend)
    assert (out / "data" / "test.jsonl").is_file()
    assert (out / "train" / "summary.json").is_file()
    assert json.loads((out / "score.json").read_text())["schema"] == "autocustom.shift-score/3"
    assert result.report.missing == []
    names = sorted(p.name for p in result.report.plots)
    assert names == ["lean_by_subarea.png", "training.png"]
    for plot in result.report.plots:
        assert png_size(plot) == PNG_SIZE
    report = (out / "report.md").read_text()
    assert "plots/training.png" in report and "BiasShift" in report and "Checkpoint selection" in report
    # the test split is measured once, by the score stage: training left its final measurement to it
    assert result.trained.bias_shift_test is None and result.trained.drift is None
    assert "| kept model on the test split | the Shift score section below |" in report
    line = result.to_dict()["headline"]
    assert (
        line.startswith("test BiasShift toward formal")
        and f"(n={result.score['metrics']['bias_shift']['n']})" in line
    )

    calls = len(backend.calls)
    again = run(out, *configs(tmp_path, str(tiny_model_dir)), backend=backend)
    assert len(backend.calls) == calls  # generation served from the cache
    assert again.trained.to_dict() == result.trained.to_dict()  # not retrained
    assert again.score == result.score  # not rescored


def test_run_into_a_folder_of_other_files_refuses_it_untouched(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from autocustom.cli import app

    out = tmp_path / "thesis"
    (out / "train" / "model").mkdir(parents=True)
    (out / "train" / "model" / "weights.bin").write_bytes(b"\x00\x01 mine")
    (out / "score.json").write_text('{"mine": true}')
    (out / "report.md").write_text("# my report")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["run", "--axis", "formal:casual", "--toward", "formal", "--out", str(out)]
    result = CliRunner().invoke(app, [*argv, "--model", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "is not empty and is not a run directory" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_headline_says_what_the_figure_means():
    from autocustom.pipeline import headline

    def score(low, value, high):
        estimate = {"value": value, "low": low, "high": high, "n": 12}
        return {"metrics": {"bias_shift": estimate}, "toward": "formal", "opposite": "casual"}

    assert "finds the formal answer likelier than the casual one by 0.100" in headline(score(0.05, 0.1, 0.2))
    assert "not distinguishable from none" in headline(score(-0.05, 0.02, 0.1))
    assert "moved away from formal" in headline(score(-0.2, -0.1, -0.05))


def test_report_on_an_unfinished_run_says_what_is_missing(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from autocustom.cli import app

    out = tmp_path / "run"
    run(out, *configs(tmp_path, str(tiny_model_dir)), backend=ScriptedBackend(fake_reply))
    (out / "score.json").unlink()
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2
    assert "missing" in result.output and "score.json" in result.output
    assert (out / "plots" / "training.png").is_file()  # what exists is still reported


@pytest.mark.slow
def test_run_on_the_packaged_models_end_to_end(tmp_path):
    """The README's main job with minimal sizes: real SmolLM2 writes, is trained and scored."""
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "autocustom", "run", "--axis", "formal:casual", "--toward", "formal",
        "--out", str(out), "--subareas", "3", "--questions-per-subarea", "3", "--max-steps", "2",
        "--eval-steps", "1", "--mmlu-questions", "4", "--drift-texts", "2", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["score"]["metrics"]["lean"]["n"] >= 1
    assert result["train"]["steps"] >= 1
    for plot in result["report"]["plots"]:
        assert png_size(__import__("pathlib").Path(plot)) == PNG_SIZE
