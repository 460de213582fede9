"""The trainer's riskiest paths against computations that share none of its code.

Every expected value here comes from plain full-logits forwards (log_softmax over the whole vocabulary,
one forward per batch or per sequence) and the loss functions of autocustom.training.losses, never from
the trainer's masked `logits_to_keep` projection, its stacking of regulariser rows under pair rows or
its precomputed reference log-probs: that is what is being checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from autocustom.data.io import load_dataset_dir
from autocustom.errors import UsageError
from autocustom.scoring.logprobs import pair_margins
from autocustom.training.config import TrainConfig
from autocustom.training.data import PairCollator, PairDataset, encode_pairs
from autocustom.training.losses import contrastive_loss, dpo_loss, ipo_loss
from autocustom.training.pair_trainer import PairTrainer, reference_logps
from autocustom.training.regularizer import MMLURegularizer
from autocustom.training.trainer import train
from tests.sample_dataset import write_small_dataset
from tests.training import SMALL

LENGTH = 96  # pair rows are 56-63 tokens: untruncated, so a batch of pairs has right padding

# Regulariser questions (MMLU-shaped; only what mmlu_prompt reads). The short ones encode to ~49-54
# tokens, narrower than the pair rows; the long one to ~90, wider: the stacked forward pads either side.
SHORT = [
    SimpleNamespace(
        question="What is 2 + 2?", choices=("3", "4", "5", "22"), answer=1, subject="elementary mathematics"
    ),
    SimpleNamespace(
        question="Which gas do plants take in from the air to make sugar in sunlight?",
        choices=("Oxygen", "Nitrogen", "Carbon dioxide", "Helium"),
        answer=2,
        subject="high school biology",
    ),
]
LONG = SimpleNamespace(
    question=(
        "A train leaves the station at nine in the morning travelling at sixty miles per hour, and a second "
        "train leaves the same station an hour later travelling at eighty miles per hour on a parallel "
        "track. At what time does the second train catch up with the first?"
    ),
    choices=("At noon", "At one in the afternoon", "At two in the afternoon", "At three in the afternoon"),
    answer=1,
    subject="high school mathematics",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("data"), per_subarea=3)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def examples(dataset, tokenizer):
    pairs = load_dataset_dir(dataset).splits["train"]
    return encode_pairs(tokenizer, pairs, "formal", "casual", LENGTH)


def fresh(model_dir) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def perturbed(model_dir) -> torch.nn.Module:
    """The tiny model with seeded noise on half the (tied) embedding rows: a base the policy differs from.

    The KL to it then varies from position to position (5-10 nats), so a position taken or dropped by
    mistake moves the mean: noise on every weight gives a near-constant KL that hides such a slip.
    """
    model = fresh(model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        rows = torch.rand(embedding.shape[0], generator=generator) < 0.5
        embedding[rows] += 0.5 * torch.randn(int(rows.sum()), embedding.shape[1], generator=generator)
    return model


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def full_logprobs(model, ids, mask) -> torch.Tensor:
    """log_softmax over the full vocabulary at every position, float32: [N, T, V]."""
    return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)


def token_logps(model, ids, mask, answer) -> torch.Tensor:
    """log p(token t+1 | ..t) at the answer positions (0 elsewhere), from one plain forward: [N, T-1]."""
    picked = full_logprobs(model, ids, mask)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return picked * answer


def pair_stats(model, batch):
    """(target, opposite) token log-probs and masks, summed and per-token-mean log-probs of a pair batch."""
    pairs = batch["input_ids"].shape[0] // 2
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"], batch["answer_mask"])
    mask = batch["answer_mask"].float()
    sums = logps.sum(-1)
    means = sums / mask.sum(-1)

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:pairs], x[pairs:]

    return SimpleNamespace(
        logps=split(logps),
        mask=split(mask),
        sums=split(sums),
        means=split(means),
        lengths=split(mask.sum(-1)),
    )


def collate(tokenizer, examples, reference=None):
    dataset = PairDataset(examples, reference)
    return PairCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(examples))])


def pair_trainer(model, tmp_path, *, reference=None, regularizer=None, **overrides) -> PairTrainer:
    config = TrainConfig(data="unused", toward="formal", out=str(tmp_path / "run"), **overrides)
    args = TrainingArguments(
        output_dir=str(tmp_path / "checkpoints"),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = PairTrainer(model=model, args=args, config=config, regularizer=regularizer, reference=reference)
    model.train()  # the regulariser joins only in training mode (Trainer.train would set it)
    return trainer


# 1. the MMLU regulariser through compute_loss: rows stacked under the pairs, one forward


@pytest.mark.parametrize("kind", ["kl", "nll"])
@pytest.mark.parametrize("questions", [SHORT, [LONG, SHORT[0]]], ids=["narrower", "wider"])
def test_regulariser_in_the_stacked_forward_matches_separate_forwards(
    tmp_path, tiny_model_dir, tokenizer, examples, kind, questions
):
    policy, base = fresh(tiny_model_dir), perturbed(tiny_model_dir)
    regularizer = MMLURegularizer(tokenizer, questions, kind, batch_size=2, max_tokens=128)
    trainer = pair_trainer(
        policy, tmp_path, reference=base, regularizer=regularizer, reg=kind, reg_weight=0.5
    )
    batch = collate(tokenizer, examples[:2])
    reg_ids, reg_attention, reg_answer = regularizer.batch(0, torch.device("cpu"))  # the first micro-step's
    pair_width, reg_width = batch["input_ids"].shape[1], reg_ids.shape[1]
    assert (reg_width < pair_width) if questions is SHORT else (reg_width > pair_width)
    assert reg_attention.sum(-1).unique().numel() == 2  # padding inside the regulariser rows too

    loss = trainer.compute_loss(policy, batch)

    s = pair_stats(policy, batch)
    pair_loss = contrastive_loss(s.logps[0], s.mask[0], s.logps[1], s.mask[1], 1.0).mean()
    tuned = full_logprobs(policy, reg_ids, reg_attention)
    if kind == "kl":
        reference = full_logprobs(base, reg_ids, reg_attention)
        kl = (reference.exp() * (reference - tuned)).sum(-1)[:, :-1]  # [R, T-1]: KL(base || tuned)
        reg = kl[reg_attention[:, 1:].bool()].mean()  # every position that predicts a real token
        assert kl[reg_attention[:, 1:].bool()].std().item() > 0.5  # a misplaced position would show
    else:
        letter = tuned[:, :-1].gather(-1, reg_ids[:, 1:, None]).squeeze(-1)
        reg = -((letter * reg_answer).sum(-1) / reg_answer.sum(-1)).mean()
    assert loss.item() == pytest.approx((pair_loss + 0.5 * reg).item(), abs=1e-5)


def test_kl_regulariser_is_zero_when_the_policy_is_the_base(tmp_path, tiny_model_dir, tokenizer, examples):
    policy, base = fresh(tiny_model_dir), fresh(tiny_model_dir)  # two copies, as train() loads them
    regularizer = MMLURegularizer(tokenizer, [LONG, *SHORT], "kl", batch_size=3, max_tokens=128)
    trainer = pair_trainer(
        policy, tmp_path, reference=base, regularizer=regularizer, reg="kl", reg_weight=5.0
    )
    batch = collate(tokenizer, examples[:2])
    loss = trainer.compute_loss(policy, batch)
    s = pair_stats(policy, batch)
    pair_loss = contrastive_loss(s.logps[0], s.mask[0], s.logps[1], s.mask[1], 1.0).mean()
    assert loss.item() == pytest.approx(pair_loss.item(), abs=1e-5)


# 3. CVaR below 1: the mean over the pairs that lean least


def test_cvar_averages_the_pairs_with_the_smallest_margins(tmp_path, tiny_model_dir, tokenizer, examples):
    policy = fresh(tiny_model_dir)
    trainer = pair_trainer(policy, tmp_path, cvar_alpha=0.5, cvar_warmup=0, reg_weight=0.0)
    batch = collate(tokenizer, examples[:3])  # ceil(0.5 * 3) = 2 pairs kept
    loss = trainer.compute_loss(policy, batch)

    s = pair_stats(policy, batch)
    per_pair = contrastive_loss(s.logps[0], s.mask[0], s.logps[1], s.mask[1], 1.0)
    margins = s.means[0] - s.means[1]
    order = torch.argsort(margins)
    assert (margins[order[2]] - margins[order[1]]).item() > 1e-4  # the selection is not a numerical tie
    expected = per_pair[order[:2]].mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(per_pair.mean().item() - expected.item()) > 1e-4  # differs from the plain mean
    assert abs(per_pair[order[1:]].mean().item() - expected.item()) > 1e-4  # and from the wrong tail


# 4. the DPO reference: precomputed once, and at step 0 the policy sits exactly on it


def test_reference_logps_match_one_pair_at_a_time(tiny_model_dir, tokenizer, examples):
    reference = fresh(tiny_model_dir)
    chosen = examples[:5]
    config = TrainConfig(data="unused", toward="formal", out="unused", eval_batch_size=3)  # chunks of 3 and 2
    got = reference_logps(reference, chosen, tokenizer, config)
    assert got.shape == (5, 2)

    def answer_sum(ids: list[int], prompt: int) -> float:
        x = torch.tensor([ids])
        picked = full_logprobs(reference, x, torch.ones_like(x))[0, :-1].gather(-1, x[0, 1:, None])
        return picked[prompt - 1 :].sum().item()  # the log-probs of tokens prompt..end

    expected = torch.tensor(
        [
            [answer_sum(e.target_ids, e.target_prompt), answer_sum(e.opposite_ids, e.opposite_prompt)]
            for e in chosen
        ]
    )
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert (got[:, 0] != got[:, 1]).all()  # target and opposite columns are not the same numbers


def test_dpo_loss_is_log_2_when_the_policy_is_the_reference(tmp_path, tiny_model_dir, tokenizer, examples):
    reference = fresh(tiny_model_dir)
    config = TrainConfig(data="unused", toward="formal", out="unused", eval_batch_size=2)
    ref = reference_logps(reference, examples[:4], tokenizer, config)
    policy = fresh(tiny_model_dir)
    trainer = pair_trainer(policy, tmp_path, reference=reference, loss="dpo", reg_weight=0.0)
    for i in range(4):  # a one-pair batch: its loss is that pair's loss
        one = collate(tokenizer, examples[i : i + 1], ref[i : i + 1])
        assert trainer.compute_loss(policy, one).item() == pytest.approx(math.log(2), abs=1e-5)
    assert trainer.compute_loss(policy, collate(tokenizer, examples[:4], ref)).item() == pytest.approx(
        math.log(2), abs=1e-5
    )
    # a reference that is not the policy's own moves it off log 2: the check above can fail
    shifted = collate(tokenizer, examples[:4], ref + torch.tensor([[5.0, -5.0]]))
    assert trainer.compute_loss(policy, shifted).item() == pytest.approx(math.log1p(math.e), abs=1e-5)


# 2 and 6. through train(): IPO, DPO and SimPO move the model; the losses are what they should be


class Spy:
    """Records, for every training micro-step, the weights it saw, its inputs and its per-pair losses."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[SimpleNamespace] = []
        compute_loss, pair_loss = PairTrainer.compute_loss, PairTrainer._pair_loss

        def spy_compute_loss(trainer, model, inputs, *args, **kwargs):
            call = SimpleNamespace(
                state={k: v.detach().clone() for k, v in model.state_dict().items()},
                inputs={k: v.detach().clone() for k, v in inputs.items()},
                per_pair=None,
            )
            self.calls.append(call)
            loss = compute_loss(trainer, model, inputs, *args, **kwargs)
            call.loss = float(loss.detach())
            return loss

        def spy_pair_loss(trainer, *args, **kwargs):
            per_pair = pair_loss(trainer, *args, **kwargs)
            self.calls[-1].per_pair = per_pair.detach().clone()
            return per_pair

        monkeypatch.setattr(PairTrainer, "compute_loss", spy_compute_loss)
        monkeypatch.setattr(PairTrainer, "_pair_loss", spy_pair_loss)


