"""Under LoRA the reference is the policy with its adapter disabled: the same figures as a second copy.

A run on the packaged SmolLM2 with the DPO loss and the KL regulariser (reference log-probs, the KL
to the base every step, base margins for BiasShift, Drift: every reference computation) is repeated
with a separate float32 copy of the base as the reference; every loss and figure agrees to 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autocustom.llm.models import load_model
from autocustom.training import setup, trainer
from autocustom.training.config import TrainConfig
from tests.sample_dataset import write_small_dataset
from tests.training import SMALL


def _run(dataset: Path, out: Path, model: Path) -> tuple[list[dict], dict]:
    config = TrainConfig(
        data=str(dataset),
        out=str(out),
        model=str(model),
        **{**SMALL, "lr": 2e-3, "reg_weight": 0.5, "reg_batch_size": 1},
        loss="dpo",
        reg="kl",
        lora=True,
        max_steps=2,
        eval_steps=1,
        max_drift=100.0,  # a guardrail that never fires: every evaluation then measures Drift
        device="cpu",
    )
    trainer.train(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "summary.json").read_text())


def _separate_copy(model: Path):
    def reference(peft_model):
        copy = load_model(str(model), device="cpu", dtype=torch.float32).model
        return copy.requires_grad_(False)

    return reference


@pytest.mark.slow
def test_adapter_disabled_reference_equals_a_separate_float32_copy(monkeypatch, tmp_path, smollm2_dir):
    dataset = write_small_dataset(tmp_path / "data", per_subarea=2)
    shared_rows, shared = _run(dataset, tmp_path / "shared", smollm2_dir)
    monkeypatch.setattr(setup, "AdapterDisabled", _separate_copy(smollm2_dir))
    copy_rows, copy = _run(dataset, tmp_path / "copy", smollm2_dir)
    assert [r["train_loss"] for r in shared_rows] == pytest.approx(
        [r["train_loss"] for r in copy_rows], abs=1e-4
    )
    for key in ("bias_shift", "drift"):
        for a, b in zip(shared_rows, copy_rows, strict=True):
            assert a[key]["value"] == pytest.approx(b[key]["value"], abs=1e-4)
    for key in ("bias_shift_test", "drift", "mmlu_delta_points"):
        assert shared[key]["value"] == pytest.approx(copy[key]["value"], abs=1e-4)
    assert shared["bias_shift"]["value"] != 0  # the run moved: the figures compared are not all zero
