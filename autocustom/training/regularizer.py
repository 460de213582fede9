"""The MMLU regulariser: keep what the model knows while it moves along the axis.

`nll` (the paper's): NLL of the correct answer letter after the MMLU prompt.
`kl`: KL(base || tuned) of the next-token distributions over every position of the MMLU prompt and its
correct letter, the base model's outputs computed on the fly without gradients. It anchors the whole
distribution, not one token, so it holds Drift (measured on the same kind of text) down directly.
Questions come from `regularizer_pool`, disjoint from the evaluation subset, and batch k is a fixed
slice of a seeded order, so a resumed or multi-process run sees the same regulariser batches.

The regulariser rows share the pairs' forward pass, padded to one width, so a long MMLU question (some
run past 256 tokens) would pad every pair row to its length: measured on the demo, one in four steps
was 12 rows x 256 tokens for ~700 real pair tokens. Questions longer than `max_tokens` therefore stay
out of the pool (docs/training.md, "Where a step's time goes").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autocustom.errors import UsageError
from autocustom.tensors import padding_id
from autocustom.training.data import pad_sequences


class MMLURegularizer:
    """Hands out regulariser batch k (the trainer computes the loss) from the pool's seeded order.

    Questions are encoded as batches ask for them, not all at once: a run reads a few hundred of the
    pool's ~10,000 (encoding all took 3.4 s, as long as a training step). Row j is always the j-th
    question of the order that fits `max_tokens`, so the batches do not depend on when they are asked.
    """

    def __init__(self, tokenizer, questions: Sequence, kind: str, batch_size: int, max_tokens: int) -> None:
        if not questions:
            raise ValueError("the MMLU regulariser pool is empty")
        self.kind = kind
        self.batch_size = batch_size
        self.pad_id = padding_id(tokenizer)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.questions = questions
        self.read = 0  # questions of the order encoded so far
        self.rows: list[tuple[list[int], int]] = []  # (input ids, prompt length) of those that fit
        self._row(0)  # a budget no question fits fails here, before training starts

    def batch(self, index: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = index * self.batch_size
        rows = [self._row(first + i) for i in range(self.batch_size)]
        return tuple(t.to(device) for t in pad_sequences(rows, self.pad_id))  # type: ignore[return-value]

    def _row(self, j: int) -> tuple[list[int], int]:
        """The j-th fitting question; the order repeats once the whole pool has been read."""
        from autocustom.scoring.logprobs import encode_context_continuation
        from autocustom.scoring.mmlu import CONTINUATIONS, mmlu_prompt

        uncut = 2**31  # encode whole: a question is kept or left out, never cut
        while len(self.rows) <= j and self.read < len(self.questions):
            q = self.questions[self.read]
            self.read += 1
            encoded = encode_context_continuation(
                self.tokenizer, mmlu_prompt(q), CONTINUATIONS[q.answer], uncut
            )
            if len(encoded.input_ids) <= self.max_tokens:
                self.rows.append((encoded.input_ids, encoded.prompt_length))
        if not self.rows:
            raise UsageError(
                f"no MMLU regulariser question fits --reg-max-tokens {self.max_tokens}",
                "raise --reg-max-tokens (128 keeps about two thirds of MMLU) or pass --reg-weight 0",
            )
        return self.rows[j % len(self.rows)]
