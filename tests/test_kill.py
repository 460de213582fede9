"""SIGKILL at a random point, then the same command again: `generate`, `train` and `dial` end with the
files and figures of an unbroken run, and what had finished is not redone.

Each command runs in a real subprocess; the kill lands shortly after a progress line drawn at random
(seed `AUTOCUSTOM_KILL_SEED`, default 0), wherever the process then is, mid-write included. Run it with
other seeds to try other points: `AUTOCUSTOM_KILL_SEED=1 pytest tests/test_kill.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data import fake_reply
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("AUTOCUSTOM_KILL_SEED", "0"))
ENV = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1"}
DATASET_FILES = (
    "subareas.jsonl",
    "pairs.jsonl",
    "dropped.jsonl",
    "train.jsonl",
    "validation.jsonl",
    "test.jsonl",
)
SIZES = ["--mmlu-questions", "4", "--drift-texts", "2"]


def autocustom(*args: str) -> list[str]:
    return [sys.executable, "-m", "autocustom", *args]


def unbroken(command: list[str]) -> int:
    """Run to the end; the number of progress lines it printed (where a kill may land)."""
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return len(done.stderr.splitlines())


def kill_at_random(command: list[str], lines: int, salt: int) -> None:
    """SIGKILL after a random progress line (never the last)."""
    kill_after = random.Random(SEED * 1000 + salt).randint(1, max(1, lines - 2))
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for seen, _line in enumerate(process.stderr, start=1):
        if seen >= kill_after:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL, f"finished before the kill (line {kill_after} of {lines})"


def finish(command: list[str]) -> str:
    """The same command again, to the end; its stderr."""
    rerun = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    return rerun.stderr


def test_generate_killed_and_resumed_writes_the_unbroken_dataset(tmp_path):
    with FakeOpenAIServer(reply=fake_reply, latency=0.05) as server:
        args = ["generate", "--axis", "formal:casual", "--subareas", "4", "--questions-per-subarea", "3"]
        args += ["--backend", "openai", "--model", "fake-model", "--base-url", server.base_url]
        lines = unbroken(autocustom(*args, "--out", str(tmp_path / "a")))
        straight_calls = server.chat_count
        kill_at_random(autocustom(*args, "--out", str(tmp_path / "b")), lines, salt=1)
        finish(autocustom(*args, "--out", str(tmp_path / "b")))
        resumed_calls = server.chat_count - straight_calls
    for name in DATASET_FILES:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    assert resumed_calls <= straight_calls + 4  # at most the calls in flight at the kill are asked again


def test_train_killed_and_resumed_ends_at_the_unbroken_weights(tmp_path, small_dataset, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    from autocustom.training.kept_model import checkpoint_step, last_checkpoint

    args = ["train", "--data", str(small_dataset), "--toward", "formal", "--model", str(tiny_model_dir)]
    args += ["--max-steps", "6", "--eval-steps", "2", "--save-steps", "1", "--batch-size", "2", *SIZES]
    lines = unbroken(autocustom(*args, "--out", str(tmp_path / "a")))
    kill_at_random(autocustom(*args, "--out", str(tmp_path / "b")), lines, salt=2)
    checkpoint = last_checkpoint(tmp_path / "b" / "checkpoints")
    finished = (tmp_path / "b" / "summary.json").is_file()  # killed after it was written: nothing to redo
    rerun = finish(autocustom(*args, "--out", str(tmp_path / "b"), "--resume"))
    a, b = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("a", "b"))
    for key in ("best_step", "steps", "stop_reason"):
        assert a[key] == b[key], key
    for key in ("bias_shift", "bias_shift_test", "mmlu_after", "drift"):
        assert b[key]["value"] == pytest.approx(a[key]["value"], abs=1e-6), key
    weights = [load_file(tmp_path / run / "model" / "model.safetensors") for run in ("a", "b")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    trained = [line for line in rerun.splitlines() if line.startswith("[train] ")]
    if finished:
        assert not trained
    else:  # the steps up to the checkpoint are not trained again
        assert trained[0].startswith(f"[train] {(checkpoint_step(checkpoint) if checkpoint else 0) + 1}/6")


def test_dial_killed_and_resumed_measures_each_scale_once(tmp_path, small_dataset, full_run):
    args = ["dial", "--model", str(full_run), "--data", str(small_dataset), "--scales", "0,0.5,1,1.5", *SIZES]
    lines = unbroken(autocustom(*args, "--out", str(tmp_path / "a"), "--bootstrap", "100"))
    command = autocustom(*args, "--out", str(tmp_path / "b"), "--bootstrap", "100")
    kill_at_random(command, lines, salt=3)
    measured = sorted(float(p.stem) for p in (tmp_path / "b" / "scales").glob("*.json"))
    finish(command)
    a, b = (json.loads((tmp_path / run / "dial.json").read_text()) for run in ("a", "b"))
    assert sorted(b["reused"]) == measured  # the scales measured before the kill are read back, not redone
    for name in ("scales", "recommendation"):
        assert json.dumps(b[name], sort_keys=True) == json.dumps(a[name], sort_keys=True), name
