"""Training tests; `SMALL` is the TrainConfig of a run on the tiny model that takes seconds."""

SMALL = {
    "toward": "formal",
    "batch_size": 2,
    "max_length": 48,
    "mmlu_questions": 4,
    "drift_texts": 2,
    "reg_weight": 0.0,
    "eval_batch_size": 8,
    "lr": 1e-3,
}
