"""The training objectives as pure functions over per-token log-probs, so each can be checked by hand.

Shapes: `token_logps` and `mask` are [B, T] (mask 1 on answer tokens, 0 on prompt and padding);
every loss returns one value per pair, [B], and the caller reduces (mean or CVaR).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, *, normalize: bool) -> torch.Tensor:
    """Sum (DPO/IPO, as TRL does) or mean per token (contrastive, SimPO, the margin) of answer log-probs."""
    mask = mask.to(token_logps.dtype)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if normalize else total


def log1mexp(logp: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(logp)) for logp <= 0, stable at both ends (Maechler 2012).

    Near logp = 0 (p -> 1) `log(-expm1(x))` keeps precision; far below, `log1p(-exp(x))` does. The input
    is clamped just below 0 so a token with p rounded to 1 gives a large finite value, not inf.
    """
    logp = logp.clamp(max=-1e-6)
    return torch.where(logp > -math.log(2), torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp)))


def unlikelihood(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-mean log(1 - p(token)) over answer tokens: large while p is large, ~p (pull ~0) once p -> 0."""
    return -sequence_logps(log1mexp(token_logps), mask, normalize=True)


def contrastive_loss(
    target_logps: torch.Tensor,
    target_mask: torch.Tensor,
    opposite_logps: torch.Tensor,
    opposite_mask: torch.Tensor,
    alpha: float = 1.0,
) -> torch.Tensor:
    """-lp(target) + alpha * UL(opposite): pull the target up, push the opposite down until unlikely.

    Unlike -lp(t) + lp(o), this is bounded below, so the opposite answer cannot be driven to -inf at
    the cost of everything else the model knows.
    """
    nll = -sequence_logps(target_logps, target_mask, normalize=True)
    return nll + alpha * unlikelihood(opposite_logps, opposite_mask)


def dpo_loss(
    policy_target: torch.Tensor,
    policy_opposite: torch.Tensor,
    ref_target: torch.Tensor,
    ref_opposite: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (sigmoid): -log sigmoid(beta * [(pi_t - ref_t) - (pi_o - ref_o)]) on summed log-probs, as TRL."""
    return -F.logsigmoid(beta * ((policy_target - ref_target) - (policy_opposite - ref_opposite)))


def ipo_loss(
    policy_target: torch.Tensor,
    policy_opposite: torch.Tensor,
    ref_target: torch.Tensor,
    ref_opposite: torch.Tensor,
    target_lengths: torch.Tensor,
    opposite_lengths: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO: (h - 1/(2 beta))^2 with h the difference of per-token log-ratios (TRL's normalisation).

    Summed log-ratios are divided by each answer's token count, as TRL does after checking with the IPO
    authors, so beta means the same for short and long answers.
    """
    h = (policy_target - ref_target) / target_lengths.clamp(min=1) - (policy_opposite - ref_opposite) / (
        opposite_lengths.clamp(min=1)
    )
    return (h - 1 / (2 * beta)) ** 2


def simpo_loss(
    mean_target: torch.Tensor, mean_opposite: torch.Tensor, beta: float = 2.0, gamma: float = 0.5
) -> torch.Tensor:
    """SimPO: -log sigmoid(beta * (lp_t - lp_o) - gamma) on length-normalised log-probs; no reference."""
    return -F.logsigmoid(beta * (mean_target - mean_opposite) - gamma)


def cvar_alpha_at(step: int, final_alpha: float, warmup_steps: int) -> float:
    """Soft risk scheduling: the CVaR level goes linearly from 1.0 (plain mean) to `final_alpha` over warm-up.

    Starting at the mean lets the model first learn the easy bulk; narrowing to the tail too early makes
    the gradient follow a handful of noisy pairs.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return final_alpha
    return 1.0 + (final_alpha - 1.0) * step / warmup_steps


def cvar_mean(losses: torch.Tensor, margins: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mean loss over the ceil(alpha * B) pairs whose current margin toward the target is smallest.

    `margins` are detached: they choose pairs, they are not optimised. alpha = 1 is the plain mean.
    """
    if alpha >= 1.0:
        return losses.mean()
    keep = max(1, math.ceil(alpha * losses.numel()))
    worst = torch.topk(margins.detach(), keep, largest=False).indices
    return losses[worst].mean()
