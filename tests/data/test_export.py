"""export-data and load_dataset: the dataset as a DatasetDict, exported in TRL's format that TRL trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.data.export import load_dataset
from autocustom.data.io import load_dataset_dir
from tests.sample_dataset import write_small_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("export-data"))


def export(*args: str):
    return CliRunner().invoke(app, ["export-data", *args])


def test_load_dataset_is_a_datasetdict_of_the_pairs(data):
    loaded = load_dataset(data)
    original = load_dataset_dir(data)
    assert set(loaded) == {s for s, pairs in original.splits.items() if pairs}
    for split, pairs in original.splits.items():
        assert loaded[split]["id"] == [p.id for p in pairs]
        assert loaded[split]["answers"] == [p.answers for p in pairs]


def test_trl_export_keeps_answers_byte_exact_and_both_copies_agree(data, tmp_path):
    import datasets

    out = tmp_path / "trl"
    result = export("--data", str(data), "--toward", "casual", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    original = load_dataset_dir(data)
    on_disk = datasets.load_from_disk(report["datasets_dir"])
    for split, pairs in original.splits.items():
        lines = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert on_disk[split].to_list() == lines
        assert [r["chosen"] for r in lines] == [
            [{"role": "assistant", "content": p.answers["casual"]}] for p in pairs
        ]
        assert [r["rejected"][0]["content"] for r in lines] == [p.answers["formal"] for p in pairs]
        assert [r["prompt"] for r in lines] == [[{"role": "user", "content": p.question}] for p in pairs]
        assert [(r["id"], r["subarea"]) for r in lines] == [(p.id, p.subarea) for p in pairs]
        assert report["rows"][split] == len(pairs)
    plain = export("--data", str(data), "--toward", "casual", "--out", str(tmp_path / "plain"), "--plain")
    assert plain.exit_code == 0, plain.output
    first = json.loads((tmp_path / "plain" / "train.jsonl").read_text().splitlines()[0])
    assert first["chosen"] == original.splits["train"][0].answers["casual"]


def test_trl_dpo_trainer_trains_on_the_export(data, tmp_path, tiny_model_dir):
    """TRL's own DPOTrainer reads the export as it is and takes an optimizer step on it."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "trl"
    assert export("--data", str(data), "--toward", "formal", "--out", str(out)).exit_code == 0
    train_split = datasets.load_from_disk(str(out / "hf"))["train"].remove_columns(["id", "subarea"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, bf16=False,
        report_to="none", use_cpu=True, save_strategy="no", learning_rate=1e-3,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train_split,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bad_input_is_one_line_exit_2_and_writes_nothing(data, tmp_path):
    cases = [
        (["--toward", "sarcastic", "--out", str(tmp_path / "a")], "not a pole", tmp_path / "a"),
        (["--toward", "formal", "--out", str(tmp_path / "b"), "--format", "axolotl"], "unknown export format", tmp_path / "b"),
    ]  # fmt: skip
    for args, message, out in cases:
        result = export("--data", str(data), *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and not out.exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = export("--data", str(data), "--toward", "formal", "--out", str(taken))
    assert result.exit_code == 2 and "not empty" in result.output
    assert (taken / "keep.txt").read_text() == "mine"
    missing = export("--data", str(tmp_path / "nowhere"), "--toward", "formal", "--out", str(tmp_path / "c"))
    assert missing.exit_code == 2 and "not an autocustom dataset" in missing.output


def test_push_to_hub_offline_fails_with_one_line_and_keeps_the_export(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pushed"
    result = export(
        "--data", str(data), "--toward", "formal", "--out", str(out), "--push-to-hub", "me/formal"
    )
    assert result.exit_code == 2, result.output
    assert "could not push to the Hugging Face Hub repo me/formal" in result.output
    assert (out / "hf").is_dir() and (out / "train.jsonl").is_file()
