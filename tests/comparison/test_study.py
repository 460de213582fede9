"""compare on a tiny dataset and the tiny random model: every method and condition, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.comparison.methods import METHODS, TRAINED_METHODS
from autocustom.comparison.study import CompareConfig, compare
from autocustom.errors import OutputExistsError, UsageError
from autocustom.report import build_report, compare_markdown
from tests.images import PNG_SIZE, png_size
from tests.sample_dataset import write_small_dataset

FAST = {"max_steps": 2, "eval_steps": 2, "mmlu_questions": 4, "drift_texts": 2, "bootstrap": 50}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("compare-data"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset, tiny_model_dir):
    out = tmp_path_factory.mktemp("compare") / "run"
    config = CompareConfig(
        data=str(dataset),
        toward="formal",
        out=str(out),
        models=[str(tiny_model_dir)],
        padding=[8, 16],
        **FAST,
    )
    return config, compare(config)


def test_every_method_and_condition_has_a_row(finished):
    _, result = finished
    n = len(METHODS)
    assert len(result.differences) == n * (n - 1) // 2  # every pair of methods, the base included
    cells = {(row.method, row.condition) for row in result.rows}
    conditions = ["plain", "padding-8", "padding-16", "adversarial"]
    assert cells == {(m, c) for m in METHODS for c in conditions}
    for row in result.rows:
        assert row.metrics["lean"].n == result.n_pairs
        assert -1 <= row.metrics["lean"].value <= 1
        if row.method == "base":
            assert row.metrics["bias_shift"] is None
        else:
            assert row.metrics["bias_shift"] is not None
    trained_plain = [r for r in result.rows if r.method in TRAINED_METHODS and r.condition == "plain"]
    assert {r.method for r in trained_plain} == {"contrastive", "dpo", "simpo", "online-dpo", "distill"}
    assert all(
        r.metrics["drift"] is not None and r.metrics["mmlu_delta_points"] is not None for r in trained_plain
    )


def test_stress_changes_the_prompt_and_so_the_margins(finished):
    _, result = finished
    base = {r.condition: r.margins for r in result.rows if r.method == "base"}
    assert base["plain"] != base["padding-16"]
    assert base["plain"] != base["adversarial"]


def test_trained_rows_differ_from_the_base(finished):
    _, result = finished
    plain = {r.method: r for r in result.rows if r.condition == "plain"}
    for method in ("contrastive", "dpo", "simpo"):
        moved = max(abs(a - b) for a, b in zip(plain[method].margins, plain["base"].margins, strict=True))
        assert moved > 1e-4, method  # training changed what the model finds likely
        assert plain[method].metrics["bias_shift"].value != 0.0
        assert plain[method].metrics["drift"].value > 0.0


def test_outputs_are_written_and_the_table_comes_from_them(finished):
    config, result = finished
    written = json.loads((Path(config.out) / "compare.json").read_text())
    assert written["schema"] == "autocustom.compare/3"
    assert written["plan"]["pair_ids"] == [
        row["id"] for row in map(json.loads, (Path(config.data) / "test.jsonl").read_text().splitlines())
    ]
    assert len(written["rows"]) == len(result.rows)
    table = (Path(config.out) / "compare.md").read_text()
    rows_table, differences_table = table.split("Paired differences")
    assert rows_table.count("\n| ") == len(result.rows) + 1  # header + one line per row
    assert differences_table.count("\n| ") == len(result.differences) + 1


def test_report_draws_lean_and_bias_shift_against_padding(finished):
    config, _ = finished
    report = build_report(config.out)
    assert sorted(p.name for p in report.plots) == ["bias_shift_vs_padding.png", "lean_vs_padding.png"]
    for plot in report.plots:
        assert png_size(plot) == PNG_SIZE
    text = (Path(config.out) / "report.md").read_text()
    assert "plots/bias_shift_vs_padding.png" in text and "| contrastive | padding-16 |" in text


def test_rerun_resumes_without_retraining_or_rescoring(finished, monkeypatch):
    config, result = finished
    import autocustom.scoring.logprobs as logprobs
    import autocustom.training.pair_trainer as pair_trainer

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished comparison must not train or score again")

    monkeypatch.setattr(pair_trainer, "PairTrainer", forbidden)
    monkeypatch.setattr(logprobs, "pair_margins", forbidden)
    again = compare(config)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.rows]


def test_another_axis_in_the_same_directory_is_refused(finished, tmp_path):
    config, _ = finished
    other = write_small_dataset(tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["axis"] = {"pole_a": "optimistic", "pole_b": "pessimistic"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    for name in ("train", "validation", "test"):
        lines = [json.loads(x) for x in (other / f"{name}.jsonl").read_text().splitlines()]
        for line in lines:
            line["answers"] = {
                "optimistic": line["answers"]["formal"],
                "pessimistic": line["answers"]["casual"],
            }
        (other / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(OutputExistsError, match=r"holds a compare run made with other settings .*--data"):
        compare(CompareConfig(data=str(other), toward="optimistic", out=config.out, models=config.models))


def test_unknown_method_lists_the_valid_ones(dataset, tmp_path):
    with pytest.raises(UsageError, match="use any of: base, system-prompt"):
        compare(CompareConfig(data=str(dataset), toward="formal", out=str(tmp_path / "x"), methods=["magic"]))
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--data",
            str(dataset),
            "--toward",
            "formal",
            "--out",
            str(tmp_path / "y"),
            "--methods",
            "base,magic",
        ],
    )
    assert result.exit_code == 2
    assert "unknown method(s): magic" in result.output
    assert "Traceback" not in result.output


def _longer(messages) -> str:
    """A judge that picks the longer reply: what LLM judges lean to, and what LC discounts."""
    text = messages[-1]["content"]
    a = text.split("Reply A:\n", 1)[1].split("\n\nReply B:", 1)[0]
    b = text.split("Reply B:\n", 1)[1].split("\n\nWhich reply", 1)[0]
    return "A" if len(a) >= len(b) else "B"


def test_the_judge_columns_and_notes(dataset, tiny_model_dir, tmp_path, monkeypatch):
    from tests.fake_openai_server import FakeOpenAIServer

    monkeypatch.setenv("AUTOCUSTOM_CACHE", str(tmp_path / "cache"))
    with FakeOpenAIServer(reply=_longer) as server:
        config = CompareConfig(
            data=str(dataset), toward="formal", out=str(tmp_path / "judged"), models=[str(tiny_model_dir)],
            methods=["base", "system-prompt"], padding=[], adversarial=False, judge="openai",
            judge_model="fake-model", base_url=server.base_url, gen_tokens=6, **FAST,
        )  # fmt: skip
        result = compare(config)
        assert 0 < server.chat_count <= 2 * result.n_pairs  # one method, both orders (repeats asked once)
    prompted = next(r for r in result.rows if r.method == "system-prompt")
    for name in ("win_rate", "lc_win_rate", "judge_consistency", "reply_tokens"):
        assert prompted.metrics[name].n == result.n_pairs, name
    base = next(r for r in result.rows if r.method == "base")
    assert base.metrics["win_rate"] is None and base.metrics["reply_tokens"] is not None
    table = (tmp_path / "judged" / "compare.md").read_text()
    assert "LC win rate" in table and "length-controlled" in table
    assert "judge (openai:fake-model)" in table
    assert (
        json.loads((tmp_path / "judged" / "compare.json").read_text())["plan"]["judge"] == "openai:fake-model"
    )


def test_the_contrast_judge_columns_and_notes(dataset, tiny_model_dir, tmp_path):
    config = CompareConfig(
        data=str(dataset), toward="formal", out=str(tmp_path / "contrast"), models=[str(tiny_model_dir)],
        methods=["base", "system-prompt"], padding=[], adversarial=False, judge="contrast", gen_tokens=4, **FAST,
    )  # fmt: skip
    result = compare(config)
    base, prompted = (next(r for r in result.rows if r.method == m) for m in ("base", "system-prompt"))
    for name in (
        "reply_share",
        "reply_share_gain",
        "reply_shift",
        "fluency_vs_prompted",
        "repetition",
        "judge_accuracy",
    ):
        assert prompted.metrics[name].n == result.n_pairs, name
    assert base.metrics["reply_shift"].value == 0 and "win_rate" not in base.metrics
    table = (tmp_path / "contrast" / "compare.md").read_text()
    assert "replies toward pole" in table and "fluency vs prompted" in table
    assert sum("the contrast judge (contrast:base) put" in note for note in result.notes) == 1
    assert any("fluency budget (0.1 nats/token" in note for note in result.notes)
    (difference,) = result.differences  # the one method against the base
    assert (difference["a"], difference["b"]) == ("system-prompt", "base")
    assert difference["reply_share"]["value"] == pytest.approx(prompted.metrics["reply_share_gain"].value)
    assert difference["bias_shift"]["value"] == pytest.approx(prompted.metrics["bias_shift"].value)


def test_methods_are_paired_item_by_item():
    from autocustom.comparison.differences import method_differences
    from autocustom.comparison.study import Row

    def row(method: str, margins: list[float], replies: list[float] | None, condition: str = "plain") -> Row:
        return Row("m", method, condition, 0, {}, margins, replies)

    rows = [
        row("base", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        row("contrastive", [0.1, 0.2, 0.3], [0.5, -0.5, -0.5]),
        row("dpo", [0.3, 0.5, 0.4], [0.2, -0.1, 0.6]),
        row("dpo", [9.0, 9.0, 9.0], None, condition="adversarial"),  # only the plain prompt is paired
        row("steer", [0.1, 0.2, 0.3], None),
    ]
    differences = method_differences(rows, n_boot=200, seed=0)
    assert [(d["a"], d["b"]) for d in differences] == [  # later minus earlier, the base first
        ("contrastive", "base"), ("dpo", "base"), ("dpo", "contrastive"),
        ("steer", "base"), ("steer", "contrastive"), ("steer", "dpo"),
    ]  # fmt: skip
    against_base, _, difference, *with_steer = differences
    assert against_base["bias_shift"]["value"] == pytest.approx(0.2)  # contrastive's BiasShift
    assert against_base["reply_share"]["value"] == pytest.approx(1 / 3)  # 1 of 3 replies moved across
    assert difference["bias_shift"]["value"] == pytest.approx(0.2) and difference["bias_shift"]["n"] == 3
    assert difference["reply_shift"]["value"] == pytest.approx(0.4)  # mean of -0.3, +0.4, +1.1
    assert difference["reply_share"]["value"] == pytest.approx(1 / 3)  # read as formal: 1,0,1 against 1,0,0
    assert [(d["b"], d["reply_shift"], d["reply_share"]) for d in with_steer] == [
        ("base", None, None),  # the steering vector's replies were not judged
        ("contrastive", None, None),
        ("dpo", None, None),
    ]
    table = compare_markdown({"axis": {"pole_a": "formal", "pole_b": "casual"}, "toward": "formal",
                              "n_pairs": 3, "rows": [], "differences": [difference]})  # fmt: skip
    assert "| dpo - contrastive | +0.200 [" in table and "] * |" in table
    assert "| reply shift | reply share |" in table


def test_an_openai_judge_without_a_model_is_refused_before_any_work(dataset, tmp_path):
    config = CompareConfig(data=str(dataset), toward="formal", out=str(tmp_path / "out"), judge="openai")
    with pytest.raises(UsageError, match="--judge-model"):
        compare(config)
    assert not (tmp_path / "out").exists()
