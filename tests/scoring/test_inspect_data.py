"""`inspect` on a dataset with a planted swapped pair: the packaged model, told each pole, reads the
swap; the text checks and the audit are computed on the dataset as it is, and nothing is written."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from autocustom.cli import app


def test_inspect_reads_a_swapped_pair_and_writes_nothing(small_dataset, smollm2_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    lines = (data / "test.jsonl").read_text().splitlines()
    swapped = json.loads(lines[0])
    swapped["answers"] = {"formal": swapped["answers"]["casual"], "casual": swapped["answers"]["formal"]}
    (data / "test.jsonl").write_text("\n".join([json.dumps(swapped), *lines[1:]]) + "\n")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    result = CliRunner().invoke(app, ["inspect", str(data), "--judge-model", str(smollm2_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert swapped["id"] in report["lean_check"]["leaning_wrong"]
    assert (
        report["lean_check"]["n"] == 18
        and report["lean_check"]["low"] <= report["lean_check"]["share"] <= report["lean_check"]["high"]
    )
    assert report["pair_check"]["same_content"]["n"] == 18 and report["audit"]["passed"]
    assert report["warning"] is not None  # a hand-made dataset: no audit when it was made
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before

    words = CliRunner().invoke(app, ["inspect", str(data), "--no-lean"])
    assert words.exit_code == 0 and "leakage audit: passed" in words.output and "pair check:" in words.output
