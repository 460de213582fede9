"""`autocustom import` through the CLI: spreadsheets and JSONL in, TRL round trip, clustering, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.data.importing import cluster_count
from autocustom.data.io import load_dataset_dir, read_dropped
from tests.sample_dataset import TOPICS, casual, formal, write_small_dataset


def invoke(*args: str):
    return CliRunner().invoke(app, ["import", *args])


def rows() -> list[dict[str, str]]:
    return [
        {"Question": f"How do I {task}?", "Formal": formal(task), "CASUAL": casual(task), "topic": name}
        for name, tasks in TOPICS.values()
        for task in tasks
    ]


def write_csv(path: Path, records: list[dict[str, str]], encoding: str = "utf-8-sig") -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def pairs_of(data: Path) -> dict[str, tuple[str, dict[str, str]]]:
    dataset = load_dataset_dir(data)
    return {p.id: (p.question, p.answers) for split in dataset.splits.values() for p in split}


def test_csv_with_bom_quotes_and_newlines_keeps_answers_byte_exact(tmp_path):
    records = rows()
    # kept as written (and about the same thing as the casual answer, or the pair check drops it)
    records[0]["Formal"] = '  Indeed, to boil pasta, "salt the water", with commas,\nand a second line.  '
    source = write_csv(tmp_path / "pairs.csv", records)
    out = tmp_path / "data"
    result = invoke(str(source), "--axis", "formal:casual", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["pairs"] == len(records) and report["counts"]["subareas"] == len(TOPICS)
    dataset = load_dataset_dir(out)
    assert {s.name for s in dataset.subareas} == {name for name, _ in TOPICS.values()}
    imported = {p.question: p.answers for split in dataset.splits.values() for p in split}
    for record in records:
        assert imported[record["Question"]] == {"formal": record["Formal"], "casual": record["CASUAL"]}
    assert all(dataset.splits[name] for name in ("train", "validation", "test"))  # held-out subareas
    held_out = {p.subarea for p in dataset.splits["test"]}
    assert not held_out & {p.subarea for p in dataset.splits["train"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "import" and len(manifest["settings"]["source_sha256"]) == 64
    assert manifest["settings"]["columns"] == {
        "question": "Question", "answers": {"formal": "Formal", "casual": "CASUAL"}, "subarea": "topic",
    }  # fmt: skip


def test_trl_export_imports_back_to_the_same_pairs(tmp_path):
    data = write_small_dataset(tmp_path / "original")
    assert (
        CliRunner()
        .invoke(
            app, ["export-data", "--data", str(data), "--toward", "casual", "--out", str(tmp_path / "trl")]
        )
        .exit_code
        == 0
    )
    trl = tmp_path / "trl" / "all.jsonl"
    trl.write_text(
        "".join((tmp_path / "trl" / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    )
    out = tmp_path / "back"
    result = invoke(str(trl), "--axis", "formal:casual", "--chosen-pole", "casual", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert pairs_of(out) == pairs_of(data)  # ids, questions and both answers, byte for byte
    again = invoke(
        str(tmp_path / "trl" / "hf"),
        "--axis",
        "formal:casual",
        "--chosen-pole",
        "casual",
        "--out",
        str(tmp_path / "hf-back"),
    )
    assert again.exit_code == 0, again.output  # the save_to_disk copy reads the same way
    assert pairs_of(tmp_path / "hf-back") == pairs_of(data)


def test_without_a_subarea_column_topics_are_found_by_clustering(tmp_path):
    records = [{k: v for k, v in r.items() if k != "topic"} for r in rows()]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "data"
    result = invoke(str(source), "--axis", "formal:casual", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    dataset = load_dataset_dir(out)
    assert len(dataset.subareas) == cluster_count(len(records)) == 3
    questions = {r["Question"] for r in records}
    assert all(s.name in questions for s in dataset.subareas)  # named by a real, central question
    assert cluster_count(500) == 16 and cluster_count(4) == 3 and cluster_count(10_000) == 30


def test_bad_rows_are_dropped_with_their_line_and_bad_input_exits_2_writing_nothing(tmp_path):
    records = rows()
    records[2]["CASUAL"] = "   "
    records[5]["CASUAL"] = records[5]["Formal"]
    source = write_csv(tmp_path / "pairs.csv", records, encoding="cp1252")
    out = tmp_path / "data"
    assert invoke(str(source), "--axis", "formal:casual", "--out", str(out)).exit_code == 0
    dropped = {d.reason: d.detail for d in read_dropped(out / "dropped.jsonl")}
    assert dropped == {"empty": f"{source}:4", "same-answer": f"{source}:7"}

    cases = [
        ([str(source), "--axis", "formal:sarcastic"], "no 'sarcastic' answer column"),
        (
            [str(source), "--axis", "formal:casual", "--question-col", "Query"],
            "Question, Formal, CASUAL, topic",
        ),
        ([str(source), "--axis", "formal:casual", "--pole-col", "rude=CASUAL"], "'rude' is not a pole"),
        ([str(source), "--axis", "formal:casual", "--pole-col", "casual"], "is not POLE=COLUMN"),
        ([str(source), "--axis", "formal:casual", "--chosen-pole", "casual"], "no chosen column"),
        ([str(tmp_path / "pairs.xlsx"), "--axis", "formal:casual"], "cannot tell the format"),
        ([str(tmp_path / "missing.csv"), "--axis", "formal:casual"], "file not found"),
        ([str(source), "--axis", "formal:casual", "--out", str(out)], "not empty"),
    ]
    for args, message in cases:
        target = [] if "--out" in args else ["--out", str(tmp_path / "never")]
        result = invoke(*args, *target)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "never").exists()
    empty = write_csv(tmp_path / "bad.csv", [{**r, "CASUAL": ""} for r in records])
    result = invoke(str(empty), "--axis", "formal:casual", "--out", str(tmp_path / "never"))
    assert result.exit_code == 2 and "has no usable row" in result.output and f"{empty}:2" in result.output
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".tsv"])
def test_parquet_and_tsv_read_like_csv(tmp_path, suffix):
    import datasets

    records = rows()
    source = tmp_path / f"pairs{suffix}"
    if suffix == ".parquet":
        datasets.Dataset.from_list(records).to_parquet(str(source))
    else:
        with source.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(records)
    out = tmp_path / "data"
    assert invoke(str(source), "--axis", "formal:casual", "--out", str(out)).exit_code == 0
    assert len(pairs_of(out)) == len(records)


def test_train_and_shift_score_run_on_an_import(tmp_path, tiny_model_dir):
    from autocustom.scoring.shift_score import ScoreConfig, shift_score
    from autocustom.training.config import TrainConfig
    from autocustom.training.trainer import train

    source = write_csv(tmp_path / "pairs.csv", rows())
    data = tmp_path / "data"
    assert invoke(str(source), "--axis", "formal:casual", "--out", str(data)).exit_code == 0
    run = tmp_path / "run"
    train(
        TrainConfig(
            data=str(data), toward="formal", out=str(run), model=str(tiny_model_dir), max_steps=1, eval_steps=1,
            batch_size=2, max_length=48, mmlu_questions=2, drift_texts=2, reg_weight=0.0,
        )
    )  # fmt: skip
    report = shift_score(ScoreConfig(model=str(run), data=str(data), mmlu_questions=2, drift_texts=2))
    assert report.metrics["bias_shift"].n == len(load_dataset_dir(data).splits["test"])
