"""The judge of free replies: both orders, ties, parsing, its cache, a real HTTP server, free replies."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.axis import Axis
from autocustom.errors import UsageError
from autocustom.scoring.judge import (
    Judge,
    JudgeOptions,
    generate_replies,
    judge_notes,
    open_judge,
    parse_verdict,
)
from autocustom.scoring.stats import Estimate
from autocustom.scoring.winrate import position_consistency, win_rate
from tests.fake_openai_server import FakeOpenAIServer
from tests.scoring import CASUAL, FORMAL, QUESTIONS
from tests.serve_fixture import transformers_server  # noqa: F401  (registers the fixture)

AXIS = Axis("formal", "casual")
FORMAL_POLES = AXIS.toward("formal")


def _shown(messages) -> tuple[str, str]:
    """The replies a judge prompt shows as A and B."""
    text = messages[-1]["content"]
    a = text.split("Reply A:\n", 1)[1].split("\n\nReply B:", 1)[0]
    b = text.split("Reply B:\n", 1)[1].split("\n\nWhich reply", 1)[0]
    return a, b


def prefers_formal(messages) -> str:
    a, _ = _shown(messages)
    return "A" if a in FORMAL else "B"


def test_verdicts_are_taken_in_both_orders(scripted_backend):
    backend = scripted_backend(prefers_formal)
    verdicts = Judge(backend, AXIS).verdicts(QUESTIONS, FORMAL, CASUAL, FORMAL_POLES)
    assert verdicts.tolist() == [[1.0, 1.0]] * 4  # the method's formal reply wins shown first and second
    assert len(backend.calls) == 8
    shown = [_shown(c) for c in backend.calls]
    assert shown[0] == (FORMAL[0], CASUAL[0]) and shown[1] == (CASUAL[0], FORMAL[0])
    assert "more formal and less casual" in backend.calls[0][-1]["content"]
    against = Judge(scripted_backend(prefers_formal), AXIS).verdicts(QUESTIONS, CASUAL, FORMAL, FORMAL_POLES)
    assert against.tolist() == [[0.0, 0.0]] * 4


def test_a_judge_that_follows_the_position_gives_ties_and_no_consistency(scripted_backend):
    verdicts = Judge(scripted_backend(lambda _: "A"), AXIS).verdicts(QUESTIONS, FORMAL, CASUAL, FORMAL_POLES)
    assert verdicts.tolist() == [[1.0, 0.0]] * 4
    assert win_rate(verdicts).value == 0.5
    consistency = position_consistency(verdicts)
    assert consistency.value == 0.0
    (note,) = judge_notes("local:x", {"judge_consistency": consistency})
    assert "cannot be read" in note and "n=4" in note


def test_an_unreadable_verdict_counts_half(scripted_backend):
    verdicts = Judge(scripted_backend(lambda _: "neither"), AXIS).verdicts(
        QUESTIONS[:2], FORMAL[:2], CASUAL[:2], FORMAL_POLES
    )
    assert verdicts.tolist() == [[0.5, 0.5]] * 2
    assert position_consistency(verdicts).value == 0.0


def test_parse_verdict():
    for answer, expected in [
        ("A", "A"),
        ("Reply B is more formal", "B"),
        ("**A**", "A"),
        ("", None),
        ("AB", None),
    ]:
        assert parse_verdict(answer) == expected


def test_a_consistent_judge_is_said_to_be_read():
    (note,) = judge_notes("openai:gpt", {"judge_consistency": Estimate(0.9, 0.8, 1.0, 20)})
    assert "90%" in note and "tie" in note
    assert judge_notes(None, {}) == []


def test_the_openai_judge_over_http_is_cached(tmp_path):
    with FakeOpenAIServer(reply=prefers_formal) as server:
        options = JudgeOptions(judge="openai", judge_model="fake-model", base_url=server.base_url)
        with open_judge(options, AXIS, cache=tmp_path / "calls.sqlite") as judge:
            first = judge.verdicts(QUESTIONS, FORMAL, CASUAL, FORMAL_POLES)
        asked = server.chat_count
        with open_judge(options, AXIS, cache=tmp_path / "calls.sqlite") as judge:
            again = judge.verdicts(QUESTIONS, FORMAL, CASUAL, FORMAL_POLES)
        assert asked == 8 and server.chat_count == asked  # the second measurement asked nothing
    assert first.tolist() == again.tolist() == [[1.0, 1.0]] * 4


def test_bad_judge_options_are_refused():
    for options, message in [
        (JudgeOptions(judge="oracle"), "unknown --judge"),
        (JudgeOptions(judge="openai"), "--judge-model"),
        (JudgeOptions(judge="local", gen_tokens=0), "--gen-tokens"),
    ]:
        with pytest.raises(UsageError, match=message):
            options.check_judge()


@pytest.mark.slow
def test_the_judge_against_transformers_serve(transformers_server):  # noqa: F811
    options = JudgeOptions(
        judge="openai", judge_model=transformers_server.model, base_url=transformers_server.base_url
    )
    with open_judge(options, AXIS, cache=None) as judge:
        verdicts = judge.verdicts(QUESTIONS, FORMAL, CASUAL, FORMAL_POLES)
    assert verdicts.shape == (4, 2)
    assert set(np.unique(verdicts)) <= {0.0, 0.5, 1.0}
    assert (verdicts != 0.5).any()  # the served model's answers name a reply


def test_generate_replies_keeps_order_and_padding_side(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    side = tokenizer.padding_side
    replies = generate_replies(model, tokenizer, QUESTIONS[:3], max_new_tokens=4, batch_size=2)
    alone = [generate_replies(model, tokenizer, [q], max_new_tokens=4)[0] for q in QUESTIONS[:3]]
    assert replies == alone
    assert tokenizer.padding_side == side
