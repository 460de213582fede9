"""train() end to end on the tiny random model: files, best model, early stopping, LoRA, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from autocustom.errors import OutputExistsError
from autocustom.llm.models import load_model
from autocustom.training.config import TrainConfig
from autocustom.training.trainer import train
from tests.sample_dataset import write_small_dataset
from tests.training import SMALL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("data"), per_subarea=3)


def config(data: Path, out: Path, model: Path, **overrides) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), model=str(model), **{**SMALL, **overrides})


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_training_moves_parameters_and_writes_the_run(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    options = {"max_steps": 2, "eval_steps": 1, "reg_weight": 0.5, "reg_batch_size": 1}
    result = train(config(dataset, out, tiny_model_dir, **options))
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.jsonl",
        "model",
        "run_config.json",
        "summary.json",
    ]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["model"] == str(tiny_model_dir)
    assert (run_config["toward"], run_config["axis"], run_config["loss"]) == (
        "formal",
        "formal:casual",
        "contrastive",
    )
    assert run_config["data"] == str(dataset)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"step", "epoch", "train_loss", "bias_shift", "mmlu", "drift", "elapsed"}
    assert set(rows[0]["bias_shift"]) == {"value", "low", "high", "n"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.to_dict()))
    assert summary["best_step"] in (1, 2)
    assert summary["bias_shift"]["n"] == 3 and summary["bias_shift_test"]["n"] == 3
    assert summary["stop_reason"] == "max-steps"
    assert summary["mmlu_before"]["n"] == 4 and summary["pairs_per_second"] > 0

    base = params(load_model(str(tiny_model_dir), device="cpu").model)
    tuned = load_model(str(out), device="cpu")
    changed = [name for name, value in params(tuned.model).items() if not torch.equal(value, base[name])]
    assert len(changed) == len(base)  # full fine-tuning touched every tensor
    best = rows[summary["best_step"] - 1]["bias_shift"]["value"]
    assert summary["bias_shift"]["value"] == pytest.approx(best)
    assert best == max(r["bias_shift"]["value"] for r in rows)

    again = train(config(dataset, out, tiny_model_dir, **options, resume=True))
    assert again.to_dict() == result.to_dict()  # finished: not retrained
    with pytest.raises(OutputExistsError):
        train(config(dataset, out, tiny_model_dir, **options))
    # a finished run is not passed off as one made with other options
    with pytest.raises(OutputExistsError, match=r"other settings \(--max-steps 2 -> 3\)"):
        train(config(dataset, out, tiny_model_dir, **{**options, "max_steps": 3}, resume=True))
    restarted = train(config(dataset, out, tiny_model_dir, **{**options, "max_steps": 3}, force_restart=True))
    assert restarted.steps == 3


def test_patience_stops_training_and_is_recorded(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    # lr so small that float32 weights cannot change: BiasShift never improves after the first evaluation
    result = train(config(dataset, out, tiny_model_dir, max_steps=6, eval_steps=1, patience=2, lr=1e-30))
    assert result.stop_reason == "patience"
    assert result.steps == 3 and result.best_step == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_drift_guardrail_stops_at_once(tmp_path, dataset, tiny_model_dir):
    result = train(
        config(dataset, tmp_path / "run", tiny_model_dir, max_steps=4, eval_steps=1, max_drift=1e-12)
    )
    assert result.stop_reason == "max-drift" and result.steps == 1


def test_lora_saves_an_adapter_that_load_model_reads(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    result = train(config(dataset, out, tiny_model_dir, max_steps=1, eval_steps=1, lora=True, lora_rank=4))
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    loaded = load_model(str(out), device="cpu")
    assert type(loaded.model).__name__.startswith("Peft")
    lora_b = [p for name, p in loaded.model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapter learned (B starts at zero)
    assert result.best_step == 1


class Killed(Exception):
    """Stands in for SIGKILL: raised from the progress callback after a checkpoint was written."""


def test_resume_continues_to_the_same_result(tmp_path, dataset, tiny_model_dir):
    base = config(dataset, tmp_path / "resumed", tiny_model_dir, max_steps=6, eval_steps=3, reg_weight=0.5)
    base = replace(base, reg_batch_size=1, save_steps=2)  # by default a run this short writes none

    def kill_after_step_5(event):
        if event.stage == "train" and event.done == 5:
            raise Killed

    with pytest.raises(Killed):
        train(base, progress=kill_after_step_5)
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert (checkpoints / "checkpoint-4").is_dir()  # between evaluations: step 4's loss is carried over
    assert not (tmp_path / "resumed" / "summary.json").exists()
    (checkpoints / "checkpoint-5").mkdir()  # a checkpoint the kill cut mid-write is passed over
    (checkpoints / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 5, "log_hi')
    resumed = train(replace(base, resume=True))
    straight = train(replace(base, out=str(tmp_path / "straight")))

    assert resumed.steps == straight.steps == 6
    assert resumed.best_step == straight.best_step
    assert resumed.bias_shift.value == pytest.approx(straight.bias_shift.value, abs=1e-5)
    a = params(load_model(str(tmp_path / "resumed"), device="cpu").model)
    b = params(load_model(str(tmp_path / "straight"), device="cpu").model)
    assert all(torch.allclose(a[name], b[name], atol=1e-5) for name in a)
    rows = [json.loads(r) for r in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    unbroken = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in unbroken], abs=1e-5)


def test_selection_line_says_how_far_the_kept_checkpoint_can_be_trusted():
    from autocustom.scoring.stats import Estimate
    from autocustom.training.result import selection_line

    assert "not better than the base" in selection_line(Estimate(-0.02, -0.07, 0.03, 6), "formal")
    unsure = selection_line(Estimate(0.05, -0.01, 0.1, 6), "formal")
    assert "does not exclude 0" in unsure and "6 validation pairs are too few" in unsure
    assert "beat the base" in selection_line(Estimate(0.2, 0.1, 0.3, 40), "formal")
    assert "guardrails" in selection_line(None, "formal")


def _row(step: int, shift: float, fluency_drop: float | None) -> dict:
    share, loops = (
        {"value": 0.5, "low": 0.2, "high": 0.8, "n": 6},
        {"value": 0.0, "low": 0.0, "high": 0.0, "n": 6},
    )
    fluency = None if fluency_drop is None else {"value": -fluency_drop, "low": -fluency_drop - 0.1,
                                                 "high": -fluency_drop + 0.05, "n": 6}  # fmt: skip
    return {"step": step, "bias_shift": {"value": shift}, "mmlu_drop_points": None, "drift": None,
            "fluency_drop": fluency_drop, "reply_share": share, "fluency_vs_prompted": fluency,
            "repetition": loops}  # fmt: skip


def test_the_fluency_budget_keeps_the_best_checkpoint_within_it():
    from autocustom.training.callbacks import EvalCallback

    history = [_row(1, 0.1, 0.05), _row(2, 0.3, 0.2), _row(3, 0.2, 0.08), _row(4, 0.4, None)]
    budgeted, free = EvalCallback(max_fluency_drop=0.1), EvalCallback()
    for row in history:
        budgeted.decide(row, None, row["step"])
        free.decide(row, None, row["step"])
    assert free.best_step == 4 and free.budget_note() == ""
    assert budgeted.best_step == 3 and budgeted.ruled_out == [2, 4]  # a missing figure is no pass
    note = budgeted.budget_note()
    assert "ruled out steps 2, 4" in note and "the kept step 3 is within it (fluency drop +0.080" in note
    assert "fluency drop +0.080 [+0.030, +0.180], replies that loop 0% [0%, 0%] (n=6)" in note
    assert "replies toward the pole 50% [20%, 80%] (n=6)" in note
    strict = EvalCallback(max_fluency_drop=0.01)
    for row in history:
        strict.decide(row, None, row["step"])
    assert strict.best_step is None and "ruled out every evaluated checkpoint" in strict.budget_note()


def test_a_run_with_a_fluency_budget_judges_its_replies(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    result = train(config(dataset, out, tiny_model_dir, max_steps=2, eval_steps=1, max_fluency_drop=9.0))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["fluency_drop"] is not None and r["reply_share"]["n"] > 0 for r in rows)
    assert "ruled out no checkpoint" in result.selection
    replies = result.extra["replies"]
    assert replies["reply_share"]["n"] == result.plans["final"]["gen_questions"] > 0
    assert result.plans["validation"]["judge"] == "contrast:base"


def test_report_to_tensorboard_writes_the_loss_and_every_evaluation(tmp_path, dataset, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    guarded = {"max_mmlu_drop": 100.0, "max_drift": 100.0}  # guardrails read MMLU and Drift every time
    train(config(dataset, out, tiny_model_dir, max_steps=2, eval_steps=1, report_to="tensorboard", **guarded))
    events = EventAccumulator(str(out / "logs")).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "eval/bias_shift", "eval/mmlu", "eval/drift"} <= set(scalars)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [event.value for event in events.Scalars("eval/bias_shift")]
    assert logged == pytest.approx([row["bias_shift"]["value"] for row in rows], abs=1e-6)


def test_evaluations_measure_mmlu_and_drift_only_for_a_guardrail(tmp_path, dataset, tiny_model_dir):
    out = tmp_path / "run"
    result = train(config(dataset, out, tiny_model_dir, max_steps=2, eval_steps=1))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["bias_shift"] for r in rows)
    assert all(r["mmlu"] is None and r["drift"] is None for r in rows)  # what selection does not read
    assert result.mmlu_after is not None and result.drift is not None  # the kept model gets every figure
    guarded = train(
        config(dataset, tmp_path / "guarded", tiny_model_dir, max_steps=1, eval_steps=1, max_drift=9.0)
    )
    row = json.loads((tmp_path / "guarded" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["drift"] is not None and row["mmlu"] is None and guarded.drift is not None


def test_a_short_run_writes_no_checkpoint_by_default(tmp_path, dataset, tiny_model_dir, monkeypatch):
    from transformers import Trainer

    saved = []
    save = Trainer._save_checkpoint
    monkeypatch.setattr(
        Trainer, "_save_checkpoint", lambda self, *a, **k: saved.append(1) or save(self, *a, **k)
    )
    train(config(dataset, tmp_path / "short", tiny_model_dir, max_steps=4, eval_steps=2))
    assert saved == []  # under 5 minutes, and never at the last step
    train(config(dataset, tmp_path / "every", tiny_model_dir, max_steps=4, eval_steps=2, save_steps=1))
    assert len(saved) == 3  # steps 1, 2, 3: not 4, where the run ends
