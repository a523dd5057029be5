"""The TTL+LRU cache in front of search, with the counts ``status`` shows."""

from __future__ import annotations

import time
from typing import Any, Callable, Hashable

from cachetools import TTLCache

from proto.frames import SearchFilters

from .text import cache_text


def cache_key(kind: str, query: str, mode: str, limit: int, filters: SearchFilters) -> Hashable:
    """Queries that differ only in case, Unicode form or spacing share an entry."""
    return (kind, cache_text(query), mode, limit, filters.source, tuple(sorted(filters.tags)), filters.chat)


class AnswerCache:
    """Answers by key, least recently used evicted first, each for at most ``ttl`` seconds.
    A size of 0 turns the cache off (the benchmark's baseline)."""

    def __init__(self, size: int, ttl: float, timer: Callable[[], float] = time.monotonic) -> None:
        self.entries: TTLCache | None = TTLCache(maxsize=size, ttl=ttl, timer=timer) if size > 0 else None
        self.hits = 0
        self.misses = 0
        self.flushes = 0

    def get(self, key: Hashable) -> Any | None:
        value = self.entries.get(key) if self.entries is not None else None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.entries is not None:
            self.entries[key] = value

    def clear(self) -> None:
        """After any write to the knowledge base: nothing cached may hide the new note."""
        if self.entries:
            self.entries.clear()
        self.flushes += 1

    def stats(self) -> dict[str, Any]:
        asked = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses,
                "size": len(self.entries) if self.entries is not None else 0,
                "hit_ratio": round(self.hits / asked, 3) if asked else 0.0,
                "flushes": self.flushes}
