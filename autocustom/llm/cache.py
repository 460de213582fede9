"""SQLite cache of every LLM call, and a backend wrapper that serves from it.

Generation is the expensive, flaky part of a run (a remote server, minutes of local decoding), so
every reply is stored the moment it arrives, keyed by everything that determines it. A rerun with the
same settings — after a crash, a Ctrl-C or a kill — answers from the cache and sends only what is
missing. A caller wanting a different reply for the same prompt changes `params.seed`, which changes
the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import cast

from autocustom.llm.base import ChatBackend, GenerationParams, ReplyCallback
from autocustom.llm.chat import Conversation

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    params TEXT NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class CallCache:
    """SQLite cache of every call: key = sha256 of json(backend name, model, messages, params).

    WAL mode and a commit after each put: a reader (another process inspecting the dataset) never
    blocks the writer, and a kill loses at most the reply being written. The inputs are stored next to
    the reply so the file doubles as an audit log of what the generator was asked.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # on_reply may fire from another thread (an async backend's loop); one lock serialises writes.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    @staticmethod
    def key(backend: str, model: str, conversation: Conversation, params: GenerationParams) -> str:
        payload = json.dumps(
            [backend, model, conversation, params.to_dict()], sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(
        self,
        key: str,
        backend: str,
        model: str,
        conversation: Conversation,
        params: GenerationParams,
        reply: str,
    ) -> None:
        row = (
            key,
            backend,
            model,
            json.dumps(conversation, ensure_ascii=False),
            json.dumps(params.to_dict(), sort_keys=True),
            reply,
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, backend, model, messages, params, reply) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedBackend:
    """A ChatBackend that answers from a CallCache and sends only the misses to the wrapped backend.

    Identical conversations within one batch are sent once (a pipeline that asks the same question
    twice pays once). Each reply is stored as soon as the wrapped backend delivers it, so a batch that
    fails halfway keeps what it already got.
    """

    def __init__(self, backend: ChatBackend, cache: CallCache) -> None:
        self.backend = backend
        self.cache = cache
        self.name = backend.name
        self.model = backend.model
        # what the replies are keyed by: the server and the resolved model (a backend without an
        # `identity`, e.g. a user's own, is keyed by its name and model as before)
        self.identity = getattr(backend, "identity", backend.model)
        self.calls_made = 0
        self.cache_hits = 0

    def complete(
        self,
        conversations: list[Conversation],
        params: GenerationParams,
        on_reply: ReplyCallback | None = None,
    ) -> list[str]:
        keys = [self.cache.key(self.name, self.identity, c, params) for c in conversations]
        replies: list[str | None] = [None] * len(conversations)
        pending: dict[str, list[int]] = {}  # key of a miss -> every batch index that asked it
        for index, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                replies[index] = cached
                self.cache_hits += 1
                if on_reply is not None:
                    on_reply(index, cached)
            else:
                pending.setdefault(key, []).append(index)
        if pending:
            misses = list(pending)
            log.debug("%d hits, %d calls to %s", len(conversations) - len(misses), len(misses), self.name)

            def store(miss_index: int, reply: str) -> None:
                key = misses[miss_index]
                indices = pending[key]
                self.cache.put(key, self.name, self.model, conversations[indices[0]], params, reply)
                for index in indices:
                    replies[index] = reply
                    if on_reply is not None:
                        on_reply(index, reply)

            self.calls_made += len(misses)
            sent = [conversations[pending[key][0]] for key in misses]
            returned = self.backend.complete(sent, params, on_reply=store)
            for miss_index, reply in enumerate(returned):  # a backend that skipped on_reply for some
                if replies[pending[misses[miss_index]][0]] is None:
                    store(miss_index, reply)
        return cast(list[str], replies)  # every index is filled: hits above, misses by store()
