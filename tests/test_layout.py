"""layout: the one reader of what a model reference records (`run_source`), and how a command claims its
output directory (`claim_output`): never touching what it did not write, resuming only the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocustom.errors import OutputExistsError
from autocustom.layout import (
    ADAPTER_CONFIG,
    RUN_MODEL,
    RUN_TRAIN,
    SETTINGS,
    claim_output,
    dial_scale_file,
    run_source,
    write_run_config,
)

RECORD = {"model": "smollm2-135m", "toward": "formal", "axis": "formal:casual", "data": "data/formal"}


def _train_dir(path):
    (path / RUN_MODEL).mkdir(parents=True)
    write_run_config(path, RECORD)
    return path


def test_a_train_directory_records_its_base_pole_axis_and_data(tmp_path):
    source = run_source(_train_dir(tmp_path / "runs" / "formal"))
    assert (source.base, source.toward, source.axis, source.data) == (
        "smollm2-135m",
        "formal",
        "formal:casual",
        "data/formal",
    )
    assert source.trained and not source.lora
    assert source.weights == tmp_path / "runs" / "formal" / RUN_MODEL
    assert source.run_dir == tmp_path / "runs" / "formal"


def test_a_run_directory_is_read_through_its_train_folder(tmp_path):
    _train_dir(tmp_path / "demo" / RUN_TRAIN)
    source = run_source(tmp_path / "demo")
    assert source.toward == "formal" and source.weights == tmp_path / "demo" / RUN_TRAIN / RUN_MODEL


def test_a_bare_adapter_records_only_its_base(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    source = run_source(adapter)
    assert source.lora and source.trained
    assert (source.base, source.toward, source.axis, source.run_dir) == ("org/base", None, None, None)


def test_a_plain_model_records_nothing(tmp_path):
    for reference in ("smollm2-135m", str(tmp_path)):
        source = run_source(reference)
        assert not source.trained and (source.base, source.toward) == (None, None)


MARKER = "compare_config.json"
SETTINGS_NOW = {"max_steps": 20, "seed": 0}


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_missing_or_empty_directory_is_claimed_with_its_settings(tmp_path):
    for out in (tmp_path / "new", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert claim_output(out, MARKER, SETTINGS_NOW, command="compare") is False
        assert json.loads((out / MARKER).read_text()) == {SETTINGS: SETTINGS_NOW}


def test_a_folder_of_other_files_is_refused_and_left_byte_identical(tmp_path):
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "thesis.tex").write_text("chapter 1")
    (out / "notes" / "run_config.json").write_text("{not ours")
    before = _files(out)
    for restart in (False, True):
        with pytest.raises(OutputExistsError, match="is not empty and is not a compare directory"):
            claim_output(out, MARKER, SETTINGS_NOW, command="compare", restart=restart)
    assert _files(out) == before


def test_the_same_settings_resume_and_other_settings_are_refused_by_name(tmp_path):
    out = tmp_path / "cmp"
    claim_output(out, MARKER, SETTINGS_NOW, command="compare")
    (out / "rows.json").write_text("[]")
    assert claim_output(out, MARKER, dict(SETTINGS_NOW), command="compare") is True
    with pytest.raises(OutputExistsError, match=r"other settings \(--max-steps 20 -> 30\)") as refused:
        claim_output(out, MARKER, {**SETTINGS_NOW, "max_steps": 30}, command="compare")
    assert "--force-restart" in str(refused.value)
    assert (out / "rows.json").read_text() == "[]"  # refused: nothing touched


def test_force_restart_deletes_only_a_marked_directory_and_starts_over(tmp_path):
    out = tmp_path / "cmp"
    claim_output(out, MARKER, SETTINGS_NOW, command="compare")
    (out / "rows.json").write_text("[]")
    assert claim_output(out, MARKER, {"max_steps": 30}, command="compare", restart=True) is False
    assert _files(out) == {Path(MARKER): json.dumps({SETTINGS: {"max_steps": 30}}, indent=2).encode() + b"\n"}


def test_without_resume_a_marked_directory_is_refused_and_a_file_is_never_a_directory(tmp_path):
    out = tmp_path / "run"
    claim_output(out, "run_config.json", SETTINGS_NOW, command="train")
    with pytest.raises(OutputExistsError, match=r"holds an earlier train run.*--resume"):
        claim_output(out, "run_config.json", SETTINGS_NOW, command="train", resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        claim_output(tmp_path / "file", MARKER, SETTINGS_NOW, command="compare")


def test_close_scales_get_files_of_their_own():
    names = {dial_scale_file("d", s).name for s in (0.1, 0.1 + 1e-9, 0.75, 1.0, 2.0)}
    assert len(names) == 5 and {"0.75.json", "1.json", "2.json"} <= names
