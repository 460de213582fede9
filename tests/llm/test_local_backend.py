"""LocalBackend on the tiny random model: batching, left padding, seeding, order."""

from __future__ import annotations

import pytest

from autocustom.errors import ModelLoadError
from autocustom.llm.base import GenerationParams
from autocustom.llm.local_backend import LocalBackend

# Lengths differ a lot so length sorting reorders them and batches need padding.
QUESTIONS = [
    "Hi.",
    "What should a city spend its budget on first, and why would anyone disagree with that?",
    "Name a colour.",
    "Is it better to rent or to buy a home when prices are high and rates are rising?",
    "Why?",
]


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model re-drawn with large weights: the default init greedily emits only newlines,
    which strip to empty replies and would make batched-vs-single comparisons vacuous."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 1.0
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("varied-model")
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def conversations():
    return [[{"role": "user", "content": q}] for q in QUESTIONS]


def test_greedy_batched_equals_one_at_a_time(varied_model_dir):
    params = GenerationParams(max_new_tokens=12, temperature=0.0)
    batched = LocalBackend(str(varied_model_dir), device="cpu", batch_size=4)
    seen = {}
    replies = batched.complete(conversations(), params, on_reply=seen.__setitem__)
    assert len(replies) == len(QUESTIONS)
    assert all(replies) and len(set(replies)) == len(replies)  # replies differ: each follows its prompt
    assert seen == dict(enumerate(replies))
    single = LocalBackend(str(varied_model_dir), device="cpu", batch_size=1)
    assert replies == [single.complete([c], params)[0] for c in conversations()]


def test_sampling_is_seeded(varied_model_dir):
    backend = LocalBackend(str(varied_model_dir), device="cpu", batch_size=2)
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=3)
    first = backend.complete(conversations(), params)
    assert backend.complete(conversations(), params) == first
    other = backend.complete(conversations(), GenerationParams(8, 1.0, 1.0, seed=4))
    assert other != first


def test_a_sampled_reply_is_the_same_in_any_batch_and_repeats_differ(varied_model_dir):
    """What a resumed `generate` relies on: it batches only the prompts not yet cached."""
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    together = LocalBackend(str(varied_model_dir), device="cpu", batch_size=4).complete(
        conversations(), params
    )
    alone = LocalBackend(str(varied_model_dir), device="cpu", batch_size=1)
    assert [alone.complete([c], params)[0] for c in conversations()] == together
    assert alone.complete(conversations()[2:], params) == together[2:]  # as a resume regroups them
    repeated = alone.complete([conversations()[0]] * 4, params)
    assert len(set(repeated)) > 1 and repeated[0] == together[0]


def test_empty_batch_loads_nothing():
    backend = LocalBackend("/no/such/model")
    assert backend.complete([], GenerationParams()) == []
    assert backend.model == "/no/such/model"


def test_bad_path_raises_model_load_error():
    with pytest.raises(ModelLoadError):
        LocalBackend("/no/such/model").complete([[{"role": "user", "content": "x"}]], GenerationParams())
