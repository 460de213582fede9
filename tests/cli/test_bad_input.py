"""A corpus of bad input across the commands: each exits 2 with one line (no traceback) and writes nothing.

The workspace holds the files a user might pass by mistake (a CSV with an unterminated quote, a Shift-JIS
or BOM-less UTF-16 table, garbage Parquet, Latin-1 bytes in an axis file, a dataset split or a run record,
a run whose weights were cut short); every case is run against it and the workspace must be
byte-identical afterwards: a refused command leaves no partial output and touches nothing of the user's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocustom.cli import app

CASES = {
    # import
    "import: missing file": (["import", "{ws}/missing.csv", "{axis}", "{out}"], "file not found"),
    "import: unknown format": (["import", "{ws}/pairs.xlsx", "{axis}", "{out}"], "cannot tell the format"),
    "import: unterminated quote": (
        ["import", "{ws}/unterminated.csv", "{axis}", "{out}"],
        "unterminated.csv:2",
    ),
    "import: field over 128 KiB": (["import", "{ws}/huge.csv", "{axis}", "{out}"], "field larger"),
    "import: Shift-JIS": (["import", "{ws}/sjis.csv", "{axis}", "{out}"], "neither UTF-8 nor cp1252"),
    "import: UTF-16 without BOM": (["import", "{ws}/utf16.csv", "{axis}", "{out}"], "NUL bytes"),
    "import: garbage Parquet": (
        ["import", "{ws}/garbage.parquet", "{axis}", "{out}"],
        "not a readable Parquet",
    ),
    "import: truncated Parquet": (
        ["import", "{ws}/cut.parquet", "{axis}", "{out}"],
        "not a readable Parquet",
    ),
    "import: bad JSONL line": (["import", "{ws}/bad.jsonl", "{axis}", "{out}"], "bad.jsonl:2: invalid JSON"),
    "import: JSON not a list": (["import", "{ws}/object.json", "{axis}", "{out}"], "not a list of objects"),
    "import: empty CSV": (["import", "{ws}/empty.csv", "{axis}", "{out}"], "is empty"),
    "import: extra cells": (["import", "{ws}/extra.csv", "{axis}", "{out}"], "extra.csv:3: row has 4 cells"),
    "import: --clusters 0": (
        ["import", "{ws}/pairs.csv", "{axis}", "{out}", "--clusters", "0"],
        "--clusters 0",
    ),
    "import: --dedup-threshold 1.5": (
        ["import", "{ws}/pairs.csv", "{axis}", "{out}", "--dedup-threshold", "1.5"],
        "outside (0, 1]",
    ),
    "import: split over 1": (
        ["import", "{ws}/pairs.csv", "{axis}", "{out}", "--split", "0.5,0.5,0.5"],
        "split",
    ),
    "import: one pole": (["import", "{ws}/pairs.csv", "--axis", "formal", "{out}"], "formal"),
    "import: Latin-1 axis file": (
        ["import", "{ws}/pairs.csv", "--axis", "{ws}/latin1.yaml", "{out}"],
        "latin1.yaml: is not UTF-8",
    ),
    "import: --out is a file": (["import", "{ws}/pairs.csv", "{axis}", "--out", "{ws}/afile"], "not empty"),
    "import: --out not empty": (["import", "{ws}/pairs.csv", "{axis}", "--out", "{ws}/mine"], "not empty"),
    "import: --pole-col no pole": (
        ["import", "{ws}/pairs.csv", "{axis}", "{out}", "--pole-col", "neutral=formal"],
        "neutral",
    ),
    "import: markup in a path": (
        ["import", "{ws}/[bold]x[/bold].csv", "{axis}", "{out}"],
        "[bold]x[/bold].csv",
    ),
    # export-data
    "export-data: missing dataset": (
        ["export-data", "--data", "{ws}/nodata", "--toward", "formal", "{out}"],
        "nodata",
    ),
    "export-data: not a pole": (["export-data", "{data}", "--toward", "neutral", "{out}"], "neutral"),
    "export-data: unknown format": (
        ["export-data", "{data}", "--toward", "formal", "--format", "magic", "{out}"],
        "unknown export format",
    ),
    "export-data: --out under a file": (
        ["export-data", "{data}", "--toward", "formal", "--out", "{ws}/afile/sub"],
        "afile",
    ),
    "export-data: --out not empty": (
        ["export-data", "{data}", "--toward", "formal", "--out", "{ws}/mine"],
        "not empty",
    ),
    "export-data: Latin-1 split": (
        ["export-data", "--data", "{ws}/latin1-data", "--toward", "formal", "{out}"],
        "is not UTF-8",
    ),
    # dial
    "dial: nan scale": (["dial", "{run}", "{data}", "--scales", "0,nan", "{out}"], "not a finite number"),
    "dial: descending scales": (["dial", "{run}", "{data}", "--scales", "1,0", "{out}"], "not ascending"),
    "dial: negative scale": (["dial", "{run}", "{data}", "--scales", "-1,1", "{out}"], "negative"),
    "dial: not a run": (["dial", "--model", "{ws}/mine", "{data}", "{out}"], "mine"),
    "dial: truncated weights": (["dial", "--model", "{ws}/cut-run", "{data}", "--scales", "1"], "cut-run"),
    "dial: --out is a file": (["dial", "{run}", "{data}", "--out", "{ws}/afile"], "is a file"),
    "dial: missing dataset": (["dial", "{run}", "--data", "{ws}/nodata", "{out}"], "nodata"),
    "dial: not a pole": (["dial", "{run}", "{data}", "--toward", "neutral", "{out}"], "neutral"),
    # export
    "export: nan scale": (["export", "{run}", "--scale", "nan", "{out}"], "not a finite number"),
    "export: negative scale": (["export", "{run}", "--scale", "-1", "{out}"], "negative"),
    "export: not a run": (["export", "--model", "{ws}/mine", "{out}"], "mine"),
    "export: --out not empty": (["export", "{run}", "--out", "{ws}/mine"], "not empty"),
    # steer
    "steer: zero coefficient": (
        ["steer", "{data}", "{to}", "{tiny}", "--coefficients", "0,1", "{out}"],
        "non-zero",
    ),
    "steer: nan coefficient": (
        ["steer", "{data}", "{to}", "{tiny}", "--coefficients", "nan", "{out}"],
        "finite",
    ),
    "steer: --max-drift 0": (
        ["steer", "{data}", "{to}", "{tiny}", "--max-drift", "0", "{out}"],
        "--max-drift",
    ),
    "steer: --out is a file": (["steer", "{data}", "{to}", "{tiny}", "--out", "{ws}/afile"], "is a file"),
    # compare
    "compare: unknown method": (
        ["compare", "{data}", "{to}", "{tiny}", "--methods", "magic", "{out}"],
        "magic",
    ),
    "compare: --max-steps 0": (
        ["compare", "{data}", "{to}", "{tiny}", "--max-steps", "0", "{out}"],
        "--max-steps",
    ),
    "compare: --eval-steps 0": (
        ["compare", "{data}", "{to}", "{tiny}", "--eval-steps", "0", "{out}"],
        "--eval-steps",
    ),
    "compare: --bootstrap -1": (
        ["compare", "{data}", "{to}", "{tiny}", "--bootstrap", "-1", "{out}"],
        "--bootstrap",
    ),
    "compare: --mmlu-questions 0": (
        ["compare", "{data}", "{to}", "{tiny}", "--mmlu-questions", "0", "{out}"],
        "--mmlu-questions",
    ),
    "compare: --out is a file": (["compare", "{data}", "{to}", "{tiny}", "--out", "{ws}/afile"], "is a file"),
    "compare: missing dataset": (["compare", "--data", "{ws}/nodata", "{to}", "{tiny}", "{out}"], "nodata"),
    # run
    "run: --out of other files": (
        ["run", "{axis}", "{to}", "{tiny}", "--out", "{ws}/mine"],
        "not a run directory",
    ),
    "run: --max-steps 0": (["run", "{axis}", "{to}", "{tiny}", "--max-steps", "0", "{out}"], "--max-steps"),
    "run: split over 1": (["run", "{axis}", "{to}", "{tiny}", "--split", "1,1,1", "{out}"], "split"),
    "run: not a pole": (["run", "{axis}", "--toward", "neutral", "{tiny}", "{out}"], "neutral"),
    "run: --out is a file": (["run", "{axis}", "{to}", "{tiny}", "--out", "{ws}/afile"], "is a file"),
    # shift-score
    "shift-score: --out a directory": (
        ["shift-score", "{tiny}", "{data}", "--out", "{ws}/mine"],
        "is a directory",
    ),
    "shift-score: --out under a file": (
        ["shift-score", "{tiny}", "{data}", "--out", "{ws}/afile/s.json"],
        "afile",
    ),
    "shift-score: Latin-1 run record": (
        ["shift-score", "--model", "{ws}/latin1-run", "{data}"],
        "is not UTF-8",
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_dataset, full_run) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws = tmp_path_factory.mktemp("workspace")
    header = "question,formal,casual\n"
    (ws / "pairs.csv").write_text(header + "".join(f"q{i}?,Dear sir {i}.,hey {i}\n" for i in range(12)))
    (ws / "pairs.xlsx").write_bytes(b"PK\x03\x04")
    (ws / "unterminated.csv").write_text(header + '"How do I,Dear sir.,hey\nq2?,Dear sir.,hey\n')
    (ws / "huge.csv").write_text(header + f"q?,{'x' * 200_000},hey\n")
    (ws / "sjis.csv").write_bytes((header + "質問、です?,はい。,うん\n").encode("shift_jis"))
    (ws / "utf16.csv").write_bytes((header + "q?,Dear sir.,hey\n").encode("utf-16-le"))
    (ws / "garbage.parquet").write_bytes(bytes(range(256)) * 4)
    pq.write_table(pa.table({"question": ["q?"] * 50, "formal": ["Dear sir."] * 50}), ws / "whole.parquet")
    whole = (ws / "whole.parquet").read_bytes()
    (ws / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    (ws / "bad.jsonl").write_text('{"question": "q?", "formal": "a", "casual": "b"}\n{"question": \n')
    (ws / "object.json").write_text('{"question": "q?"}')
    (ws / "empty.csv").write_text("")
    (ws / "extra.csv").write_text(header + "q1?,a,b\nq2?,a,b,c\n")
    (ws / "[b]x[").mkdir()  # the path "[b]x[/b].csv": rich markup, were it read as markup
    (ws / "[b]x[" / "b].csv").write_text("")
    (ws / "latin1.yaml").write_bytes("poles:\n  - name: café\n  - name: bar\n".encode("latin-1"))
    (ws / "afile").write_text("a file, not a directory")
    (ws / "mine").mkdir()
    (ws / "mine" / "thesis.tex").write_text("chapter 1")
    shutil.copytree(small_dataset, ws / "latin1-data")
    with (ws / "latin1-data" / "test.jsonl").open("ab") as handle:
        handle.write('{"question": "café"}\n'.encode("latin-1"))
    (ws / "latin1-run" / "model").mkdir(parents=True)
    (ws / "latin1-run" / "run_config.json").write_bytes('{"model": "café"}'.encode("latin-1"))
    shutil.copytree(full_run, ws / "cut-run")
    for dial in (ws / "cut-run").glob("dial"):
        shutil.rmtree(dial)
    weights = ws / "cut-run" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return ws


def _tree(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case, workspace, small_dataset, full_run, tiny_model_dir
):
    argv, expected = CASES[case]
    out = workspace / "out"
    fields = {
        "ws": str(workspace),
        "data": ["--data", str(small_dataset)],
        "run": ["--model", str(full_run)],
        "tiny": ["--model" if argv[0] != "compare" else "--models", str(tiny_model_dir)],
        "axis": ["--axis", "formal:casual"],
        "to": ["--toward", "formal"],
        "out": ["--out", str(out)],
    }
    args: list[str] = []
    for arg in argv:
        key = arg.strip("{}")
        if arg.startswith("{") and arg.endswith("}") and isinstance(fields.get(key), list):
            args.extend(fields[key])
        else:
            args.append(arg.replace("{ws}", str(workspace)))
    run_before, workspace_before = _tree(full_run), _tree(workspace)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0], lines[0]
    assert not out.exists()
    assert _tree(workspace) == workspace_before and _tree(full_run) == run_before
