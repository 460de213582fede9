"""The fast scorer must give the numbers of a plain one-sequence-at-a-time computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.chat import PLAIN, PromptCondition, encode_prompt_answer, render_prompt
from autocustom.data.schema import Pair
from autocustom.score.logprobs import answer_logprobs, pair_margins
from tests.score import CASUAL, FORMAL, QUESTIONS

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
