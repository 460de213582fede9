"""OpenAIBackend against a real OpenAI-compatible server: `transformers serve` with SmolLM2 on CPU."""

from __future__ import annotations

import pytest

from autocustom.llm.base import GenerationParams
from autocustom.llm.openai_backend import OpenAIBackend
from tests.serve_fixture import transformers_server  # noqa: F401  (registers the fixture)


@pytest.mark.slow
def test_openai_backend_talks_to_transformers_serve(transformers_server):  # noqa: F811
    backend = OpenAIBackend(transformers_server.model, base_url=transformers_server.base_url, concurrency=2)
    backend.check_reachable()
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a fruit."}],
    ]
    seen = {}
    replies = backend.complete(
        conversations, GenerationParams(max_new_tokens=16, temperature=0.0), on_reply=seen.__setitem__
    )
    assert len(replies) == 2
    assert all(reply.strip() for reply in replies)
    assert seen == dict(enumerate(replies))
    assert "Paris" in replies[0]  # greedy SmolLM2 knows this one: the reply answers this conversation
