"""`autocustom shift-score` end to end on tiny models: exit codes, gates, and the pinned JSON schema."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from autocustom.cli import score_cmd
from autocustom.data.io import load_dataset_dir
from tests.scoring import write_dataset

FAST = ["--mmlu-questions", "2", "--drift-texts", "2", "--bootstrap", "50", "--device", "cpu"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    score_cmd.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keeps `shift-score` a subcommand
    return app


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory, tiny_model_dir, data):
    """The tiny model after a few plain NLL steps on the casual answers: a handcrafted shift."""
    from autocustom.llm.chat import PLAIN, encode_prompt_answer, render_prompt

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(4):
        for pair in load_dataset_dir(data).split("train"):
            enc = encode_prompt_answer(
                tokenizer,
                render_prompt(tokenizer, PLAIN.conversation(pair.question)),
                pair.answers["casual"],
                128,
            )
            ids = torch.tensor([enc.input_ids])
            labels = ids.clone()
            labels[0, : enc.prompt_length] = -100
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    out = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(app, *args):
    result = CliRunner().invoke(app, ["shift-score", *map(str, args)])
    return result


def test_base_scored_against_itself_has_zero_shift_and_pinned_schema(app, tiny_model_dir, data, tmp_path):
    out = tmp_path / "report.json"
    result = run(
        app,
        "--model",
        tiny_model_dir,
        "--base",
        tiny_model_dir,
        "--data",
        data,
        "--toward",
        "formal",
        "--json",
        "--out",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads(out.read_text())
    assert set(report) == {
        "schema",
        "model",
        "base",
        "data",
        "split",
        "axis",
        "toward",
        "opposite",
        "condition",
        "device",
        "settings",
        "metrics",
        "subareas",
        "gates",
        "passed",
        "notes",
        "plan",
    }
    assert report["schema"] == "autocustom.shift-score/3"
    assert set(report["metrics"]) == {
        "bias_shift",
        "lean",
        "base_lean",
        "tail_shift",
        "win_rate",
        "lc_win_rate",
        "judge_consistency",
        "reply_tokens",
        "judge_accuracy",
        "reply_share",
        "base_reply_share",
        "reply_shift",
        "reply_share_gain",
        "fluency",
        "fluency_vs_prompted",
        "fluency_vs_base",
        "repetition",
        "base_repetition",
        "mmlu_accuracy",
        "mmlu_base_accuracy",
        "mmlu_delta_points",
        "drift",
    }
    assert set(report["metrics"]["lean"]) == {"value", "low", "high", "n"}
    assert set(report["settings"]) == {
        "bootstrap",
        "seed",
        "tail",
        "mmlu_questions",
        "mmlu_questions_source",
        "drift_texts",
        "gen_tokens",
        "judge",
        "n_pairs",
    }
    assert set(report["subareas"][0]) == {"subarea", "name", "n", "lean", "bias_shift", "base_lean"}
    assert report["metrics"]["bias_shift"] == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 4}
    assert report["metrics"]["drift"]["value"] == 0.0
    assert report["metrics"]["mmlu_delta_points"]["value"] == 0.0
    assert report["settings"]["mmlu_questions_source"] == "as requested"
    assert [r["subarea"] for r in report["subareas"]] == ["s2", "s3"]


def test_trained_shift_moves_lean_and_gates_decide_exit_code(app, tuned_dir, tiny_model_dir, data):
    args = [
        "--model",
        tuned_dir,
        "--base",
        tiny_model_dir,
        "--data",
        data,
        "--toward",
        "casual",
        "--json",
        *FAST,
    ]
    result = run(app, *args, "--min-shift", "0.05", "--min-lean", "0.5")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["bias_shift"]["value"] > 0.05
    assert metrics["lean"]["value"] > metrics["base_lean"]["value"]
    assert metrics["drift"]["value"] > 0

    failed = run(app, *args, "--min-shift", "100", "--max-drift", "1000")
    assert failed.exit_code == 1
    assert "min-shift" in failed.stderr and "max-drift" not in failed.stderr
    report = json.loads(failed.stdout)
    assert report["passed"] is False
    assert [(g["name"], g["passed"]) for g in report["gates"]] == [("min-shift", False), ("max-drift", True)]


def test_the_local_judge_reads_free_replies_against_the_base(app, tiny_model_dir, data):
    result = run(
        app,
        "--model",
        tiny_model_dir,
        "--base",
        "smollm2-135m",
        "--data",
        data,
        "--toward",
        "formal",
        "--judge",
        "local",
        "--gen-tokens",
        "4",
        "--no-mmlu",
        "--json",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for name in ("win_rate", "lc_win_rate", "judge_consistency"):
        figure = report["metrics"][name]
        assert figure["n"] == 4 and 0 <= figure["value"] <= 1, name
    lengths = report["metrics"]["reply_tokens"]
    assert lengths["n"] == 4 and 0 <= lengths["value"] <= 4  # replies of at most --gen-tokens tokens
    assert report["plan"]["judge"] == "local:smollm2-135m"
    assert any("judge (local:smollm2-135m)" in note for note in report["notes"])  # trusted or not, in words


def test_the_contrast_judge_reads_replies_and_its_gates_decide_exit_code(
    app, tuned_dir, tiny_model_dir, data
):
    args = ["--model", tuned_dir, "--base", tiny_model_dir, "--data", data, "--toward", "casual",
            "--judge", "contrast", "--gen-tokens", "4", "--no-mmlu", "--json", *FAST]  # fmt: skip
    result = run(app, *args, "--max-fluency-drop", "100", "--min-reply-share", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics = report["metrics"]
    for name in ("reply_share", "base_reply_share", "repetition", "judge_accuracy"):
        assert metrics[name]["n"] == 4 and 0 <= metrics[name]["value"] <= 1, name
    for name in ("reply_shift", "reply_share_gain", "fluency", "fluency_vs_prompted", "fluency_vs_base"):
        assert (
            metrics[name]["n"] == 4
            and metrics[name]["low"] <= metrics[name]["value"] <= metrics[name]["high"]
        )
    assert metrics["fluency_vs_base"]["value"] != 0  # the tuned model's replies are its own
    assert metrics["win_rate"] is None  # the pairwise judge did not run
    assert report["plan"]["judge"] == "contrast:base"
    assert report["plan"]["judge_pair_ids"] == [f"validation{i}" for i in range(4)]
    assert any(note.startswith("the contrast judge (contrast:base) put") for note in report["notes"])
    assert any(note.startswith("fluency: replies") for note in report["notes"])

    failed = run(app, *args, "--max-fluency-drop", "-100", "--min-reply-share", "1.5")
    assert failed.exit_code == 1
    assert [(g["name"], g["passed"]) for g in json.loads(failed.stdout)["gates"]] == [
        ("max-fluency-drop", False),
        ("min-reply-share", False),
    ]
    assert "gate failed: --max-fluency-drop -100.0: " in failed.stderr  # the drop it compared, not the delta
    assert "(read from fluency_vs_prompted)" in failed.stderr


def test_the_base_against_itself_has_no_reply_shift(app, tiny_model_dir, data):
    result = run(app, "--model", tiny_model_dir, "--base", tiny_model_dir, "--data", data, "--toward", "formal",
                 "--judge", "contrast", "--gen-tokens", "3", "--no-mmlu", "--json", *FAST)  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["reply_shift"]["value"] == 0 and metrics["fluency_vs_base"]["value"] == 0
    assert metrics["reply_share"] == metrics["base_reply_share"] and metrics["reply_share_gain"]["value"] == 0


def test_replies_without_a_base_are_not_judged(app, tiny_model_dir, data):
    result = run(app, "--model", tiny_model_dir, "--data", data, "--toward", "formal", "--judge", "local",
                 "--gen-tokens", "2", "--no-mmlu", "--json", *FAST)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["win_rate"] is None  # no base recorded or given


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny model with MiniLM's (BERT) tokenizer: not comparable with SmolLM2's."""
    from autocustom.assets import embedder_path

    tokenizer = AutoTokenizer.from_pretrained(embedder_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("other")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_bad_inputs_exit_2_with_one_line(app, tiny_model_dir, data, tmp_path, other_tokenizer_model):
    partial = write_dataset(tmp_path / "partial", splits=("train",))
    cases = {
        "does not exist": ["--model", tmp_path / "missing", "--data", data, "--toward", "formal"],
        "no 'test' split": ["--model", tiny_model_dir, "--data", partial, "--toward", "formal"],
        "tokenizes text differently": [
            "--model",
            tiny_model_dir,
            "--base",
            other_tokenizer_model,
            "--data",
            data,
            "--toward",
            "formal",
        ],
        "--max-mmlu-drop cannot": [
            "--model",
            tiny_model_dir,
            "--base",
            tiny_model_dir,
            "--data",
            data,
            "--toward",
            "formal",
            "--no-mmlu",
            "--max-mmlu-drop",
            "1",
        ],
        "--min-shift needs a base": [
            "--model",
            tiny_model_dir,
            "--data",
            data,
            "--toward",
            "formal",
            "--min-shift",
            "0.1",
        ],
        "formal, casual": ["--model", tiny_model_dir, "--data", data],
        "needs a CUDA GPU": [
            "--model", tiny_model_dir, "--data", data, "--toward", "formal", "--device", "cpu", "--load-in-4bit",
        ],
        "unknown --device-map": ["--model", tiny_model_dir, "--data", data, "--toward", "formal", "--device-map", "x"],
        "add --judge contrast": [
            "--model", tiny_model_dir, "--base", tiny_model_dir, "--data", data, "--toward", "formal",
            "--max-fluency-drop", "0.1",
        ],
        "--judge-split validates": [
            "--model", tiny_model_dir, "--data", data, "--toward", "formal", "--judge-split", "test",
        ],
        "the contrast judge has no written answers": [
            "--model", tiny_model_dir, "--base", tiny_model_dir, "--data", partial, "--toward", "formal",
            "--split", "train", "--judge", "contrast",
        ],
    }  # fmt: skip
    for expected, args in cases.items():
        result = run(app, *args, *FAST)
        assert result.exit_code == 2, (expected, result.output)
        assert expected in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], result.stderr
        assert "Traceback" not in result.output


def test_run_directory_supplies_base_and_target(app, tiny_model_dir, data, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run_dir / "model")
    (run_dir / "run_config.json").write_text(json.dumps({"model": str(tiny_model_dir), "toward": "casual"}))
    result = run(app, "--model", run_dir, "--data", data, "--no-mmlu", "--json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["toward"] == "casual" and report["base"] == str(tiny_model_dir)
    assert report["metrics"]["bias_shift"]["value"] == 0.0
