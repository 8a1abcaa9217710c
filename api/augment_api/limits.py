"""Per-key request rates and per-project job quotas: what one client may take of the API.

Both answer 429 with a Retry-After. They are counted in this process: with N replicas
behind a Service a key gets up to N times its rate, and concurrent creations on two
replicas may pass a project's quota by one each (the counts come from each replica's
watch cache).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from augment_api.errors import TooManyRequests

# A job takes minutes: a client over its quota should not ask again within seconds.
QUOTA_RETRY_AFTER_S = 30


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; one request takes one."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per API key: `burst` requests at once, `per_second` sustained.
    A rate of 0 switches the limit off."""

    def __init__(self, per_second: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.burst, self._clock = per_second, burst, clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one request from the key's bucket, or raise TooManyRequests."""
        if self.per_second <= 0:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.burst, self.per_second,
                                                          self.burst, now)
            wait = bucket.take(now)
        if wait > 0:
            raise TooManyRequests(
                f"too many requests for this API key (limit {self.per_second:g}/s, bursts of "
                f"{self.burst}); retry after {math.ceil(wait)} s", retry_after=math.ceil(wait))


class ProjectQuota:
    """At most `limit` unfinished jobs per project (0: no limit).

    `count_active` counts a project's jobs that are not in a final phase (from the watch
    cache, with the jobs just created); creations still in flight count too, so
    concurrent requests cannot overshoot the limit between counting and creating.
    """

    def __init__(self, limit: int, count_active: Callable[[UUID], int]) -> None:
        self.limit, self._count_active = limit, count_active
        self._in_flight: Counter[UUID] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, project: UUID) -> Iterator[None]:
        """Hold a place for one job while the body runs; raise TooManyRequests when full.
        The body must make the created job visible to `count_active` before it ends."""
        if self.limit <= 0:
            yield
            return
        with self._lock:
            used = self._count_active(project) + self._in_flight[project]
            if used >= self.limit:
                raise TooManyRequests(
                    f"project {project} has {used} unfinished jobs, its limit; retry when one "
                    "has finished", retry_after=QUOTA_RETRY_AFTER_S)
            self._in_flight[project] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[project] -= 1
                if self._in_flight[project] <= 0:
                    del self._in_flight[project]
