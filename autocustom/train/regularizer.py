"""The MMLU regulariser: keep what the model knows while it moves along the axis.

`nll` (the paper's): NLL of the correct answer letter after the MMLU prompt.
`kl`: KL(base || tuned) of the next-token distributions over every position of the MMLU prompt and its
correct letter, the base model's outputs computed on the fly without gradients. It anchors the whole
distribution, not one token, so it holds Drift (measured on the same kind of text) down directly.
Questions come from `regularizer_pool`, disjoint from the evaluation subset, and batch k is a fixed
slice of a seeded order, so a resumed or multi-process run sees the same regulariser batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autocustom.tensors import padding_id
from autocustom.train.data import pad_sequences


class MMLURegularizer:
    """Encodes the regulariser pool once and hands out batch k (the trainer computes the loss)."""

    def __init__(self, tokenizer, questions: Sequence, kind: str, batch_size: int, max_length: int) -> None:
        from autocustom.score.logprobs import encode_context_continuation
        from autocustom.score.mmlu import CONTINUATIONS, mmlu_prompt

        if not questions:
            raise ValueError("the MMLU regulariser pool is empty")
        self.kind = kind
        self.batch_size = batch_size
        self.pad_id = padding_id(tokenizer)
        encoded = [
            encode_context_continuation(tokenizer, mmlu_prompt(q), CONTINUATIONS[q.answer], max_length)
            for q in questions
        ]
        self.rows = [(e.input_ids, e.prompt_length) for e in encoded]

    def batch(self, index: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = (index * self.batch_size) % len(self.rows)
        rows = [self.rows[(start + i) % len(self.rows)] for i in range(self.batch_size)]
        return tuple(t.to(device) for t in pad_sequences(rows, self.pad_id))  # type: ignore[return-value]
