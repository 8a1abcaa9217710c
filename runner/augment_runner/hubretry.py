"""Hub calls that fail for a passing reason are tried again: 429, 5xx, timeouts, lost connections.

A job whose GPU work is done must not fail on one busy answer from the Hub. Each call is
retried with exponential backoff (with jitter, so that many runners do not come back
together), waiting exactly as long as the Hub's ``Retry-After`` asks when it says. After the
last try the error goes up; `hub.py` reports it as `HubUnavailable`, which the runner exits
with a code the Job retries (never the bad-input code, which fails the Job at once).

``huggingface_hub``'s HTTP client waits forever for an answer by default; `use_timeouts`
gives it one, so that a silent Hub becomes a timeout that these retries act on.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

log = logging.getLogger("augment.runner")
T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Network failures a later try may not meet. LocalEntryNotFoundError is how a download
# reports that it could not reach the Hub (and found no cached copy).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    httpx2.TimeoutException,
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
    LocalEntryNotFoundError,
    ConnectionError,
)
# A longer Retry-After is not waited for in the pod: the attempt ends and the Job retries.
MAX_RETRY_AFTER_SECONDS = 300.0
TIMEOUT_ENV = "AUGMENT_HUB_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Retry:
    """How often and how long to try a Hub call again (the default: about two minutes)."""

    attempts: int = 6
    base_seconds: float = 2.0
    max_seconds: float = 60.0
    sleep: Callable[[float], None] = time.sleep


RETRY = Retry()


def status_of(err: BaseException) -> int | None:
    response = getattr(err, "response", None) if isinstance(err, HfHubHTTPError) else None
    return response.status_code if response is not None else None


def is_transient(err: BaseException) -> bool:
    """Whether the same call may succeed later: the Hub was busy or could not be reached."""
    return status_of(err) in TRANSIENT_STATUS or isinstance(err, TRANSIENT_ERRORS)


def describe(err: BaseException) -> str:
    """What failed, in words that quote nothing from the request (headers hold the token)."""
    status = status_of(err)
    return f"HTTP {status}" if status is not None else type(err).__name__


def retry_after(err: BaseException) -> float | None:
    """Seconds the Hub asked to wait (``Retry-After``: seconds or an HTTP date), if it did."""
    response = getattr(err, "response", None) if isinstance(err, HfHubHTTPError) else None
    value = response.headers.get("retry-after", "").strip() if response is not None else ""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def wait_before(err: BaseException, attempt: int, retry: Retry) -> float | None:
    """Seconds to wait before try ``attempt + 1``, or None: do not try again."""
    if attempt >= retry.attempts or not is_transient(err):
        return None
    asked = retry_after(err)
    if asked is not None:
        return asked if asked <= MAX_RETRY_AFTER_SECONDS else None
    backoff = min(retry.max_seconds, retry.base_seconds * 2 ** (attempt - 1))
    return backoff * random.uniform(0.5, 1.0)


def call(retry: Retry, fn: Callable[[], T]) -> T:
    """``fn()``, tried again while it fails for a passing reason; the last error goes up."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as err:
            wait = wait_before(err, attempt, retry)
            if wait is None:
                raise
            log.warning(
                "the Hub answered %s; trying again in %.1fs (try %d of %d)",
                describe(err), wait, attempt + 1, retry.attempts,
            )
            retry.sleep(wait)
            attempt += 1


def _client() -> httpx2.Client:
    seconds = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_SECONDS)
    return httpx2.Client(follow_redirects=True, timeout=httpx2.Timeout(seconds))


@functools.cache
def use_timeouts() -> None:
    """Make ``huggingface_hub`` give up on a request that gets no answer (once per process).

    Its own client waits forever. The timeout is read from AUGMENT_HUB_TIMEOUT_SECONDS each
    time the client is made (``huggingface_hub`` makes a new one after a connection error).
    """
    set_client_factory(_client)
