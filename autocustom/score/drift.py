"""Drift: how far a tuned model's next-token distribution moved from its base on neutral text.

MMLU accuracy cannot show forgetting on a model that scores at chance (the packaged 135M model does);
KL to the base model has headroom on any model: 0 means nothing changed off the axis.
"""

from __future__ import annotations

import numpy as np
import torch

from autocustom.score.logprobs import encode_context_continuation
from autocustom.score.mmlu import LETTERS, retention_subset


def neutral_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs: retention-side MMLU questions written out with their correct answer.

    The continuation holds the question and its answer, so Drift is measured over dozens of ordinary
    tokens per text rather than one answer letter.
    """
    texts = []
    for q in retention_subset(n, seed):
        choices = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices, strict=True))
        prompt = f"The following is a multiple choice question (with its answer) about {q.subject}.\n\n"
        texts.append((prompt, f"{q.question.strip()}\n{choices}\nAnswer: {q.choices[q.answer]}"))
    return texts


@torch.inference_mode()
def drift_per_text(
    model,
    base_model,
    tokenizer,
    texts: list[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int = 256,
) -> np.ndarray:
    """Mean per-token KL(base || tuned) over each text's continuation tokens, nats/token, shape (n,)."""
    encoded = [encode_context_continuation(tokenizer, p, c, max_length) for p, c in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    result = np.zeros(len(encoded), dtype=np.float64)
    device = next(model.parameters()).device
    base_device = next(base_model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        keep = torch.zeros(
            (len(batch), width), dtype=torch.bool
        )  # positions that predict a continuation token
        for row, e in enumerate(batch):
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
            keep[row, e.prompt_length - 1 : len(e.input_ids) - 1] = True
        tuned = _kept_log_probs(model, ids, mask, keep, device)
        base = _kept_log_probs(base_model, ids, mask, keep, base_device).to(tuned.device)
        kl = (base.exp() * (base - tuned)).sum(-1)  # (kept positions,)
        counts = keep.sum(-1).tolist()
        for index, chunk in zip(order[start : start + batch_size], torch.split(kl, counts), strict=True):
            result[index] = float(chunk.double().mean())
    return result


def _kept_log_probs(model, ids, mask, keep, device) -> torch.Tensor:
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep.to(device))
    return torch.log_softmax(out.logits.reshape(-1, out.logits.shape[-1]).float(), dim=-1)
