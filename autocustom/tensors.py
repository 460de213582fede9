"""Token-tensor arithmetic shared by training and scoring: padding, per-token log-probs, KL.

Training (pair batches, the regulariser) and scoring (margins, MMLU, Drift) pad, take log-probs and
compare distributions the same way, so a number the trainer optimises is the number the scorer reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def padding_id(source) -> int:
    """A token id to pad with: the pad token, else EOS, else BOS, else 0.

    Any valid id works, since padded positions are masked; `source` is a tokenizer or a model config
    (both name these ids the same way), so the scorer, which holds only the model, pads as training does.
    """
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(source, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, *, left: bool = False, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (input_ids, attention_mask) [N, width], padded on the right (or the left)."""
    width = max(len(r) for r in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def pad_width(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """Right-pad a [N, T] tensor to [N, width] with `value`."""
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row: [N, V], [N] -> [N], in float32.

    Gather minus logsumexp instead of a full log_softmax: one [N, V] tensor fewer.
    """
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def kl_per_position(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || tuned) of next-token distributions, nats, one value per position: [..., V] x 2 -> [N]."""
    vocab = tuned_logits.shape[-1]
    log_p = torch.log_softmax(base_logits.reshape(-1, vocab).float(), dim=-1)
    log_q = torch.log_softmax(tuned_logits.reshape(-1, vocab).float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def keep_mask(needed: torch.Tensor) -> torch.Tensor:
    """[R, T-1] mask of positions whose next token is scored -> [R, T] `logits_to_keep` mask."""
    return torch.nn.functional.pad(needed, (0, 1), value=False)


def answer_token_logps(model, input_ids, attention_mask, needed) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [R, T-1] at the `needed` positions (0 elsewhere), and their logits [N, V].

    The vocabulary projection runs only where a scored token is predicted (`logits_to_keep` with a
    boolean mask), not over prompts and padding: on a small model with a 49k vocabulary that projection
    and its log-softmax are most of a training step. Called through the model's own forward, so DDP
    and peft wrappers see an ordinary call.
    """
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep_mask(needed), use_cache=False
    ).logits
    logits = logits.reshape(-1, logits.shape[-1])  # [N, V], rows in (row, position) order
    flat = token_logprobs(logits, input_ids[:, 1:][needed])
    return torch.zeros(needed.shape, dtype=flat.dtype, device=flat.device).masked_scatter(
        needed, flat
    ), logits
