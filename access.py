"""Who may call what, and how often: API keys with scopes, and a rate limit per caller.

``API_KEYS`` lists entries ``key:scope`` (scope ``read`` or ``admin``; a key without a scope reads
only, so that a key handed to a front-end cannot re-run the audit or reload the model by accident).
``admin`` covers everything ``read`` does, plus ``/admin/*`` and ``POST /fairness/run``.

Keys are compared in constant time: the presented key is checked against every configured key with
``hmac.compare_digest`` over fixed-length digests, whether or not an earlier one matched, so neither
the response time nor its absence tells an attacker how much of a guess was right or which entry it
was near.

``RATE_LIMIT_PER_MINUTE`` (0: no limit) gives each caller a token bucket holding a minute's worth of
requests, refilled continuously: a caller may burst up to the limit, then gets 429 with
``Retry-After`` (whole seconds until a token is back). A caller is its key; without keys configured,
its address. Buckets live in the process: with several workers, each holds its own.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

KeyScope = Literal["read", "admin"]
SCOPES: tuple[KeyScope, ...] = ("read", "admin")
DEFAULT_SCOPE: KeyScope = "read"
MAX_ANONYMOUS_CALLERS = 10_000  # buckets kept for addresses when no keys are set; the longest idle go first


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    scope: KeyScope
    name: str  # "key 2": how logs and errors refer to a key, never by its value


def parse_api_keys(entries: Sequence[str]) -> list[ApiKey]:
    """``key`` or ``key:scope`` entries as configured; a ValueError names the entry by position, never
    by value (it is a secret)."""
    keys = []
    for number, entry in enumerate(entries, start=1):
        value, _, scope = entry.strip().rpartition(":") if ":" in entry else (entry.strip(), "", DEFAULT_SCOPE)
        if scope not in SCOPES:
            raise ValueError(f"API_KEYS entry {number}: unknown scope {scope!r} (use read or admin)")
        if not value:
            raise ValueError(f"API_KEYS entry {number}: the key before ':{scope}' is empty")
        keys.append(ApiKey(_digest(value), scope, f"key {number}"))  # type: ignore[arg-type]
    return keys


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def find_key(keys: Sequence[ApiKey], presented: str) -> ApiKey | None:
    """The configured key equal to ``presented``, compared in constant time against every key."""
    presented_digest = _digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(key.digest, presented_digest):
            found = key
    return found


def allows(scope: KeyScope, needed: KeyScope) -> bool:
    return scope == "admin" or needed == "read"


class RateLimiter:
    """Token buckets, one per caller, each holding up to ``per_minute`` tokens."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_callers: int = MAX_ANONYMOUS_CALLERS):
        self.per_minute = per_minute
        self._per_second = per_minute / 60
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, last refill)
        self._lock = threading.Lock()

    def wait_seconds(self, caller: str) -> int:
        """0 and a token taken when ``caller`` may go on; otherwise the whole seconds until it may."""
        if self.per_minute <= 0:
            return 0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(caller, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._per_second)
            allowed = tokens >= 1
            self._buckets[caller] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        return 0 if allowed else max(1, math.ceil((1 - tokens) / self._per_second))
