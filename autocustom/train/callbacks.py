"""Evaluation during training: BiasShift, MMLU and Drift every `eval_steps`, best checkpoint, early stopping.

Every rank evaluates (the numbers are identical because DDP keeps the parameters identical), so every
rank takes the same stop decision without a collective; only rank 0 writes files. The early-stopping
state is an `ExportableState`, so the Trainer writes it into each checkpoint's trainer_state.json and a
resumed run continues with the same best-so-far and patience counter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from autocustom.data.schema import Pair
from autocustom.progress import ProgressCallback, ProgressEvent
from autocustom.score.stats import Estimate, bootstrap

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """What every evaluation measures, with the base model's numbers computed once at the start."""

    tokenizer: Any
    reference: Any  # the frozen base model (Drift's base)
    pairs: list[Pair]
    toward: str
    base_margins: np.ndarray
    mmlu_questions: list
    base_mmlu: np.ndarray  # 0/1 per question
    drift_texts: list[tuple[str, str]]
    batch_size: int
    max_length: int

    def measure(self, model) -> dict[str, Any]:
        from autocustom.score.drift import drift_per_text
        from autocustom.score.logprobs import pair_margins
        from autocustom.score.mmlu import mmlu_correct
        from autocustom.score.shift import bias_shift

        was_training = model.training
        model.eval()
        try:
            margins = pair_margins(
                model,
                self.tokenizer,
                self.pairs,
                self.toward,
                batch_size=self.batch_size,
                max_length=self.max_length,
            )
            mmlu = mmlu_correct(model, self.tokenizer, self.mmlu_questions, batch_size=self.batch_size)
            drift = drift_per_text(
                model, self.reference, self.tokenizer, self.drift_texts, batch_size=self.batch_size
            )
        finally:
            model.train(was_training)
        return {
            "bias_shift": bias_shift(margins, self.base_margins),
            "mmlu": bootstrap(mmlu),
            "mmlu_correct": mmlu,
            "drift": bootstrap(drift),
        }


class EvalCallback(TrainerCallback, ExportableState):
    """Evaluates, keeps the best model by validation BiasShift and stops on patience or a guardrail."""

    def __init__(
        self,
        evalset: EvalSet | None = None,
        *,
        eval_steps: int = 1,
        patience: int = 3,
        max_mmlu_drop: float | None = None,
        max_drift: float | None = None,
        save_best: Callable[[Any, int], None] | None = None,
        metrics_path: Path | None = None,
        is_writer: bool = True,
        loss_log: list[float] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.evalset = evalset
        self.eval_steps = eval_steps
        self.patience = patience
        self.max_mmlu_drop = max_mmlu_drop
        self.max_drift = max_drift
        self.save_best = save_best
        self.metrics_path = metrics_path
        self.is_writer = is_writer
        self.loss_log = loss_log if loss_log is not None else []
        self.progress = progress
        self.started = time.monotonic()
        self.eval_seconds = 0.0
        # persisted in checkpoints (see state()):
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_row: dict[str, Any] | None = None
        self.best_mmlu_correct: list[float] | None = None  # per question, for the paired MMLU delta
        self.bad_evals = 0
        self.stop_reason: str | None = None
        self.elapsed_before = 0.0
        self._last_correct: list[float] | None = None

    def state(self) -> dict[str, Any]:
        return {
            "args": {},
            "attributes": {
                "best_value": self.best_value,
                "best_step": self.best_step,
                "best_row": self.best_row,
                "best_mmlu_correct": self.best_mmlu_correct,
                "bad_evals": self.bad_evals,
                "stop_reason": self.stop_reason,
                "elapsed_before": self.elapsed(),
            },
        }

    def restore(self, attributes: dict[str, Any]) -> None:
        for name, value in attributes.items():
            setattr(self, name, value)
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self.progress is not None:
            recent = self.loss_log[-1] if self.loss_log else float("nan")
            self.progress(ProgressEvent("train", step, state.max_steps, f"loss {recent:.3f}"))
        if step % self.eval_steps != 0 and step < state.max_steps:
            return control
        if self.stop_reason is not None:  # a guardrail already fired (restored state)
            control.should_training_stop = True
            return control
        began = time.monotonic()
        row = self.evaluate(model, step, state.epoch)
        self.eval_seconds += time.monotonic() - began
        if self.decide(row, model, step):
            control.should_training_stop = True
        return control

    def evaluate(self, model, step: int, epoch: float | None) -> dict[str, Any]:
        result = self.evalset.measure(model)
        losses = self.loss_log[-self.eval_steps :] if self.loss_log else []
        row = {
            "step": step,
            "epoch": round(float(epoch or 0.0), 4),
            "train_loss": float(np.mean(losses)) if losses else None,
            "bias_shift": result["bias_shift"].to_dict(),
            "mmlu": result["mmlu"].to_dict(),
            "mmlu_drop_points": 100 * (float(self.evalset.base_mmlu.mean()) - result["mmlu"].value),
            "drift": result["drift"].to_dict(),
            "elapsed": round(self.elapsed(), 2),
        }
        self._last_correct = result["mmlu_correct"].tolist()
        if self.is_writer and self.metrics_path is not None:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.progress is not None:
            shift = result["bias_shift"]
            self.progress(
                ProgressEvent(
                    "evaluate",
                    step,
                    None,
                    f"BiasShift {shift} MMLU {result['mmlu'].value:.3f} Drift {result['drift'].value:.4f}",
                )
            )
        log.info("step %d: %s", step, row)
        return row

    def decide(self, row: dict[str, Any], model, step: int) -> bool:
        """Guardrails first (a violating model is never kept as best), then best-so-far and patience."""
        if self.max_mmlu_drop is not None and row["mmlu_drop_points"] > self.max_mmlu_drop:
            self.stop_reason = "max-mmlu-drop"
            return True
        if self.max_drift is not None and row["drift"]["value"] > self.max_drift:
            self.stop_reason = "max-drift"
            return True
        value = row["bias_shift"]["value"]
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_step, self.best_row, self.bad_evals = value, step, row, 0
            self.best_mmlu_correct = self._last_correct
            if self.save_best is not None:
                self.save_best(model, step)
            return False
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.stop_reason = "patience"
            return True
        return False


def estimate_from(data: dict[str, Any] | None) -> Estimate | None:
    return Estimate(**data) if data else None
