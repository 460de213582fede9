"""Evaluation during training: BiasShift, MMLU and Drift every `eval_steps`, best checkpoint, early stopping.

Every rank evaluates (under FSDP and ZeRO-3 a forward pass needs every rank), and every rank decides
from rank 0's figures (one broadcast per evaluation), so the stop and save decisions agree; only rank 0
writes files. The early-stopping state is an `ExportableState`, so the Trainer writes it into each
checkpoint's trainer_state.json and a resumed run continues with the same best-so-far and patience
counter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from autocustom.layout import append_metrics
from autocustom.progress import ProgressCallback, ProgressEvent
from autocustom.scoring.measure import Measurement
from autocustom.scoring.stats import Estimate, estimate_dict

log = logging.getLogger(__name__)


class EvalCallback(TrainerCallback, ExportableState):
    """Evaluates, keeps the best model by validation BiasShift and stops on patience or a guardrail."""

    def __init__(
        self,
        measure: Callable[[Any], Measurement] | None = None,
        *,
        eval_steps: int = 1,
        patience: int = 3,
        max_mmlu_drop: float | None = None,
        max_drift: float | None = None,
        max_fluency_drop: float | None = None,
        save_best: Callable[[Any, int], None] | None = None,
        run_dir: Path | None = None,
        is_writer: bool = True,
        loss_log: list[float] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.measure = measure  # the validation measurement of the shared measurement layer
        self.eval_steps = eval_steps
        self.patience = patience
        self.max_mmlu_drop = max_mmlu_drop
        self.max_drift = max_drift
        self.max_fluency_drop = max_fluency_drop  # a budget: rules a checkpoint out, does not stop
        self.save_best = save_best
        self.run_dir = run_dir
        self.is_writer = is_writer
        self.loss_log = loss_log if loss_log is not None else []
        self.pending_logs: dict[str, float] = {}  # figures for the Trainer's next log (--report-to)
        self.progress = progress
        self.started = time.monotonic()
        self.eval_seconds = 0.0
        # persisted in checkpoints (see state()):
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_row: dict[str, Any] | None = None
        self.bad_evals = 0
        self.stop_reason: str | None = None
        self.elapsed_before = 0.0
        self.ruled_out: list[int] = []  # steps whose replies broke the fluency budget

    def state(self) -> dict[str, Any]:
        return {
            "args": {},
            "attributes": {
                "best_value": self.best_value,
                "best_step": self.best_step,
                "best_row": self.best_row,
                "bad_evals": self.bad_evals,
                "stop_reason": self.stop_reason,
                "elapsed_before": self.elapsed(),
                "ruled_out": self.ruled_out,
                # the losses the next evaluation averages, so its train_loss is the unbroken run's
                "loss_log": self.loss_log[-self.eval_steps :],
            },
        }

    def restore(self, attributes: dict[str, Any]) -> None:
        for name, value in attributes.items():
            if name == "loss_log":
                self.loss_log[:] = value  # in place: the trainer appends to this very list
            else:
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
        metrics = self.measure(model).metrics
        losses = self.loss_log[-self.eval_steps :] if self.loss_log else []
        row = _agreed(
            {
                "step": step,
                "epoch": round(float(epoch or 0.0), 4),
                "train_loss": float(np.mean(losses)) if losses else None,
                **{key: estimate_dict(metrics[name]) for key, name in ROW_METRICS.items()},
                "mmlu_drop_points": _drop(metrics["mmlu_delta_points"]),
                "fluency_drop": _drop(metrics["fluency_vs_prompted"]),
                "elapsed": round(self.elapsed(), 2),
            }
        )
        if self.is_writer and self.run_dir is not None:
            append_metrics(self.run_dir, row)
        figures = {key: metrics[name] for key, name in ROW_METRICS.items()}
        self.pending_logs.update({f"eval_{k}": v.value for k, v in figures.items() if v is not None})
        if self.progress is not None:
            figures = [
                f"{key} {metrics[name]}" for key, name in ROW_METRICS.items() if metrics[name] is not None
            ]
            summary = " ".join(figures)
            self.progress(ProgressEvent("evaluate", step, None, summary))
        log.info("step %d: %s", step, row)
        return row

    def decide(self, row: dict[str, Any], model, step: int) -> bool:
        """Guardrails first (a violating model is never kept as best), then best-so-far and patience."""
        drop = row["mmlu_drop_points"]
        if self.max_mmlu_drop is not None and drop is not None and drop > self.max_mmlu_drop:
            self.stop_reason = "max-mmlu-drop"
            return True
        if self.max_drift is not None and row["drift"] is not None and row["drift"]["value"] > self.max_drift:
            self.stop_reason = "max-drift"
            return True
        value = row["bias_shift"]["value"]
        if self._over_budget(row):
            self.ruled_out.append(step)
        elif self.best_value is None or value > self.best_value:
            self.best_value, self.best_step, self.best_row, self.bad_evals = value, step, row, 0
            if self.save_best is not None:
                self.save_best(model, step)
            return False
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.stop_reason = "patience"
            return True
        return False

    def _over_budget(self, row: dict[str, Any]) -> bool:
        """The replies' fluency drop exceeds the budget (a missing figure counts as over: unknown cost)."""
        if self.max_fluency_drop is None:
            return False
        drop = row["fluency_drop"]
        return drop is None or drop > self.max_fluency_drop

    def budget_note(self) -> str:
        """What the fluency budget did to the choice, in words ("" without a budget)."""
        if self.max_fluency_drop is None:
            return ""
        budget = (
            f"the fluency budget ({self.max_fluency_drop:g} nats/token below the prompted base's replies)"
        )
        ruled = ", ".join(map(str, self.ruled_out))
        if self.best_step is None:
            return f"{budget} ruled out every evaluated checkpoint (steps {ruled}): none was within it"
        kept = self.best_row or {}
        fluency, loops, share = (
            kept.get(key) for key in ("fluency_vs_prompted", "repetition", "reply_share")
        )
        figures = f"fluency drop {kept.get('fluency_drop'):+.3f}" + (
            f" [{-fluency['high']:+.3f}, {-fluency['low']:+.3f}]" if fluency else ""
        )  # the drop is minus the paired difference: its interval flips
        for label, estimate in (("replies that loop", loops), ("replies toward the pole", share)):
            if estimate:
                figures += (
                    f", {label} {estimate['value']:.0%} [{estimate['low']:.0%}, {estimate['high']:.0%}] "
                    f"(n={estimate['n']})"
                )
        ruled_text = f"ruled out steps {ruled}" if ruled else "ruled out no checkpoint"
        return f"{budget} {ruled_text}; the kept step {self.best_step} is within it ({figures})"


