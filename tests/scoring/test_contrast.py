"""The pole-contrast judge: its score by hand, its sign on written replies, its validation, loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.axis import Axis
from autocustom.data.parsing import is_repetitive
from autocustom.data.schema import Pair
from autocustom.llm.chat import render_prompt
from autocustom.scoring.contrast import (
    READABLE_ACCURACY,
    ContrastJudge,
    contrast_notes,
    judge_readable,
    pole_condition,
    reply_sentence,
)
from autocustom.scoring.measure import METRIC, Observations
from autocustom.scoring.plan import EvalPlan
from autocustom.scoring.stats import Estimate
from tests.scoring import CASUAL, FORMAL, QUESTIONS

AXIS = Axis("formal", "casual")
FORMAL_POLES, CASUAL_POLES = AXIS.toward("formal"), AXIS.toward("casual")
JUDGE = ContrastJudge(AXIS, "contrast:base")
BATCHING = {"batch_size": 16, "max_length": 512}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_model_dir
    )


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), AutoTokenizer.from_pretrained(
        smollm2_dir
    )


def _by_hand(model, tokenizer, question: str, reply: str, pole: str) -> float:
    """Mean log-prob of the reply's tokens after the chat prompt told to answer `pole`'s way."""
    prompt = render_prompt(tokenizer, pole_condition(AXIS, pole).conversation(question))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    per_token = logprobs[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
    return float(per_token.mean())


def test_the_score_and_fluency_equal_a_by_hand_computation(tiny):
    model, tokenizer = tiny
    r, fluency = JUDGE.reply_scores(tiny, QUESTIONS[:2], [FORMAL[0], CASUAL[1]], FORMAL_POLES, **BATCHING)
    for i, (question, reply) in enumerate(zip(QUESTIONS[:2], [FORMAL[0], CASUAL[1]], strict=True)):
        told_formal = _by_hand(model, tokenizer, question, reply, "formal")
        told_casual = _by_hand(model, tokenizer, question, reply, "casual")
        assert fluency[i] == pytest.approx(told_formal, abs=1e-5)
        assert r[i] == pytest.approx(told_formal - told_casual, abs=1e-5)
    toward_casual, _ = JUDGE.reply_scores(
        tiny, QUESTIONS[:2], [FORMAL[0], CASUAL[1]], CASUAL_POLES, **BATCHING
    )
    np.testing.assert_allclose(toward_casual, -r, atol=1e-6)  # the other pole's score is its negative


def test_the_packaged_model_reads_formal_and_casual_replies_on_the_right_side(smollm2):
    formal, _ = JUDGE.reply_scores(smollm2, QUESTIONS, FORMAL, FORMAL_POLES, **BATCHING)
    casual, _ = JUDGE.reply_scores(smollm2, QUESTIONS, CASUAL, FORMAL_POLES, **BATCHING)
    assert (formal > 0).all() and (casual < 0).all()
    pairs = [
        Pair(f"p{i}", "s", q, {"formal": f, "casual": c})
        for i, (q, f, c) in enumerate(zip(QUESTIONS, FORMAL, CASUAL, strict=True))
    ]
    assert JUDGE.check(smollm2, pairs, FORMAL_POLES, **BATCHING).tolist() == [1.0] * 4
    swapped = [
        Pair(p.id, p.subarea, p.question, {"formal": p.answers["casual"], "casual": p.answers["formal"]})
        for p in pairs
    ]
    assert (
        JUDGE.check(smollm2, swapped, FORMAL_POLES, **BATCHING).tolist() == [0.0] * 4
    )  # a swapped pair fails


def test_a_loop_counts_as_repetitive_though_its_log_prob_can_be_higher(smollm2):
    natural = (
        "Thank you for asking. The report was delayed because the data arrived late; it is under review."
    )
    loop = "the report the report the report the report the report the report the report the report"
    assert not is_repetitive(natural) and is_repetitive(loop) and is_repetitive("") and is_repetitive(" ...")
    assert not is_repetitive("one two three four one two three four")  # twice is not a loop
    _, fluency = JUDGE.reply_scores(
        smollm2, ["Why was it late?"] * 2, [natural, loop], FORMAL_POLES, **BATCHING
    )
    # what repetition is for: a mean log-prob rates this loop above the natural reply
    assert fluency[1] > fluency[0]


def _estimate(value: float, n: int = 20) -> Estimate:
    return Estimate(value, value - 0.1, value + 0.1, n)


def test_an_unreadable_judge_is_said_so_in_words():
    low = {"judge_accuracy": _estimate(0.55)}
    assert (
        judge_readable(low) is False and judge_readable({"judge_accuracy": _estimate(0.9).to_dict()}) is True
    )
    assert judge_readable({}) is None
    lucky = {"judge_accuracy": Estimate(0.75, 0.5, 1.0, 4)}  # 3 of 4 pairs: no better than chance yet
    assert (
        judge_readable(lucky) is False and "reaches chance (50%)" in contrast_notes("contrast:base", lucky)[0]
    )
    (note,) = contrast_notes("contrast:base", low)
    assert "unreadable" in note and f"below {READABLE_ACCURACY:.0%}" in note and "n=20" in note
    metrics = {
        "judge_accuracy": _estimate(0.55).to_dict(),
        "reply_share": {"n": 12, "value": 0.5},
        "base_reply_share": {},
    }
    assert "cannot be read" in reply_sentence(metrics, "formal")


def test_fluency_and_repetition_are_put_in_words():
    metrics = {
        "judge_accuracy": _estimate(0.95),
        "fluency_vs_prompted": Estimate(-0.48, -0.6, -0.3, 60),
        "fluency_vs_base": Estimate(0.02, -0.05, 0.09, 60),
        "repetition": Estimate(0.1, 0.03, 0.18, 60),
        "base_repetition": Estimate(0.0, 0.0, 0.0, 60),
    }
    accuracy, prompted, base, loops = contrast_notes("contrast:base", metrics)
    assert "can be read" in accuracy
    assert "1.6x less likely per token than the judge's own replies" in prompted
    assert "not distinguishable from the base's unprompted replies" in base
    assert loops.startswith("10% [3%, 18%] of replies loop") and "the base's 0%" in loops


def test_the_reply_sentence_counts_replies():
    metrics = {
        "judge_accuracy": _estimate(0.9).to_dict(),
        "reply_share": {"value": 0.75, "n": 12},
        "base_reply_share": {"value": 0.25, "n": 12},
        "reply_shift": {"value": 0.3, "low": 0.1, "high": 0.5, "n": 12},
        "reply_share_gain": {"value": 0.5, "low": 0.25, "high": 0.75, "n": 12},
    }
    sentence = reply_sentence(metrics, "formal")
    assert "reads 9 of 12 held-out replies as formal, against 3 of the base's" in sentence
    assert "(paired change +0.50 [+0.25, +0.75]; reply shift +0.300" in sentence
    assert "more formal than the base's" in sentence
    assert reply_sentence({}, "formal") is None


def test_the_reply_share_gain_counts_replies_moved_across_net_of_those_moved_back():
    plan = EvalPlan(data="d", split="test", toward="formal", opposite="casual", pairs=())
    observations = Observations(
        contrast=np.array([0.4, 0.2, -0.1, 0.3, -0.5]),  # 3 of 5 read as formal
        base_contrast=np.array([-0.2, -0.1, 0.3, 0.1, -0.4]),  # 2 of 5: 2 moved across, 1 moved back
    )
    gain = METRIC["reply_share_gain"](plan, observations)
    assert gain.value == pytest.approx((2 - 1) / 5) and gain.n == 5
    assert gain.low <= gain.value <= gain.high
    share, base = METRIC["reply_share"](plan, observations), METRIC["base_reply_share"](plan, observations)
    assert gain.value == pytest.approx(share.value - base.value)
    assert METRIC["reply_share_gain"](plan, Observations(contrast=observations.contrast)) is None  # no base
