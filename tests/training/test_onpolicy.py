"""On-policy training: pairs from scripted samples, the policy's own samples trained on, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from autocustom.errors import UsageError
from autocustom.llm.models import load_model
from autocustom.training.config import TrainConfig
from autocustom.training.onpolicy import Preference, preference_pairs
from autocustom.training.trainer import train
from tests.sample_dataset import write_small_dataset
from tests.training import SMALL

# samples short enough for seconds per run on the tiny model, two per question: a best and a worst
SAMPLING = {"samples": 2, "sample_tokens": 6}


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("data"), per_subarea=3)


def config(data: Path, out: Path, model: Path, **overrides) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), model=str(model), **{**SMALL, **SAMPLING, **overrides})


def params(path: Path) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().clone() for name, p in load_model(str(path), device="cpu").model.named_parameters()
    }


def test_pairs_are_the_best_against_the_worst_and_the_written_answer_against_a_wrong_lean():
    samples = [["a1", "a2", "a3"], ["b1", "b2"], ["c1", "c2"]]
    scores = [np.array([0.2, 0.5, 0.1]), np.array([0.3, -0.4]), np.array([0.0, 0.0])]
    pairs = preference_pairs(samples, scores, ["written a", "written b", "written c"])
    assert pairs == [
        Preference(0, "a2", "a3", "best-worst"),  # every sample leans right: no written pair
        Preference(1, "b1", "b2", "best-worst"),
        Preference(1, "written b", "b2", "written-wrong"),  # b2 leans the wrong way
    ]  # c: the judge cannot tell its samples apart and neither leans wrong: no pair
    assert preference_pairs([["x"]], [np.array([-1.0])], ["w"]) == [Preference(0, "w", "x", "written-wrong")]


@pytest.mark.parametrize("loss", ["dpo", "distill"])
def test_an_on_policy_run_trains_on_its_own_samples_and_reads_its_replies(
    tmp_path, dataset, tiny_model_dir, loss
):
    out = tmp_path / loss
    options = {"loss": loss, "on_policy": loss != "distill"}
    result = train(config(dataset, out, tiny_model_dir, max_steps=2, eval_steps=2, **options))
    before, after = params(tiny_model_dir), params(out)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["reply_share"]["n"] > 0 and row["fluency_drop"] is not None  # its replies, on validation
    assert result.plans["validation"]["judge"] == "contrast:base"
    assert result.extra["replies"]["reply_share"]["n"] > 0
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["samples"] == 2 and recorded["loss"] == loss


def test_an_on_policy_run_resumes_to_the_weights_of_an_unbroken_one(tmp_path, dataset, tiny_model_dir):
    base = config(dataset, tmp_path / "resumed", tiny_model_dir, max_steps=4, eval_steps=2, loss="dpo",
                  on_policy=True, save_steps=2, reg_weight=0.5, lora=True)  # fmt: skip

    def kill_after_step_3(event):
        if event.stage == "train" and event.done == 3:
            raise Killed

    with pytest.raises(Killed):
        train(base, progress=kill_after_step_3)
    resumed = train(replace(base, resume=True))
    straight = train(replace(base, out=str(tmp_path / "straight")))
    assert resumed.steps == straight.steps == 4 and resumed.best_step == straight.best_step
    a, b = params(tmp_path / "resumed"), params(tmp_path / "straight")
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)


def test_distill_with_on_policy_is_refused(dataset, tiny_model_dir, tmp_path):
    with pytest.raises(UsageError, match="drop --on-policy"):
        train(config(dataset, tmp_path / "x", tiny_model_dir, loss="distill", on_policy=True))
    with pytest.raises(UsageError, match="--samples"):
        train(config(dataset, tmp_path / "y", tiny_model_dir, on_policy=True, samples=0))
