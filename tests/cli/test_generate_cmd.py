"""`autocustom generate` through its command line: bad input, --json, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocustom.axis import Axis
from autocustom.cli import app
from autocustom.data.generate import GenerateConfig, generate
from autocustom.data.io import load_dataset_dir
from tests.conftest import ScriptedBackend
from tests.data import fake_reply
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["generate", *args], env={"CI": "1", **(env or {})})


def assert_one_line_error(result, *expected: str) -> str:
    """Exit 2, no traceback, and a last stderr line naming the problem and the fix."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for text in expected:
        assert text in line, line
    return line


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def other_axis_dataset(tmp_path) -> Path:
    out = tmp_path / "polite"
    config = GenerateConfig(axis=Axis("polite", "rude"), out=out, subareas=1, questions_per_subarea=1)
    generate(config, backend=ScriptedBackend(fake_reply))
    return out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--axis", "formalcasual"], ["no ':'", "Fix:", "formal:casual"]),
        (["--axis", "formal:Formal"], ["both poles", "Fix:"]),
        (["--axis", "missing-axis.yaml"], ["does not exist", "Fix:"]),
        (["--axis", "formal:casual", "--subareas", "0"], ["subareas is 0", "--subareas"]),
        (["--axis", "formal:casual", "--questions-per-subarea", "0"], ["questions-per-subarea is 0"]),
        (["--axis", "formal:casual", "--split", "0.7,0.2,0.2"], ["sum to 1.1", "0.7,0.15,0.15"]),
        (["--axis", "formal:casual", "--split", "0.7,0.3"], ["needs 3 numbers", "0.7,0.15,0.15"]),
        (["--axis", "formal:casual", "--model", "/no/such/model"], ["does not exist", "Fix:"]),
        (["--axis", "formal:casual", "--backend", "openai"], ["needs a model name", "--model"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
    out = tmp_path / "ds"
    assert_one_line_error(run_cli(*args, "--out", str(out)), *expected)
    assert not (out / "manifest.json").exists()


def test_malformed_axis_file_names_its_line(tmp_path):
    axis_file = tmp_path / "axis.yaml"
    axis_file.write_text("poles:\n  - name: formal\n  - name: [casual\n")
    line = assert_one_line_error(run_cli("--axis", str(axis_file), "--out", str(tmp_path / "ds")), "Fix:")
    assert f"{axis_file}:" in line


def test_out_that_is_a_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert_one_line_error(run_cli("--axis", "formal:casual", "--out", str(target)), "existing file", "Fix:")
    assert target.read_text() == "keep me"


def test_dataset_of_another_axis_is_refused_and_kept(other_axis_dataset):
    before = {p.name: p.read_bytes() for p in other_axis_dataset.iterdir()}
    result = run_cli("--axis", "formal:casual", "--out", str(other_axis_dataset))
    assert_one_line_error(result, "polite:rude", "Fix:")
    assert {p.name: p.read_bytes() for p in other_axis_dataset.iterdir()} == before


def test_unreachable_server(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = run_cli(
        "--axis",
        "formal:casual",
        "--out",
        str(tmp_path / "ds"),
        "--backend",
        "openai",
        "--model",
        "m",
        "--base-url",
        url,
    )
    assert_one_line_error(result, "127.0.0.1", "Fix:")


def test_refused_key(tmp_path):
    with FakeOpenAIServer(reply=fake_reply, api_key="the-right-key") as server:
        result = run_cli(
            "--axis", "formal:casual", "--out", str(tmp_path / "ds"), "--backend", "openai",
            "--model", "fake-model", "--base-url", server.base_url, env={"OPENAI_API_KEY": "a-wrong-key"},
        )  # fmt: skip
    assert_one_line_error(result, "Fix:")


def test_offline_hub_id_is_a_model_load_error(tmp_path):
    result = run_cli(
        "--axis", "formal:casual", "--out", str(tmp_path / "ds"), "--model", "no-such-org/no-such-model",
        env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert_one_line_error(result, "no-such-org/no-such-model", "Fix:")
    assert not (tmp_path / "ds").exists()  # refused before anything was written


def test_json_reports_calls_and_cache_hits(tmp_path):
    args = ["--axis", "formal:casual", "--out", str(tmp_path / "ds"), "--subareas", "3"]
    args += ["--questions-per-subarea", "2", "--backend", "openai", "--model", "fake-model", "--json"]
    with FakeOpenAIServer(reply=fake_reply) as server:
        first = run_cli(*args, "--base-url", server.base_url)
        calls = server.chat_count
        second = run_cli(*args, "--base-url", server.base_url)
        assert server.chat_count == calls  # the rerun asked nothing
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    first_counts, second_counts = json.loads(first.stdout)["counts"], json.loads(second.stdout)["counts"]
    assert first_counts["calls_made"] == calls and first_counts["cache_hits"] == 0
    assert second_counts["calls_made"] == 0 and second_counts["cache_hits"] > 0
    assert second_counts["pairs_per_split"] == first_counts["pairs_per_split"]


def test_sigkill_mid_run_then_rerun_repeats_no_call(tmp_path):
    """A killed run resumed by the same command re-sends at most the requests that were in flight."""
    out = tmp_path / "ds"
    concurrency = 2
    command = [sys.executable, "-m", "autocustom", "generate", "--axis", "formal:casual", "--out", str(out)]
    command += ["--subareas", "4", "--questions-per-subarea", "3", "--backend", "openai"]
    command += ["--model", "fake-model", "--concurrency", str(concurrency), "--quiet"]
    env = {**os.environ, "CI": "1", "HF_HUB_OFFLINE": "1"}
    with FakeOpenAIServer(reply=fake_reply, latency=0.3) as server:
        process = subprocess.Popen([*command, "--base-url", server.base_url], cwd=REPO, env=env)
        deadline = time.monotonic() + 120
        while server.chat_count < 12 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = server.chat_count
        assert killed_at >= 12 and not (out / "manifest.json").exists()  # killed mid-run
        rerun = subprocess.run([*command, "--base-url", server.base_url], cwd=REPO, env=env, timeout=300)
        assert rerun.returncode == 0
        bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
    repeated = sum(n - 1 for n in bodies.values())
    assert repeated <= concurrency
    dataset = load_dataset_dir(out)
    assert sum(len(pairs) for pairs in dataset.splits.values()) == 12
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
