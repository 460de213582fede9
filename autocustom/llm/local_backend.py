"""A chat backend that runs a local model with transformers `generate()`, batched.

It makes the whole tool work with no server and no key (the packaged SmolLM2 by default); the
batching itself lives in autocustom.llm.generation, shared with the free replies the judge reads.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from autocustom.assets import DEFAULT_MODEL
from autocustom.errors import UsageError
from autocustom.llm.base import GenerationParams, ReplyCallback
from autocustom.llm.chat import Conversation, render_prompt
from autocustom.llm.generation import GENERATION_BATCH

log = logging.getLogger(__name__)


class LocalBackend:
    """transformers generation behind the ChatBackend protocol.

    The model loads on the first `complete`, so building a backend (to validate options, to write a
    manifest) costs nothing.
    """

    name = "local"

    def __init__(
        self,
        model_ref: str = DEFAULT_MODEL,
        *,
        device: Any = None,
        batch_size: int = GENERATION_BATCH,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size {batch_size} must be at least 1", "pass --batch-size 1 or more")
        self.model = model_ref
        self.device = device
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self._loaded: Any = None

    @cached_property
    def identity(self) -> str:
        """The cache's key for this model: the resolved model, not the name typed (`model_identity`)."""
        from autocustom.llm.models import model_identity

        return f"local {model_identity(self.model)}"

    def _load(self) -> Any:
        if self._loaded is None:
            from autocustom.llm.models import load_model
            from autocustom.runtime import resolve_device

            device = self.device
            if device is None or isinstance(device, str):
                device = resolve_device(device)
            log.info("loading %s on %s", self.model, device)
            self._loaded = load_model(self.model, device=device, trust_remote_code=self.trust_remote_code)
        return self._loaded

    def complete(
        self,
        conversations: list[Conversation],
        params: GenerationParams,
        on_reply: ReplyCallback | None = None,
    ) -> list[str]:
        if not conversations:
            return []
        from autocustom.llm.generation import generate_texts

        loaded = self._load()
        return generate_texts(
            loaded.model,
            loaded.tokenizer,
            [render_prompt(loaded.tokenizer, conversation) for conversation in conversations],
            max_new_tokens=params.max_new_tokens,
            batch_size=self.batch_size,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            on_reply=on_reply,
        )
