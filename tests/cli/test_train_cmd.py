"""`autocustom train` via the CLI: a --json run; every bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocustom.cli import app
from tests.sample_dataset import write_small_dataset

SMALL = ["--max-steps", "1", "--eval-steps", "1", "--batch-size", "2", "--max-length", "48"]
SMALL += ["--mmlu-questions", "4", "--drift-texts", "2", "--reg-weight", "0", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("data"), per_subarea=2)


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def test_train_json_prints_one_summary(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    result = invoke(
        "--data",
        str(dataset),
        "--toward",
        "casual",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        *SMALL,
        "--json",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stop_reason"] == "max-steps" and summary["best_step"] == 1
    assert json.loads((out / "run_config.json").read_text())["toward"] == "casual"
    again = invoke(
        "--data",
        str(dataset),
        "--toward",
        "casual",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        *SMALL,
        "--json",
        "--quiet",
        "--resume",
    )
    assert (
        again.exit_code == 0 and json.loads(again.stdout) == summary
    )  # finished run: returned, not retrained
    clash = invoke(
        "--data",
        str(dataset),
        "--toward",
        "casual",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        *SMALL,
    )
    assert clash.exit_code == 2 and "holds an earlier train run" in clash.output


def bad_record_dataset(dataset: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in dataset.iterdir():
        (broken / file.name).write_text(file.read_text())
    lines = (broken / "train.jsonl").read_text().splitlines()
    lines[2] = '{"id": "x", "subarea": "s1", "question": "q"}'
    (broken / "train.jsonl").write_text("\n".join(lines) + "\n")
    return broken


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("pole", "use one of: formal, casual"),
        ("record", "train.jsonl:3"),
        ("model", "does not exist"),
        ("steps", "--max-steps is 0"),
        ("lr", "--lr is -0.1"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, dataset, tiny_model_dir, case, expected
):
    out = tmp_path / "run"
    args = {"--data": str(dataset), "--toward": "formal", "--model": str(tiny_model_dir)}
    extra: list[str] = []
    if case == "pole":
        args["--toward"] = "sarcastic"
    elif case == "record":
        args["--data"] = str(bad_record_dataset(dataset, tmp_path))
    elif case == "model":
        args["--model"] = str(tmp_path / "no-such-model")
    elif case == "steps":
        extra = ["--max-steps", "0"]
    else:
        extra = ["--lr", "-0.1"]
    flat = [item for pair in args.items() for item in pair]
    result = invoke(*flat, "--out", str(out), *SMALL[2:], *extra, "--quiet")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_real_smollm2_end_to_end(tmp_path, dataset):
    out = tmp_path / "run"
    env = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "autocustom", "train", "--data", str(dataset), "--toward", "formal"]
    command += ["--out", str(out), "--max-steps", "2", "--eval-steps", "2", "--batch-size", "2"]
    command += [
        "--max-length",
        "64",
        "--mmlu-questions",
        "4",
        "--drift-texts",
        "2",
        "--reg-batch-size",
        "1",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["steps"] == 2 and summary["bias_shift"]["n"] == 2
    assert summary["bias_shift"]["value"] > 0  # two steps at 2e-5 already lean toward the target
    assert json.loads((out / "run_config.json").read_text())["model"] == "smollm2-135m"


def test_require_improvement_exits_1_when_no_checkpoint_beats_the_base(tmp_path, dataset, tiny_model_dir):
    # lr so small that float32 weights cannot change: validation BiasShift is exactly 0 at every step
    frozen = [a if a != "1e-3" else "1e-30" for a in SMALL]
    args = ["--data", str(dataset), "--toward", "formal", "--model", str(tiny_model_dir), *frozen, "--quiet"]
    result = invoke(*args, "--out", str(tmp_path / "run"), "--require-improvement")
    assert result.exit_code == 1, result.output
    assert "gate failed: --require-improvement" in result.stderr
    assert "not better than the base" in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["improved"] is False and "not better than the base" in summary["selection"]
    plain = invoke(*args, "--out", str(tmp_path / "plain"))
    assert plain.exit_code == 0  # without the gate the same run succeeds and only says so
    assert "not better than the base" in plain.stderr


def test_a_fluency_budget_prints_the_kept_models_replies_in_words(tmp_path, dataset, tiny_model_dir):
    args = ["--data", str(dataset), "--toward", "formal", "--model", str(tiny_model_dir), *SMALL, "--quiet"]
    result = invoke(*args, "--out", str(tmp_path / "run"), "--max-fluency-drop", "100")
    assert result.exit_code == 0, result.output
    assert "the kept step 1 is within it (fluency drop" in result.stderr
    assert "replies that loop" in result.stderr and "replies toward the pole" in result.stderr
    lines = result.stderr.splitlines()
    # the tiny random model does not know the axis: its judge is unreadable, and the line says so
    assert any(line.startswith("its own replies cannot be read on this axis") for line in lines), lines
    assert any(line.startswith("fluency: replies") for line in lines)
    assert any(line.startswith("the contrast judge (contrast:base) put") for line in lines)
