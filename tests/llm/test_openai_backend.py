"""OpenAIBackend against a real HTTP server on 127.0.0.1 with scripted faults."""

from __future__ import annotations

import socket

import pytest

from autocustom.errors import BackendError, UsageError
from autocustom.llm.base import GenerationParams
from autocustom.llm.cache import CachedBackend, CallCache
from autocustom.llm.factory import make_backend
from autocustom.llm.openai_backend import OpenAIBackend
from tests.fake_openai_server import FakeOpenAIServer

PARAMS = GenerationParams(max_new_tokens=32, temperature=0.3, top_p=0.9, seed=7)


def convo(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def backend_for(server: FakeOpenAIServer, **overrides) -> OpenAIBackend:
    """Small timeouts and backoff so fault tests take milliseconds, not the production seconds."""
    settings = {"concurrency": 2, "timeout": 5.0, "max_retries": 3, "backoff": 0.01, "max_backoff": 0.05}
    settings.update(overrides)
    return OpenAIBackend("fake-model", base_url=server.base_url, **settings)


def test_replies_in_order_and_params_sent():
    with FakeOpenAIServer(latency=0.01) as server:
        seen = {}
        replies = backend_for(server, concurrency=4).complete(
            [convo(f"q{i}") for i in range(10)], PARAMS, on_reply=seen.__setitem__
        )
        assert replies == [f"reply to: q{i}" for i in range(10)]
        assert seen == dict(enumerate(replies))
        body = server.requests[0]
        assert body["model"] == "fake-model"
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 32, 7)


@pytest.mark.parametrize(
    "fault",
    [{"status": 429, "retry_after": 0}, {"status": 500}, {"status": 503}, {"delay": 2.0}],
    ids=["429", "500", "503", "timeout"],
)
def test_retries_a_passing_failure(fault):
    with FakeOpenAIServer(script=[fault]) as server:
        replies = backend_for(server, timeout=0.5).complete([convo("hello")], PARAMS)
        assert replies == ["reply to: hello"]
        assert server.chat_count == 2


def test_gives_up_after_bounded_retries():
    with FakeOpenAIServer(script=[{"status": 500}] * 10) as server:
        with pytest.raises(BackendError, match="kept failing after 3 attempts"):
            backend_for(server, max_retries=2).complete([convo("hello")], PARAMS)
        assert server.chat_count == 3


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_fails_at_once(status):
    with FakeOpenAIServer(script=[{"status": status}]) as server:
        with pytest.raises(BackendError, match="refused the API key") as error:
            backend_for(server).complete([convo("hello")], PARAMS)
        assert "OPENAI_API_KEY" in str(error.value)
        assert server.chat_count == 1


def test_bad_request_is_not_retried():
    with FakeOpenAIServer(script=[{"status": 404}]) as server:
        with pytest.raises(BackendError, match="HTTP 404"):
            backend_for(server).complete([convo("hello")], PARAMS)
        assert server.chat_count == 1


def test_api_key_is_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    with FakeOpenAIServer(api_key="sk-right") as server:
        assert backend_for(server).complete([convo("a")], PARAMS) == ["reply to: a"]
        backend_for(server).check_reachable()
        with pytest.raises(BackendError, match="refused the API key"):
            backend_for(server, api_key="sk-wrong").check_reachable()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def test_unreachable_server_names_the_url():
    url = closed_port_url()
    backend = OpenAIBackend("m", base_url=url, max_retries=1, backoff=0.01, max_backoff=0.01)
    with pytest.raises(BackendError, match="cannot reach the server") as error:
        backend.complete([convo("a"), convo("b")], PARAMS)
    assert url in str(error.value)
    with pytest.raises(BackendError, match=url):
        backend.check_reachable()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(concurrency):
    with FakeOpenAIServer(latency=0.1) as server:
        replies = backend_for(server, concurrency=concurrency).complete(
            [convo(str(i)) for i in range(9)], PARAMS
        )
        assert replies == [f"reply to: {i}" for i in range(9)]
        assert server.max_in_flight <= concurrency
        if concurrency > 1:
            assert server.max_in_flight > 1


def test_repeated_calls_and_a_second_run_from_the_cache(tmp_path):
    batch = [convo(str(i)) for i in range(6)]
    with FakeOpenAIServer() as server:
        first = CachedBackend(backend_for(server), CallCache(tmp_path / "c.sqlite"))
        assert first.complete(batch, PARAMS) == first.complete(batch[:3], PARAMS) + first.complete(
            batch[3:], PARAMS
        )
        assert server.chat_count == 6
        again = CachedBackend(backend_for(server), CallCache(tmp_path / "c.sqlite"))
        assert again.complete(batch, PARAMS) == [f"reply to: {i}" for i in range(6)]
        assert server.chat_count == 6
        assert (again.calls_made, again.cache_hits) == (0, 6)


def test_key_resolution(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")
    OpenAIBackend("served-model", base_url="http://127.0.0.1:1/v1")  # self-hosted: placeholder key


def test_factory(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    local = make_backend("local", None, batch_size=4)
    assert (local.name, local.model) == ("local", "smollm2-135m")
    remote = make_backend("openai", "m", base_url="http://127.0.0.1:1/v1", concurrency=3)
    assert (remote.name, remote.model, remote.concurrency) == ("openai", "m", 3)
    with pytest.raises(UsageError, match="--model"):
        make_backend("openai", None)
    with pytest.raises(UsageError, match="local, openai"):
        make_backend("vllm", "m")
