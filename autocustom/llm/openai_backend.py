"""A chat backend for any OpenAI-compatible server: OpenAI, vLLM, TGI, llama.cpp server, Ollama.

Generation scales through the server, so this backend's job is to keep it busy without tipping it
over: up to `concurrency` requests in flight (an asyncio Semaphore), and a bounded exponential backoff
with jitter on the failures that pass (429, 5xx, timeouts, dropped connections), honouring the
server's Retry-After. The openai client's own retries are switched off so this policy is the only one
and tests can drive it. Failures that retrying cannot fix (a refused key, a bad request) fail at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

from autocustom.errors import BackendError, UsageError
from autocustom.fields import public_url
from autocustom.llm.base import GenerationParams, ReplyCallback
from autocustom.llm.chat import Conversation

log = logging.getLogger(__name__)

T = TypeVar("T")

OPENAI_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "EMPTY"  # self-hosted servers (vLLM, transformers serve) accept any key
RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))
AUTH_STATUSES = {401, 403}


class OpenAIBackend:
    """Chat completions over HTTP with bounded concurrency and our own retry policy.

    `backoff` is the first retry's delay in seconds, doubled per attempt up to `max_backoff` (half
    fixed, half random: jitter keeps many clients from retrying in lockstep). A Retry-After header
    replaces the computed delay, capped at `max_backoff` so a confused server cannot stall a run.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency {concurrency} must be at least 1", "pass --concurrency 1 or more")
        if max_retries < 0:
            raise UsageError(f"max_retries {max_retries} must not be negative", "pass 0 or more")
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._api_key = _resolve_key(api_key, self.base_url)

    @property
    def url(self) -> str:
        return self.base_url or OPENAI_URL

    @property
    def identity(self) -> str:
        """The cache's key for this model: the server (without credentials) and the model it names."""
        return f"{public_url(self.url)} {self.model}"

    def complete(
        self,
        conversations: list[Conversation],
        params: GenerationParams,
        on_reply: ReplyCallback | None = None,
    ) -> list[str]:
        if not conversations:
            return []
        return _run(self._complete_all(conversations, params, on_reply))

    def check_reachable(self) -> None:
        """Fail fast (BackendError) when the server cannot be reached or refuses the key.

        Asks for the model list once, with no retries: it costs one round trip and no tokens. A
        server that has no /models route (404) is reachable, which is all this checks.
        """
        import openai

        client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=min(self.timeout, 10.0), max_retries=0
        )
        try:
            client.models.list()
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc) from None
        except openai.APIStatusError as exc:
            if exc.status_code in AUTH_STATUSES:
                raise self._refused(exc) from None
        finally:
            client.close()

    async def _complete_all(
        self, conversations: list[Conversation], params: GenerationParams, on_reply: ReplyCallback | None
    ) -> list[str]:
        import openai

        # One client per event loop: its connection pool belongs to the loop that created it.
        client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0
        )
        semaphore = asyncio.Semaphore(self.concurrency)
        replies: list[str] = [""] * len(conversations)

        async def one(index: int) -> None:
            replies[index] = await self._request(client, semaphore, conversations[index], params)
            if on_reply is not None:
                on_reply(index, replies[index])

        tasks = [asyncio.ensure_future(one(index)) for index in range(len(conversations))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:  # one request failed for good: stop the rest rather than finish them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            failures = [task.exception() for task in done if task.exception() is not None]
            if failures:
                raise failures[0]  # type: ignore[misc]
        finally:
            await client.close()
        return replies

    async def _request(
        self,
        client: Any,
        semaphore: asyncio.Semaphore,
        conversation: Conversation,
        params: GenerationParams,
    ) -> str:
        import openai

        for attempt in range(self.max_retries + 1):
            try:
                async with semaphore:
                    response = await client.chat.completions.create(
                        model=self.model,
                        messages=conversation,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_new_tokens,
                        seed=params.seed,
                    )
                if not response.choices:
                    raise BackendError(f"{self.url} returned no choices", "check the server's logs")
                return response.choices[0].message.content or ""
            except openai.APIStatusError as exc:
                if exc.status_code in AUTH_STATUSES:
                    raise self._refused(exc) from None
                if exc.status_code not in RETRY_STATUSES:
                    raise BackendError(
                        f"{self.url} rejected the request for model '{self.model}' "
                        f"(HTTP {exc.status_code}): {_message(exc)}",
                        "check the model name and --base-url (most servers serve the API under /v1)",
                    ) from None
                failure: openai.APIError = exc
                delay = _retry_after(exc)
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                failure, delay = exc, None
            if attempt == self.max_retries:
                break
            if delay is None:
                ceiling = min(self.max_backoff, self.backoff * 2**attempt)
                delay = ceiling / 2 + random.uniform(0, ceiling / 2)
            delay = min(delay, self.max_backoff)
            log.warning(
                "%s: %s; retry %d/%d in %.2fs",
                self.url,
                _describe(failure),
                attempt + 1,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)
        if isinstance(failure, openai.APIConnectionError) and not isinstance(failure, openai.APITimeoutError):
            raise self._unreachable(failure)
        raise BackendError(
            f"{self.url} kept failing after {self.max_retries + 1} attempts: {_describe(failure)}",
            "retry later, lower --concurrency, or raise the timeout",
        )

    def _unreachable(self, exc: Exception) -> BackendError:
        return BackendError(
            f"cannot reach the server at {self.url} ({_describe(exc)})",
            "start the server or fix --base-url (it must end in /v1 for most servers)",
        )

    def _refused(self, exc: Any) -> BackendError:
        return BackendError(
            f"{self.url} refused the API key (HTTP {exc.status_code})",
            "set OPENAI_API_KEY to a valid key for this server",
        )


def _resolve_key(api_key: str | None, base_url: str | None) -> str:
    """The key from the argument or OPENAI_API_KEY; self-hosted servers get a placeholder."""
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url:
        return PLACEHOLDER_KEY
    raise BackendError(
        "no API key for api.openai.com",
        "set OPENAI_API_KEY in the environment, or pass --base-url for a self-hosted server",
    )


def _retry_after(exc: Any) -> float | None:
    """Seconds from a Retry-After header (the seconds form; the date form is rare and ignored)."""
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    cause = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {cause}" if cause else str(exc)


def _message(exc: Any) -> str:
    """The server's own words: OpenAI and vLLM send {"error": {"message"}}, FastAPI servers {"detail"}."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("detail"):
            return str(body["detail"])
    return str(exc.message)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the caller already runs a loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