class CheckpointPolicy(TrainerCallback):
    """Which of the Trainer's save steps really write a checkpoint for --resume.

    A checkpoint of a full fine-tuning run is the model and AdamW's two moments (1.6 GB for the 135M
    model, ~3 s on CPU each time), and a finished run deletes them all. So: never at the step a run ends
    on; by default (`every_seconds`) only once that long has passed since the last checkpoint or the
    start; with an explicit --save-steps (`every_seconds` None), at every save step.
    """

    def __init__(self, every_seconds: float | None) -> None:
        self.every_seconds = every_seconds
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            ending = control.should_training_stop or state.global_step >= state.max_steps
            waited = time.monotonic() - self.last
            due = self.every_seconds is None or waited >= self.every_seconds
            control.should_save = due and not ending
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()


# metrics.jsonl key -> measured metric: what early stopping, the guardrails and the report read
ROW_METRICS = {
    "bias_shift": "bias_shift",
    "mmlu": "mmlu_accuracy",
    "drift": "drift",
    # with --max-fluency-drop: the replies the judge reads as the pole, what they cost, how many loop
    "reply_share": "reply_share",
    "fluency_vs_prompted": "fluency_vs_prompted",
    "repetition": "repetition",
}


def _agreed(row: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's row, on every rank: what every rank decides (stop, save) from it.

    Every rank measures the same items, but a figure that differs in its last bit between ranks could
    split the decisions, and a save under FSDP or ZeRO-3 is a collective that would then hang.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    if PartialState().num_processes < 2:
        return row
    return broadcast_object_list([row], from_process=0)[0]


def _drop(delta: Estimate | None) -> float | None:
    """What was lost against a reference (MMLU points, reply fluency): minus the paired delta."""
    return -delta.value if delta is not None else None
