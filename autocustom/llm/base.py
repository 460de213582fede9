"""The one protocol every chat backend implements, and the parameters of a generation call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from autocustom.llm.chat import Conversation

ReplyCallback = Callable[[int, str], None]  # (index in the batch, reply text), called as each reply is ready


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; part of the cache key, so changing any of them makes new calls."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@runtime_checkable
class ChatBackend(Protocol):
    """Answers a batch of conversations; one reply text per conversation, in order.

    `name` is the backend kind ("local", "openai") and `model` the model it serves; both go into the
    manifest; the cache keys by `name` and `identity` when the backend has one (the server and the
    resolved model, so another model behind the same name is not answered from the cache), else by
    `model`. `on_reply`, when given, is called as soon as each reply is ready, so
    the cache can store it before the rest of the batch finishes: a kill loses only calls in flight.
    """

    name: str
    model: str

    def complete(
        self,
        conversations: list[Conversation],
        params: GenerationParams,
        on_reply: ReplyCallback | None = None,
    ) -> list[str]: ...
