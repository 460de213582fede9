from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.data.schema import Pair
from autocustom.score.judge import classifier_correct, fit_pole_classifier, generate_replies
from tests.score import CASUAL, FORMAL, QUESTIONS


def pairs(offset: int) -> list[Pair]:
    return [
        Pair(
            f"p{i}",
            "s",
            QUESTIONS[i],
            {"formal": FORMAL[(i + offset) % 4], "casual": CASUAL[(i + offset) % 4]},
        )
        for i in range(4)
    ]


def test_classifier_separates_the_poles_and_gen_lean_follows_it():
    classifier = fit_pole_classifier(pairs(0), "formal")
    assert classifier_correct(classifier, pairs(1), "formal").mean() >= 0.75
    assert classifier.predict(["I would be most grateful for your assistance, sir."]).tolist() == [1.0]
    assert classifier.predict(["lol yeah whatever dude"]).tolist() == [0.0]


def test_generate_replies_keeps_order_and_padding_side(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    side = tokenizer.padding_side
    replies = generate_replies(model, tokenizer, QUESTIONS[:3], max_new_tokens=4, batch_size=2)
    alone = [generate_replies(model, tokenizer, [q], max_new_tokens=4)[0] for q in QUESTIONS[:3]]
    assert replies == alone
    assert tokenizer.padding_side == side
