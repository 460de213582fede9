from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.scoring.mmlu import (
    CONTINUATIONS,
    MMLUQuestion,
    is_retention,
    load_mmlu,
    mmlu_correct,
    mmlu_prompt,
    regularizer_pool,
    retention_subset,
)

Q = MMLUQuestion(" What is 2 + 2? ", ("3", "4", "5", "22"), 1, "elementary mathematics", 0)


def test_prompt_is_the_harness_default_format():
    assert mmlu_prompt(Q) == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    )
    assert CONTINUATIONS == (" A", " B", " C", " D")


def test_retention_subset_is_stratified_and_fixed():
    subset = retention_subset(114)
    subjects = {q.subject for q in load_mmlu()}
    assert len(subjects) == 57
    counts = {s: sum(q.subject == s for q in subset) for s in subjects}
    assert set(counts.values()) == {2}
    assert [q.id for q in retention_subset(114)] == [q.id for q in subset]
    assert [q.id for q in retention_subset(10, seed=1)] != [q.id for q in retention_subset(10, seed=0)]


def test_regularizer_pool_never_overlaps_evaluation():
    pool = {q.id for q in regularizer_pool()}
    for seed in (0, 1):
        assert not pool & {q.id for q in retention_subset(570, seed=seed)}
    assert all(is_retention(q) for q in retention_subset(570))
    biology = regularizer_pool(["high_school_biology"])
    assert biology and all(q.subject == "high school biology" for q in biology)


def test_mmlu_correct_is_argmax_of_letter_likelihoods(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    questions = retention_subset(6)
    got = mmlu_correct(model, tokenizer, questions, batch_size=8)
    expected = []
    for q in questions:
        ids = tokenizer(mmlu_prompt(q))["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
        letters = [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in CONTINUATIONS]
        expected.append(float(int(torch.argmax(logp[letters])) == q.answer))
    np.testing.assert_array_equal(got, expected)
