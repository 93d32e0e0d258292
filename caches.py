"""Bounded in-memory caches with their statistics.

Every cache that requests can grow (answers for known customers, embeddings and life-event
analyses of the posts cold-start requests bring) is an :class:`LruCache`, so the process has a
memory ceiling whatever the traffic, and ``/metrics`` shows each cache's size against its bound
and how often it served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, Mapping, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


@dataclass(frozen=True)
class CacheStats:
    """What /metrics shows of a cache a request can grow: its size against its bound, and how often it served."""

    entries: int
    capacity: int
    hits: int
    misses: int


class LruCache(Generic[Key, Value]):
    """At most ``capacity`` entries; the least recently used goes first. Capacity 0 keeps nothing.

    Thread-safe: request handlers and background work share it.
    """

    def __init__(self, capacity: int, entries: Mapping[Key, Value] | None = None) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Key, Value] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        for key, value in (entries or {}).items():
            self.put(key, value)

    def get(self, key: Key) -> Value | None:
        """The value, counted as a hit and made the most recent; None (a miss) when absent."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
                self._entries.move_to_end(key)
            return value

    def put(self, key: Key, value: Value) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def snapshot(self) -> dict[Key, Value]:
        """A copy of the entries, oldest first (what a disk cache saves)."""
        with self._lock:
            return dict(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self.capacity, self._hits, self._misses)
