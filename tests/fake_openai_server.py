"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It speaks enough of the API for the `openai` client (POST /v1/chat/completions, GET /v1/models),
computes each reply from the request's messages, and injects scripted faults, so retry, timeout,
concurrency and resume logic run against real sockets rather than mocks.

API::

    from tests.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(
        reply=lambda messages: "echo: " + messages[-1]["content"],  # default: "reply to: <last content>"
        latency=0.0,        # seconds every chat request sleeps before answering (concurrency tests)
        script=[            # faults for the first requests, consumed one per request in arrival order
            {"status": 429, "retry_after": 0},  # HTTP 429 with a Retry-After header (seconds)
            {"status": 500},                    # any HTTP status with an OpenAI-style error body
            {"delay": 5.0},                     # sleep, then answer normally (a timeout for the client)
            {"status": 401},                    # a refused key
        ],
        api_key=None,       # when set, requests without "Authorization: Bearer <api_key>" get 401
        model="fake-model", # the id listed by GET /v1/models
    ) as server:
        server.base_url       # "http://127.0.0.1:PORT/v1": pass as base_url to OpenAIBackend
        server.requests       # every chat request body (dicts), in arrival order, faults included
        server.max_in_flight  # the most chat requests it was handling at one time
        server.chat_count     # len(server.requests), read under the lock

`reply` runs in the server's handler threads; it may raise to produce an HTTP 500. The server stops
(and its port closes) when the `with` block ends; `start()` / `stop()` do the same by hand.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Messages = list[dict[str, str]]


def default_reply(messages: Messages) -> str:
    return "reply to: " + (messages[-1]["content"] if messages else "")


class FakeOpenAIServer:
    """See the module docstring for the API."""

    def __init__(
        self,
        reply: Callable[[Messages], str] = default_reply,
        latency: float = 0.0,
        script: list[dict[str, Any]] | None = None,
        api_key: str | None = None,
        model: str = "fake-model",
    ) -> None:
        self.reply = reply
        self.latency = latency
        self.script = list(script or [])
        self.api_key = api_key
        self.model = model
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def start(self) -> FakeOpenAIServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))  # port 0: a free port
        self._server.daemon_threads = True  # a handler sleeping on a scripted delay must not block stop()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Called by the handler threads.
    def _begin(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Record a chat request; return the fault scripted for it, if any."""
        with self._lock:
            self._requests.append(body)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self.script.pop(0) if self.script else None

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.reply(body.get("messages", []))
        return {
            "id": f"chatcmpl-fake-{self.chat_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0},
        }


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models" and self._authorized():
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            elif self.path.rstrip("/") == "/v1/models":
                self._send_error(401, "invalid api key")
            else:
                self._send_error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_error(404, f"no route {self.path}")
                return
            body = json.loads(raw or b"{}")
            fault = server._begin(body)
            try:
                self._answer(body, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer
            finally:
                server._end()

        def _answer(self, body: dict[str, Any], fault: dict[str, Any] | None) -> None:
            if not self._authorized():
                self._send_error(401, "invalid api key")
                return
            fault = fault or {}
            time.sleep(fault.get("delay", 0.0) + server.latency)
            if "status" in fault:
                headers = {}
                if "retry_after" in fault:
                    headers["Retry-After"] = str(fault["retry_after"])
                self._send_error(fault["status"], f"scripted fault {fault['status']}", headers)
                return
            try:
                completion = server._completion(body)
            except Exception as exc:  # a reply function that fails is a server error, as in real life
                self._send_error(500, f"reply function failed: {exc}")
                return
            self._send(200, completion)

        def _authorized(self) -> bool:
            return server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}"

        def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            error = {"error": {"message": message, "type": "fake_error", "code": status}}
            self._send(status, error, headers)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
