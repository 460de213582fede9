"""Build a chat backend from the options every generating command shares."""

from __future__ import annotations

from autocustom.assets import DEFAULT_MODEL
from autocustom.errors import UsageError
from autocustom.llm.base import ChatBackend
from autocustom.llm.generation import GENERATION_BATCH

BACKEND_KINDS = ("local", "openai")


def make_backend(
    kind: str,
    model: str | None,
    *,
    base_url: str | None = None,
    concurrency: int = 4,
    device: str | None = None,
    batch_size: int = GENERATION_BATCH,
    trust_remote_code: bool = False,
) -> ChatBackend:
    """A `local` backend (default model: the packaged SmolLM2) or an `openai`-compatible one.

    Nothing loads and nothing is contacted here; call `check_reachable()` on an openai backend to
    fail before any work when the server is down.
    """
    if kind == "local":
        from autocustom.llm.local_backend import LocalBackend

        return LocalBackend(
            model or DEFAULT_MODEL, device=device, batch_size=batch_size, trust_remote_code=trust_remote_code
        )
    if kind == "openai":
        if not model:
            raise UsageError(
                "the openai backend needs a model name",
                "pass --model, e.g. --model gpt-4o-mini (or the name your server serves)",
            )
        from autocustom.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url=base_url, concurrency=concurrency)
    raise UsageError(f"unknown backend '{kind}'", f"use one of: {', '.join(BACKEND_KINDS)}")
