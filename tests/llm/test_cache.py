"""CallCache on a real SQLite file, and CachedBackend's hits, misses, dedup and partial results."""

from __future__ import annotations

import dataclasses

import pytest

from autocustom.llm.base import GenerationParams
from autocustom.llm.cache import CachedBackend, CallCache

PARAMS = GenerationParams(max_new_tokens=16, temperature=0.0, seed=1)


def convo(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def echo(conversation) -> str:
    return "echo " + conversation[-1]["content"]


def test_put_get_and_len(tmp_path):
    cache = CallCache(tmp_path / "cache.sqlite")
    key = cache.key("local", "m", convo("hi"), PARAMS)
    assert cache.get(key) is None
    cache.put(key, "local", "m", convo("hi"), PARAMS, "hello")
    assert cache.get(key) == "hello"
    assert len(cache) == 1
    cache.close()


def test_key_depends_on_every_input():
    base = CallCache.key("local", "m", convo("hi"), PARAMS)
    variants = [
        CallCache.key("openai", "m", convo("hi"), PARAMS),
        CallCache.key("local", "m2", convo("hi"), PARAMS),
        CallCache.key("local", "m", convo("hi!"), PARAMS),
        CallCache.key("local", "m", [{"role": "system", "content": "hi"}], PARAMS),
        CallCache.key("local", "m", convo("hi"), dataclasses.replace(PARAMS, seed=2)),
        CallCache.key("local", "m", convo("hi"), dataclasses.replace(PARAMS, temperature=0.5)),
        CallCache.key("local", "m", convo("hi"), dataclasses.replace(PARAMS, max_new_tokens=17)),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert CallCache.key("local", "m", convo("hi"), GenerationParams(16, 0.0, 0.95, 1)) == base


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    with CallCache(path) as cache:
        key = cache.key("local", "m", convo("q"), PARAMS)
        cache.put(key, "local", "m", convo("q"), PARAMS, "ünïcode reply")
    with CallCache(path) as reopened:
        assert reopened.get(key) == "ünïcode reply"
        assert len(reopened) == 1


def test_cached_backend_counts_hits_and_misses(tmp_path, scripted_backend):
    inner = scripted_backend(echo)
    backend = CachedBackend(inner, CallCache(tmp_path / "c.sqlite"))
    assert (backend.name, backend.model) == (inner.name, inner.model)
    first = backend.complete([convo("a"), convo("b")], PARAMS)
    assert first == ["echo a", "echo b"]
    assert (backend.calls_made, backend.cache_hits) == (2, 0)
    seen = {}
    second = backend.complete([convo("b"), convo("c"), convo("a")], PARAMS, on_reply=seen.__setitem__)
    assert second == ["echo b", "echo c", "echo a"]
    assert seen == {0: "echo b", 1: "echo c", 2: "echo a"}
    assert (backend.calls_made, backend.cache_hits) == (3, 2)
    assert inner.calls == [convo("a"), convo("b"), convo("c")]
    backend.complete([convo("a")], dataclasses.replace(PARAMS, seed=2))  # new seed: a new call
    assert backend.calls_made == 4


def test_identical_conversations_are_sent_once(tmp_path, scripted_backend):
    inner = scripted_backend(echo)
    backend = CachedBackend(inner, CallCache(tmp_path / "c.sqlite"))
    seen = {}
    replies = backend.complete([convo("x"), convo("y"), convo("x")], PARAMS, on_reply=seen.__setitem__)
    assert replies == ["echo x", "echo y", "echo x"]
    assert seen == {0: "echo x", 1: "echo y", 2: "echo x"}
    assert inner.calls == [convo("x"), convo("y")]
    assert backend.calls_made == 2
    assert len(backend.cache) == 2


class FailsMidway:
    """Delivers the first `good` replies through on_reply, then raises, like a server dying."""

    name = "flaky"
    model = "flaky-model"

    def __init__(self, good: int) -> None:
        self.good = good

    def complete(self, conversations, params, on_reply=None):
        for index, conversation in enumerate(conversations[: self.good]):
            on_reply(index, echo(conversation))
        raise ConnectionError("server died")


def test_partial_results_survive_a_failure(tmp_path):
    path = tmp_path / "c.sqlite"
    batch = [convo(str(i)) for i in range(5)]
    with pytest.raises(ConnectionError):
        CachedBackend(FailsMidway(good=3), CallCache(path)).complete(batch, PARAMS)
    resumed = CachedBackend(FailsMidway(good=5), CallCache(path))
    assert len(resumed.cache) == 3
    assert resumed.complete(batch[:3], PARAMS) == ["echo 0", "echo 1", "echo 2"]
    assert (resumed.calls_made, resumed.cache_hits) == (0, 3)


def test_another_model_behind_the_same_name_or_server_is_not_answered_from_the_cache(tmp_path):
    from autocustom.llm.local_backend import LocalBackend
    from autocustom.llm.openai_backend import OpenAIBackend

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"first weights")
    before = LocalBackend(str(model)).identity
    assert str(model.resolve()) in before
    (model / "model.safetensors").write_bytes(b"retrained weights!")  # a new run into the same path
    assert LocalBackend(str(model)).identity != before

    served = OpenAIBackend("m", base_url="http://user:pw@host:8000/v1?api_key=x", api_key="k")
    other = OpenAIBackend("m", base_url="http://other:8000/v1", api_key="k")
    assert served.identity == "http://host:8000/v1 m" and other.identity != served.identity
    with CallCache(tmp_path / "c.sqlite") as cache:
        keys = {CachedBackend(b, cache).identity for b in (served, other)}
    assert len(keys) == 2
