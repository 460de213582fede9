"""Drift: how far a tuned model's next-token distribution moved from its base on neutral text.

MMLU accuracy cannot show forgetting on a model that scores at chance (the packaged 135M model does);
KL to the base model has headroom on any model: 0 means nothing changed off the axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from autocustom.scoring.logprobs import encode_context_continuation
from autocustom.scoring.mmlu import question_text, retention_subset
from autocustom.tensors import kl_per_position, pad_rows, padding_id

MAX_LENGTH = 256  # a neutral text is one MMLU question with its answer: ~60-200 tokens
# positions per KL computation: its float32 temporaries (two log-softmaxes, their difference, the
# probabilities, the product) then hold 5 x 512 x vocab values, not 5 x every scored position of a batch
KL_CHUNK = 512


def neutral_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs: retention-side MMLU questions written out with their correct answer.

    The continuation holds the question and its answer, so Drift is measured over dozens of ordinary
    tokens per text rather than one answer letter.
    """
    return [
        (
            f"The following is a multiple choice question (with its answer) about {q.subject}.\n\n",
            f"{question_text(q)} {q.choices[q.answer]}",
        )
        for q in retention_subset(n, seed)
    ]


@torch.inference_mode()
def drift_per_text(
    model,
    base_model,
    tokenizer,
    texts: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
) -> np.ndarray:
    """Mean per-token KL(base || tuned) over each text's continuation tokens, nats/token, shape (n,)."""
    from autocustom.runtime import threads_on_free_cores

    encoded = [encode_context_continuation(tokenizer, p, c, max_length) for p, c in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    result = np.zeros(len(encoded), dtype=np.float64)
    with threads_on_free_cores(next(model.parameters()).device):  # see score_groups
        _fill_drift(model, base_model, tokenizer, encoded, order, batch_size, result)
    return result


def _fill_drift(model, base_model, tokenizer, encoded, order, batch_size: int, result: np.ndarray) -> None:
    """Per batch of texts (longest first): both models' kept logits, their KL in chunks, into `result`."""
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = [encoded[i] for i in indices]
        ids, mask = pad_rows([e.input_ids for e in batch], padding_id(tokenizer))
        keep = torch.zeros_like(mask, dtype=torch.bool)  # positions that predict a continuation token
        for row, e in enumerate(batch):
            keep[row, e.prompt_length - 1 : len(e.input_ids) - 1] = True
        tuned = _kept_logits(model, ids, mask, keep)
        base = _kept_logits(base_model, ids, mask, keep).to(tuned.device)
        kl = torch.cat(
            [kl_per_position(b, t) for b, t in zip(base.split(KL_CHUNK), tuned.split(KL_CHUNK), strict=True)]
        )
        for index, chunk in zip(indices, torch.split(kl.cpu(), keep.sum(-1).tolist()), strict=True):
            result[index] = float(chunk.double().mean())


def _kept_logits(model, ids, mask, keep) -> torch.Tensor:
    device = next(model.parameters()).device
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep.to(device))
    return out.logits.reshape(-1, out.logits.shape[-1])