def run(dataset, out: Path, model_dir, **overrides):
    config = TrainConfig(data=str(dataset), out=str(out), model=str(model_dir), **{**SMALL, **overrides})
    return train(config)


def assert_moved_from_base(out: Path, model_dir, dataset, tokenizer) -> None:
    base, tuned = fresh(model_dir), fresh(out / "model")
    before, after = params(base), params(tuned)
    assert all(not torch.equal(after[name], before[name]) for name in before)  # every tensor trained
    val_pairs = load_dataset_dir(dataset).splits["validation"]
    kwargs = {"batch_size": 8, "max_length": 48}
    base_margins = pair_margins(base, tokenizer, val_pairs, "formal", **kwargs)
    tuned_margins = pair_margins(tuned, tokenizer, val_pairs, "formal", **kwargs)
    assert np.abs(tuned_margins - base_margins).max() > 1e-3


def test_ipo_through_train_matches_ipo_loss_by_hand(
    tmp_path, dataset, tiny_model_dir, tokenizer, monkeypatch
):
    spy = Spy(monkeypatch)
    out = tmp_path / "run"
    # max_length 96: untruncated answers of different lengths, so IPO's per-token normalisation shows
    result = run(dataset, out, tiny_model_dir, loss="ipo", max_steps=2, eval_steps=1, max_length=LENGTH)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and result.steps == 2
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert json.loads((out / "run_config.json").read_text())["loss"] == "ipo"
    assert len(spy.calls) == 2
    assert_moved_from_base(out, tiny_model_dir, dataset, tokenizer)

    base = fresh(tiny_model_dir)
    beta = 0.1
    for step, call in enumerate(spy.calls):
        policy = fresh(tiny_model_dir)
        policy.load_state_dict(call.state)  # the weights this micro-step saw
        s, ref = pair_stats(policy, call.inputs), pair_stats(base, call.inputs)
        assert (s.lengths[0] != s.lengths[1]).all()
        expected = ipo_loss(*s.sums, *ref.sums, *s.lengths, beta)
        assert torch.allclose(call.per_pair, expected, rtol=1e-5, atol=1e-4), step
        assert call.loss == pytest.approx(expected.mean().item(), rel=1e-5)
        # the reference train() precomputed is the base's, row by row, column by column
        assert torch.allclose(call.inputs["reference"], torch.stack(ref.sums, dim=1), rtol=1e-5, atol=1e-4)
    # step 0: policy == reference, h = 0, so every pair's loss is 1/(2 beta)^2
    assert torch.allclose(spy.calls[0].per_pair, torch.full((2,), (1 / (2 * beta)) ** 2), atol=1e-3)
    assert (spy.calls[1].per_pair - (1 / (2 * beta)) ** 2).abs().max() > 1e-3  # step 1 had moved


