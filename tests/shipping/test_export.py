"""`export --format hf`: a merged model at a scale that plain transformers loads, checked and carded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.layout import DIAL, EXPORT_CARD, EXPORT_RECORD, dial_scale_file
from autocustom.shipping.export import ExportConfig, HubError, export_model
from tests.conftest import RUN_SIZES as SIZES

PLAIN_LOAD = """
import sys
sys.modules["peft"] = None  # an import of either fails: the export must not need them
sys.modules["autocustom"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
assert tokenizer.chat_template, "the chat template travels with the export"
print(type(model).__name__)
"""


def _export(run, tmp_path, **options):
    return export_model(ExportConfig(model=str(run), out=str(tmp_path / "export"), **SIZES, **options))


@pytest.mark.parametrize("run", ["full_run", "lora_run"])
def test_hf_export_loads_with_plain_transformers_and_scores_as_the_dial_at_its_scale(request, run, tmp_path):
    run_dir = request.getfixturevalue(run)
    result = _export(run_dir, tmp_path, scale=0.75)
    out = tmp_path / "export"
    assert result.passed, result.checks
    (check,) = result.checks
    assert check.value <= 1e-4
    assert not (out / "adapter_config.json").exists()  # merged: no adapter left
    loaded = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(out)], capture_output=True, text=True, env=os.environ.copy()
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "ForCausalLM" in loaded.stdout
    record = json.loads((out / EXPORT_RECORD).read_text())
    assert record["scale"] == 0.75 and record["passed"]
    card = (out / EXPORT_CARD).read_text()
    assert "s = 0.75" in card and "BiasShift" in card and "[" in card  # figures with their intervals
    assert "18 pairs (train 12, validation 3, test 3) in 6 subareas" in card
    published = json.dumps(record) + card  # the export is published: no path of this machine in it
    assert str(tmp_path.parent) not in published  # the session folder holding the run, data and model
    dial_dir = run_dir / DIAL
    at_scale = np.asarray(json.loads(dial_scale_file(dial_dir, 0.75).read_text())["margins"])
    at_one = (
        np.asarray(json.loads(dial_scale_file(dial_dir, 1.0).read_text())["margins"])
        if dial_scale_file(dial_dir, 1.0).is_file()
        else None
    )
    if at_one is not None:  # the check compares what it says: another scale's margins differ
        assert np.max(np.abs(at_scale - at_one)) > 1e-4


def test_an_export_into_a_non_empty_directory_is_refused_and_nothing_is_touched(full_run, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = CliRunner().invoke(app, ["export", "--model", str(full_run), "--out", str(out)])
    assert result.exit_code == 2
    assert "exists and is not empty" in result.output
    assert (out / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ollama"], "--ollama needs a GGUF file"),
        (["--format", "onnx"], "--format onnx is not one of"),
        (["--scale", "-1"], "negative"),
        (["--format", "gguf", "--quantize", "q4_k"], "--quantize q4_k"),
    ],
)
def test_bad_export_options_exit_2_in_one_line(full_run, tmp_path, args, message):
    result = CliRunner().invoke(
        app, ["export", "--model", str(full_run), "--out", str(tmp_path / "e"), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_push_to_hub_offline_fails_in_one_line_and_keeps_the_export(full_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="cannot push") as error:
        _export(full_run, tmp_path, push_to_hub="someone/formal-smollm2")
    assert "\n" not in str(error.value)
    assert (tmp_path / "export" / "config.json").is_file()


@pytest.mark.parametrize("run", ["full_run", "lora_run"])
def test_gguf_export_reads_back_through_transformers_and_correlates_with_the_hf_export(
    request, run, tmp_path, llama_cpp_dir
):
    run_dir = request.getfixturevalue(run)
    result = _export(run_dir, tmp_path, scale=0.5, format="gguf", ollama=True, llama_cpp=str(llama_cpp_dir))
    out = tmp_path / "export"
    assert result.passed, [c.to_dict() for c in result.checks]
    gguf_check = next(c for c in result.checks if c.name.startswith("gguf"))
    assert gguf_check.value >= 0.99 and "answer tokens" in gguf_check.note
    assert (out / "model-f16.gguf").is_file()
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in modelfile and "<|im_end|>" in modelfile
    if run == "lora_run":
        assert (out / "adapter-f16.gguf").is_file()
        assert any("--lora-scaled" in line and line.endswith(" 0.5") for line in result.usage)
    assert "--lora-scaled" in (out / "README.md").read_text() or run == "full_run"


def test_q8_0_gguf_reports_its_correlation_without_gating_it(full_run, tmp_path, llama_cpp_dir):
    result = _export(
        full_run, tmp_path, scale=1.0, format="gguf", quantize="q8_0", llama_cpp=str(llama_cpp_dir)
    )
    check = next(c for c in result.checks if c.name.startswith("gguf"))
    assert "not gated" in check.note
    assert check.threshold is None and check.passed
    assert 0.5 < check.value <= 1.0  # quantised, yet close to the hf export


def test_gguf_export_without_a_converter_fails_before_loading_anything(full_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCUSTOM_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    result = CliRunner().invoke(
        app, ["export", "--model", str(full_run), "--out", str(tmp_path / "e"), "--format", "gguf"]
    )
    assert result.exit_code == 2
    assert "--fetch-llama-cpp" in result.output
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_llama_cpp_server_serves_the_exported_gguf(full_run, tmp_path, llama_cpp_dir):
    from tests.llama_server import chat, serving

    _export(full_run, tmp_path, scale=1.0, format="gguf", llama_cpp=str(llama_cpp_dir))
    with serving(tmp_path / "export" / "model-f16.gguf", tmp_path / "server.log") as client:
        message = chat(client, "How do I boil pasta?", max_tokens=8)
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str)  # the tiny random model says something; it is served
