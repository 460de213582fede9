from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autocustom.scoring.drift import drift_per_text, neutral_texts
from autocustom.scoring.mmlu import retention_subset


def test_neutral_texts_come_from_the_retention_side():
    texts = neutral_texts(5)
    assert len(texts) == 5
    for (prompt, continuation), q in zip(texts, retention_subset(5), strict=True):
        assert q.subject in prompt and continuation.endswith(q.choices[q.answer])


def test_drift_is_zero_for_the_same_model_and_grows_with_a_change(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = neutral_texts(3)
    np.testing.assert_allclose(
        drift_per_text(model, model, tokenizer, texts, batch_size=2, max_length=64), 0.0, atol=1e-6
    )
    with torch.no_grad():
        tuned.lm_head.weight.mul_(3.0)
    drift = drift_per_text(tuned, model, tokenizer, texts, batch_size=2, max_length=64)
    assert drift.shape == (3,) and (drift > 0).all()
    # per text, batched = alone
    alone = [drift_per_text(tuned, model, tokenizer, [t], max_length=64)[0] for t in texts[:2]]
    np.testing.assert_allclose(drift[:2], alone, atol=1e-5)