@pytest.mark.parametrize("loss", ["dpo", "simpo"])
def test_dpo_and_simpo_move_the_model(tmp_path, dataset, tiny_model_dir, tokenizer, monkeypatch, loss):
    spy = Spy(monkeypatch)
    out = tmp_path / "run"
    result = run(dataset, out, tiny_model_dir, loss=loss, max_steps=3, eval_steps=3)
    assert result.steps == 3 and len(spy.calls) == 3
    assert_moved_from_base(out, tiny_model_dir, dataset, tokenizer)
    if loss == "dpo":  # train()'s own reference: at step 0 the policy is on it, every pair at log 2
        assert torch.allclose(spy.calls[0].per_pair, torch.full((2,), math.log(2)), atol=1e-5)
        # and the loss is DPO of the policy's sums against the base's, at every step
        base = fresh(tiny_model_dir)
        for call in spy.calls:
            policy = fresh(tiny_model_dir)
            policy.load_state_dict(call.state)
            s, ref = pair_stats(policy, call.inputs), pair_stats(base, call.inputs)
            expected = dpo_loss(*s.sums, *ref.sums, 0.1)
            assert torch.allclose(call.per_pair, expected, rtol=1e-5, atol=1e-5)


def test_regulariser_leaves_out_questions_longer_than_its_budget(tokenizer):
    regularizer = MMLURegularizer(tokenizer, [LONG, *SHORT], "nll", batch_size=2, max_tokens=70)
    ids, _attention, _answer = regularizer.batch(0, torch.device("cpu"))
    assert ids.shape[1] <= 70  # the ~90-token question is not in any batch
    wrapped, _, _ = regularizer.batch(1, torch.device("cpu"))  # the pool of two repeats in order
    assert torch.equal(ids, wrapped)
    with pytest.raises(UsageError, match="--reg-max-tokens 10"):
        MMLURegularizer(tokenizer, SHORT, "nll", batch_size=1, max_tokens=10)
