"""layout.run_source: the one reader of what a model reference records of how it was made."""

from __future__ import annotations

import json

from autocustom.layout import ADAPTER_CONFIG, RUN_MODEL, RUN_TRAIN, run_source, write_run_config

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
