"""What a training run measures, as evaluation plans: the same plans `shift-score` makes for a split.

On the config side of training: the memory plan reads the Drift texts of these plans before any weight
is loaded, and `train` measures with them, so both import this module and neither imports the other.
"""

from __future__ import annotations

from autocustom.data.io import Dataset
from autocustom.scoring.contrast import ContrastJudge
from autocustom.scoring.judge import CONTRAST, JudgeOptions
from autocustom.scoring.plan import EvalPlan, make_plan
from autocustom.training.config import TrainConfig


def training_plan(
    config: TrainConfig, dataset: Dataset, split: str, device_type: str, **measured: bool
) -> EvalPlan:
    """What `train` measures on `split`: the plan `shift-score` makes for the same split and sizes
    (with `--judge contrast` when a fluency budget asks for the replies).

    `measured` (mmlu=False, drift=False) leaves those figures out, as `make_plan` does.
    """
    judged = config.reads_replies
    return make_plan(
        dataset,
        split,
        config.toward,
        device_type=device_type,
        mmlu_questions=config.mmlu_questions,
        drift_texts=config.drift_texts,
        batch_size=config.eval_batch_size,
        judge=REPLY_JUDGE.judge_label if judged else None,
        check_split=REPLY_JUDGE.check_split if judged else None,
        **measured,
    )


# the judge of a run's own replies (a fluency budget, on-policy training): the base told each pole,
# validated on the validation split
REPLY_JUDGE = JudgeOptions(judge=CONTRAST)


def reply_judge(config: TrainConfig, dataset: Dataset) -> ContrastJudge | None:
    """The contrast judge when the run reads its own replies (the base of the run reads them)."""
    if not config.reads_replies:
        return None
    return ContrastJudge(dataset.axis, REPLY_JUDGE.judge_label)


def selection_plan(config: TrainConfig, dataset: Dataset, device_type: str) -> EvalPlan:
    """What every evaluation during training measures: what picking the checkpoint and stopping read.

    Validation BiasShift always (it picks the kept checkpoint); MMLU and Drift only when a guardrail
    (--max-mmlu-drop, --max-drift) reads them. They cost most of an evaluation (60 MMLU questions and
    32 texts against ~10 pairs on CPU) and the kept model is measured on all of them once, at the end.
    """
    return training_plan(
        config,
        dataset,
        "validation",
        device_type,
        mmlu=config.max_mmlu_drop is not None,
        drift=config.max_drift is not None,
    )
