"""The fast scorer must give the numbers of a plain one-sequence-at-a-time computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.data.schema import Pair
from autocustom.llm.chat import PLAIN, PromptCondition, encode_prompt_answer, render_prompt
from autocustom.scoring.logprobs import Group, _plan_batches, answer_logprobs, pair_margins, score_groups
from tests.scoring import CASUAL, FORMAL, QUESTIONS

PAIRS = [
    Pair(f"p{i}", "s1", q * (1 + i), {"formal": f, "casual": c * (1 + i % 2)})
    for i, (q, f, c) in enumerate(zip(QUESTIONS, FORMAL, CASUAL, strict=True))
]


def plain_logprob(model, tokenizer, prompt: str, answer: str, max_length: int = 512) -> float:
    encoded = encode_prompt_answer(tokenizer, prompt, answer, max_length)
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    targets = ids[0, encoded.prompt_length :]
    return logp[encoded.prompt_length - 1 : -1].gather(-1, targets[:, None]).mean().item()


def plain_margins(model, tokenizer, pairs, target, condition=PLAIN, max_length=512) -> np.ndarray:
    out = []
    for pair in pairs:
        prompt = render_prompt(tokenizer, condition.conversation(pair.question))
        other = next(p for p in pair.answers if p != target)
        out.append(
            plain_logprob(model, tokenizer, prompt, pair.answers[target], max_length)
            - plain_logprob(model, tokenizer, prompt, pair.answers[other], max_length)
        )
    return np.array(out)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_model_dir
    )


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_pair_margins_match_plain_computation(tiny, batch_size):
    model, tokenizer = tiny
    condition = PromptCondition(system="Be brief.")
    fast = pair_margins(model, tokenizer, PAIRS, "casual", condition=condition, batch_size=batch_size)
    np.testing.assert_allclose(fast, plain_margins(model, tokenizer, PAIRS, "casual", condition), atol=1e-4)


def test_pair_margins_with_truncation_match(tiny):
    model, tokenizer = tiny
    fast = pair_margins(model, tokenizer, PAIRS, "formal", max_length=24)
    np.testing.assert_allclose(
        fast, plain_margins(model, tokenizer, PAIRS, "formal", max_length=24), atol=1e-4
    )


def test_answer_logprobs_match_and_keep_input_order(tiny):
    model, tokenizer = tiny
    prompts = [render_prompt(tokenizer, PLAIN.conversation(p.question)) for p in PAIRS]
    answers = [p.answers["formal"] for p in PAIRS]
    fast = answer_logprobs(model, tokenizer, prompts, answers, batch_size=2)
    expected = [plain_logprob(model, tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    np.testing.assert_allclose(fast, expected, atol=1e-4)


def test_groups_mixing_one_token_and_longer_continuations_match(tiny):
    model, _ = tiny
    groups = [Group([5, 9, 14], [[7], [8, 3, 2]]), Group([4], [[6]]), Group([3, 3, 9, 9, 1], [[2, 2]])]
    fast = score_groups(model, groups, batch_size=4)
    for group, scores in zip(groups, fast, strict=True):
        for continuation, score in zip(group.continuations, scores, strict=True):
            ids = torch.tensor([group.prompt + continuation])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)[len(group.prompt) - 1 : -1]
            expected = logp.gather(-1, torch.tensor(continuation)[:, None]).squeeze(-1).numpy()
            np.testing.assert_allclose(score, expected, atol=1e-4)


def plan_cost(groups, batches, overhead) -> int:
    total = 0
    for batch in batches:
        rows = sum(len(groups[i].continuations) for i in batch)
        longest = max(len(c) for i in batch for c in groups[i].continuations)
        total += overhead + len(batch) * max(len(groups[i].prompt) for i in batch) + rows * (longest - 1)
    return total


def contiguous_plans(order, groups, batch_size):
    """Every split of `order` into consecutive batches within the row limit (brute force)."""
    if not order:
        yield []
        return
    for cut in range(1, len(order) + 1):
        head = order[:cut]
        if cut > 1 and sum(len(groups[i].continuations) for i in head) > batch_size:
            break
        for rest in contiguous_plans(order[cut:], groups, batch_size):
            yield [head, *rest]


@pytest.mark.parametrize("seed", range(5))
def test_batch_plan_is_the_cheapest_split_of_the_sorted_order(seed):
    rng = np.random.default_rng(seed)
    groups = [
        Group(
            [1] * int(rng.integers(1, 200)),
            [[1] * int(rng.integers(1, 40)) for _ in range(int(rng.integers(1, 4)))],
        )
        for _ in range(8)
    ]
    plan = _plan_batches(groups, batch_size=5, overhead=32)
    assert sorted(i for batch in plan for i in batch) == list(range(8))
    assert all(len(b) == 1 or sum(len(groups[i].continuations) for i in b) <= 5 for b in plan)
    order = [i for batch in plan for i in batch]
    best = min(plan_cost(groups, p, 32) for p in contiguous_plans(order, groups, 5))
    assert plan_cost(groups, plan, 32) == best


def test_one_long_prompt_gets_its_own_batch():
    groups = [Group([1] * 10, [[1, 1]]) for _ in range(6)] + [Group([1] * 500, [[1, 1]])]
    plan = _plan_batches(groups, batch_size=16, overhead=32)
    assert plan == [[6], [0, 1, 2, 3, 4, 5]]
    assert _plan_batches(groups, batch_size=16, overhead=10_000) == [[6, 0, 1, 2, 3, 4, 5]]


def test_margin_is_antisymmetric_in_target(tiny):
    model, tokenizer = tiny
    np.testing.assert_allclose(
        pair_margins(model, tokenizer, PAIRS, "formal"),
        -pair_margins(model, tokenizer, PAIRS, "casual"),
        atol=1e-6,
    )


def test_unknown_pole_is_rejected(tiny):
    with pytest.raises(ValueError, match="no answer for pole"):
        pair_margins(*tiny, PAIRS, "neutral")


@pytest.mark.slow
def test_packaged_model_matches_plain_computation(smollm2_dir):
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    fast = pair_margins(model, tokenizer, PAIRS, "formal", batch_size=4)
    np.testing.assert_allclose(fast, plain_margins(model, tokenizer, PAIRS, "formal"), atol=1e-4)
