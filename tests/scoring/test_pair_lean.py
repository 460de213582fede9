"""The lean check with the packaged model as judge: `import --lean-judge` drops a planted swapped pair
(its formal answer is the casual one) as leaning the wrong way, records the share in the manifest and
says it; the other pairs stay."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.data.io import load_dataset_dir, read_dropped
from tests.sample_dataset import TOPICS, casual, formal


def test_import_with_a_lean_judge_drops_a_swapped_pair(smollm2_dir, tmp_path):
    rows = [
        {"question": f"How do I {task}?", "formal": formal(task), "casual": casual(task), "topic": name}
        for name, tasks in TOPICS.values()
        for task in tasks
    ]
    swapped = rows[5]
    swapped["formal"], swapped["casual"] = swapped["casual"], swapped["formal"]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "data"

    args = ["import", str(source), "--axis", "formal:casual", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--lean-judge", str(smollm2_dir)])
    assert result.exit_code == 0, result.output
    assert "lean check" in result.output and "1 pair(s) leaning the wrong way dropped" in result.output

    wrong = [d for d in read_dropped(out / "dropped.jsonl") if d.reason == "wrong-lean"]
    assert [d.text for d in wrong] == [swapped["question"]]
    dataset = load_dataset_dir(out)
    figure = dataset.manifest.counts["lean_check"]
    assert figure["n"] == len(rows) and figure["k"] == len(rows) - 1 and figure["readable"]
    assert dataset.manifest.settings["lean_judge"] == str(smollm2_dir)
    kept = {p.question for split in dataset.splits.values() for p in split}
    assert swapped["question"] not in kept and len(kept) == len(rows) - 1
