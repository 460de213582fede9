"""The losses on values computed by hand, DPO against TRL's own code, CVaR selection and schedule."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from autocustom.train.losses import (
    contrastive_loss,
    cvar_alpha_at,
    cvar_mean,
    dpo_loss,
    ipo_loss,
    log1mexp,
    selected_logprobs,
    sequence_logps,
    simpo_loss,
    unlikelihood,
)

log = math.log


def test_selected_logprobs_pick_the_target_token():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    got = selected_logprobs(logits, torch.tensor([1, 0]))
    assert got[0].item() == pytest.approx(log(0.5))  # uniform over 2 tokens
    assert got[1].item() == pytest.approx(log(3 / 4))  # p(token 0) = 3/(3+1)


def test_sequence_logps_sum_and_mean_ignore_masked_tokens():
    logps = torch.tensor([[-1.0, -2.0, -100.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert sequence_logps(logps, mask, normalize=False).item() == pytest.approx(-3.0)
    assert sequence_logps(logps, mask, normalize=True).item() == pytest.approx(-1.5)


def test_unlikelihood_hand_computed():
    logps = torch.tensor([[log(0.5), log(0.9)]])
    expected = -(log(0.5) + log(0.1)) / 2
    assert unlikelihood(logps, torch.ones(1, 2)).item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_hand_computed():
    target = torch.tensor([[log(0.5), log(0.25), 0.0]])
    target_mask = torch.tensor([[1, 1, 0]])
    opposite = torch.tensor([[log(0.5), -7.0]])
    opposite_mask = torch.tensor([[1, 0]])
    got = contrastive_loss(target, target_mask, opposite, opposite_mask, alpha=2.0)
    expected = -(log(0.5) + log(0.25)) / 2 + 2.0 * -log(0.5)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_log1mexp_is_finite_and_accurate_at_both_ends():
    x = torch.tensor([0.0, -1e-10, -1e-3, -1.0, -50.0], dtype=torch.float64)
    got = log1mexp(x)
    assert torch.isfinite(got).all()
    assert got[2].item() == pytest.approx(log(-math.expm1(-1e-3)), rel=1e-9)
    assert got[3].item() == pytest.approx(log(1 - math.exp(-1.0)), rel=1e-12)
    assert got[4].item() == pytest.approx(-math.exp(-50.0), rel=1e-6)


def test_unlikelihood_gradient_fades_as_probability_vanishes():
    grads = []
    for p in (0.9, 0.5, 1e-2, 1e-4):
        logp = torch.tensor([[log(p)]], requires_grad=True)
        unlikelihood(logp, torch.ones(1, 1)).backward()
        grads.append(logp.grad.item())
        assert logp.grad.item() == pytest.approx(p / (1 - p), rel=1e-4)  # d/dx -log(1 - e^x)
    assert grads == sorted(grads, reverse=True)
    assert grads[-1] < 1e-3 < grads[0]


def test_dpo_hand_computed():
    got = dpo_loss(
        torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0]), 0.1
    )
    assert got.item() == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-6)


def test_ipo_hand_computed():
    got = ipo_loss(
        torch.tensor([-10.0]),
        torch.tensor([-12.0]),
        torch.tensor([-11.0]),
        torch.tensor([-11.0]),
        torch.tensor([2.0]),
        torch.tensor([4.0]),
        beta=0.5,
    )
    assert got.item() == pytest.approx((0.5 + 0.25 - 1.0) ** 2)


def test_simpo_hand_computed():
    got = simpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), beta=2.0, gamma=0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-1.5)), rel=1e-6)


def test_dpo_matches_trl_sigmoid_loss():
    """Run TRL's own DPOTrainer._compute_loss on a stand-in model whose per-token log-probs we choose."""
    from trl.trainer.dpo_trainer import DPOTrainer

    torch.manual_seed(0)
    pairs, length = 3, 6
    completion_mask = torch.zeros(2 * pairs, length, dtype=torch.long)
    completion_mask[:, 2:] = 1
    completion_mask[1, 5:] = 0  # answers of different lengths
    shift_mask = completion_mask[:, 1:]
    per_token = (
        -torch.rand(2 * pairs, length - 1) * 3 * shift_mask
    )  # zero off the completion, as TRL's fused head
    ref = -torch.rand(2 * pairs) * 10

    class Model:
        training = True

        def __call__(self, **kwargs):
            n = per_token.shape
            return SimpleNamespace(
                log_probs=per_token,
                entropy=torch.zeros(n),
                mean_logits=torch.zeros(n),
                is_top1=torch.zeros(n, dtype=torch.bool),
            )

    accelerator = SimpleNamespace(
        device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
    )
    fake = SimpleNamespace(
        model=Model(),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=0.3,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * pairs, length, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:pairs],
        "ref_rejected_logps": ref[pairs:],
    }
    trl_loss = DPOTrainer._compute_loss(fake, fake.model, inputs, return_outputs=False)
    sums = sequence_logps(per_token, shift_mask, normalize=False)
    ours = dpo_loss(sums[:pairs], sums[pairs:], ref[:pairs], ref[pairs:], beta=0.3).mean()
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)


def test_cvar_keeps_the_pairs_that_lean_least():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    margins = torch.tensor([0.5, -1.0, 2.0, 0.0])
    assert cvar_mean(losses, margins, 1.0).item() == pytest.approx(2.5)
    assert cvar_mean(losses, margins, 0.5).item() == pytest.approx(3.0)  # pairs 1 and 3
    assert cvar_mean(losses, margins, 0.3).item() == pytest.approx(3.0)  # ceil(1.2) = 2 pairs
    assert cvar_mean(losses, margins, 0.2).item() == pytest.approx(2.0)  # the single worst pair


def test_cvar_gradient_flows_only_through_selected_pairs():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    cvar_mean(losses, torch.tensor([0.5, -1.0, 2.0, 0.0]), 0.5).backward()
    assert losses.grad.tolist() == [0.0, 0.5, 0.0, 0.5]


def test_cvar_soft_risk_schedule_anneals_linearly():
    assert cvar_alpha_at(0, 0.5, 10) == 1.0
    assert cvar_alpha_at(5, 0.5, 10) == pytest.approx(0.75)
    assert cvar_alpha_at(10, 0.5, 10) == 0.5
    assert cvar_alpha_at(50, 0.5, 10) == 0.5
    assert cvar_alpha_at(0, 0.2, 0) == 0.2
