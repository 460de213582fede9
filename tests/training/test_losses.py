"""The losses on values computed by hand, DPO against TRL's DPOTrainer, CVaR selection and schedule."""

from __future__ import annotations

import math

import pytest
import torch

from autocustom.tensors import token_logprobs
from autocustom.training.losses import (
    contrastive_loss,
    cvar_alpha_at,
    cvar_mean,
    dpo_loss,
    ipo_loss,
    log1mexp,
    sequence_logps,
    simpo_loss,
    unlikelihood,
)

log = math.log


def test_token_logprobs_pick_the_target_token():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    got = token_logprobs(logits, torch.tensor([1, 0]))
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


def test_dpo_matches_trl_sigmoid_loss(tmp_path, tiny_model_dir):
    """TRL's DPOTrainer, through its public API only, and ours give one loss on one batch.

    TRL has no public DPO loss function (the loss is inline in the private `DPOTrainer._compute_loss`),
    so the comparison goes through what is public and documented: DPOConfig, DPOTrainer on a
    prompt/chosen/rejected dataset, `get_train_dataloader` and `compute_loss`. TRL tokenises, pads
    and runs both models itself; we score the batch it built with the trainer's `answer_token_logps`.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from autocustom.tensors import answer_token_logps

    def tiny(noise: bool):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        if noise:  # a reference the policy differs from, so the loss is not log 2 whatever the margins
            generator = torch.Generator().manual_seed(1)
            with torch.no_grad():
                weight = model.get_input_embeddings().weight
                weight.add_(0.5 * torch.randn(weight.shape, generator=generator))
        return model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = Dataset.from_list(
        [  # answers of different lengths, each side longer in one pair
            {
                "prompt": "How do I boil pasta?",
                "chosen": " Salt the water, boil, add pasta.",
                "rejected": " lol",
            },
            {
                "prompt": "How do I pick a bank?",
                "chosen": " Compare fees.",
                "rejected": " Nearest one, who cares.",
            },
            {"prompt": "How do I take notes?", "chosen": " Key points, own words.", "rejected": " Don't."},
        ]
    )
    beta = 0.3
    args = DPOConfig(  # bf16=False: DPOConfig defaults to bf16, which autocasts the reference even on CPU
        output_dir=str(tmp_path),
        beta=beta,
        per_device_train_batch_size=3,
        bf16=False,
        report_to="none",
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=tiny(False), ref_model=tiny(True), args=args, train_dataset=data, processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch).item()

    ids, mask = batch["input_ids"], batch["attention_mask"]
    needed = batch["completion_mask"][:, 1:].bool()  # positions whose next token is a completion token
    sums = []
    with torch.no_grad():
        for model in (tiny(False), tiny(True)):  # fresh copies: nothing TRL did to its models carries over
            logps, _ = answer_token_logps(model, ids, mask, needed)
            sums.append(sequence_logps(logps, needed, normalize=False))
    (policy, reference), pairs = sums, ids.shape[0] // 2
    ours = dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], beta).mean().item()
    assert ours == pytest.approx(trl_loss, rel=1e-5)
    assert abs(ours - math.log(2)) > 1e-3  # the reference is not the policy: a real margin was compared


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
