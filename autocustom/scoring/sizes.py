"""Default evaluation sizes, shared by train, shift-score and compare so their figures compare.

On a GPU the full fixed MMLU subset (570 questions, 10 per subject) costs seconds; on CPU it costs
minutes with the 135M model, so CPU runs use a smaller stratified subset and say so in their output.
"""

from __future__ import annotations

MMLU_QUESTIONS = {"cuda": 570, "cpu": 60}
DRIFT_TEXTS = {"cuda": 200, "cpu": 32}


def evaluation_size(requested: int | None, defaults: dict[str, int], device_type: str) -> tuple[int, str]:
    """(n, where n came from): the requested size, else the default for this kind of device."""
    if requested is not None:
        return requested, "as requested"
    kind = "cuda" if device_type == "cuda" else "cpu"
    return defaults[kind], f"default on {kind.upper()}"


def size_help(what: str, defaults: dict[str, int]) -> str:
    """An option's help with the defaults it really has, so the help text cannot drift from them."""
    return f"{what} (default {defaults['cuda']} on CUDA, {defaults['cpu']} on CPU)"
