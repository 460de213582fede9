"""The lean check's reader: whether each written pair's answers lean toward their own poles, read by the
contrast judge (`scoring/contrast.py`: a model told each pole in turn).

`generate`, `import` and `run` are handed one with `--lean-judge MODEL` (the data layer loads no
scoring model, `data/pair_check.py` says what it does with the margins); `inspect` reads the same
figure. A pair's margin is the judge's contrast score toward pole A of its pole-A answer minus that of
its pole-B answer: above 0, the pole-A answer reads more pole-A-like than the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocustom.axis import Axis
from autocustom.data.schema import Pair


@dataclass(frozen=True)
class PairLean:
    """A `data.pair_check.LeanReader`: the judge model is loaded when it first reads (after the writer
    finished), so a `generate` that fails early never pays for it."""

    judge_model: str
    device: str | None = None

    def __call__(self, pairs: Sequence[Pair], axis: Axis) -> np.ndarray:
        from autocustom.llm.models import load_model
        from autocustom.runtime import resolve_device
        from autocustom.scoring.contrast import ContrastJudge

        loaded = load_model(self.judge_model, device=resolve_device(self.device))
        judge = ContrastJudge(axis, "contrast")
        toward_answer, opposite_answer = judge.written_scores(
            (loaded.model, loaded.tokenizer), pairs, axis.toward(axis.pole_a)
        )
        return toward_answer - opposite_answer


def lean_reader(judge_model: str | None, device: str | None = None) -> PairLean | None:
    """The reader a config's `lean_judge` asks for, or None when it asks for no lean check."""
    return PairLean(judge_model, device) if judge_model else None
