"""Retries and pacing shared by the HTTP connectors.

A vendor that answers 429, 5xx or not at all is asking to be tried again
later, not telling us the erasure failed. So every HTTP call a connector makes
goes through ``call_with_retries``: before each attempt it waits on a
``Pacer`` (one token bucket per vendor per process, so concurrent flows and
tasks in a process share the vendor's rate limit), and a
``TransientConnectorError`` is retried with capped exponential backoff and
jitter, waiting at least the vendor's ``Retry-After``. Anything else is not
retried: a 4xx says the request is wrong, and repeating it will not help.

Two rules keep retries honest:

- A Retry-After longer than ``RetryPolicy.max_retry_after`` is not slept
  through inside a task: the error is re-raised at once so the step fails
  visibly and the flow reschedules it.
- When the attempts run out, the last ``TransientConnectorError`` is
  re-raised. A call never ends as success without a real successful answer.

Retrying is safe only for calls that can be repeated. Reads, PATCHes with
fixed values and DELETEs are; a POST that files a vendor job is not, because a
timeout or a 5xx does not say whether the vendor filed it. Connectors wrap
those POSTs themselves: before posting again they look for the job the lost
attempt may have filed (see ``salesforce.py`` and ``segment.py``).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar, runtime_checkable

import httpx

from lethe.errors import ConfigError, TransientConnectorError

__all__ = [
    "NO_PACING",
    "Pacer",
    "RetryPolicy",
    "TokenBucket",
    "call_with_retries",
    "pacer_for",
    "parse_retry_after",
    "retry_after_seconds",
    "retry_logger",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
OnRetry = Callable[[int, TransientConnectorError, float], None]


# -- Retry-After ---------------------------------------------------------------


def parse_retry_after(
    response: httpx.Response, *, now: datetime | None = None
) -> float | None:
    """Seconds the vendor asks us to wait, or None when it does not say.

    ``Retry-After`` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3); when
    it is absent or unreadable, ``X-RateLimit-Reset`` is read as a date
    (Segment sends an RFC 5322 date there). A moment already past gives 0.
    """
    moment = now or datetime.now(UTC)
    seconds = _seconds_or_date(response.headers.get("Retry-After"), moment)
    if seconds is not None:
        return seconds
    return _date_in(response.headers.get("X-RateLimit-Reset"), moment)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` read as delta-seconds only, or None.

    What the Mixpanel and Amplitude connectors put on their transient errors;
    unlike ``parse_retry_after`` it reads no HTTP-date and no
    ``X-RateLimit-Reset``.
    """
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _seconds_or_date(value: str | None, now: datetime) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _date_in(text, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _date_in(value: str | None, now: datetime) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an RFC 850 or asctime date: GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# -- backoff -------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried.

    Attempt ``n`` (1-based) that failed is followed by a wait of
    ``base_delay * 2**(n-1)``, spread by ±``jitter`` (a fraction) and capped at
    ``max_delay``. A vendor's Retry-After is a floor on that wait, itself
    capped by ``max_retry_after``; a longer one ends the retries at once.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.2
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1; check the settings")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ConfigError("retry delays must not be negative; check the settings")
        if not 0 <= self.jitter < 1:
            raise ConfigError("jitter must be a fraction in [0, 1); check settings")

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        draw: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait after failed attempt ``attempt``; None means give up.

        ``draw`` returns a number in [0, 1); it is injectable for tests.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        spread = backoff * (1.0 + self.jitter * (2.0 * draw() - 1.0))
        wait = min(self.max_delay, max(0.0, spread))
        if retry_after is None:
            return wait
        # At least what the vendor asked, plus a little so that callers
        # told the same moment do not all come back at once.
        floor = retry_after * (1.0 + self.jitter * draw())
        return min(self.max_retry_after, max(wait, floor))


DEFAULT_POLICY = RetryPolicy()


# -- pacing --------------------------------------------------------------------


@runtime_checkable
class Pacer(Protocol):
    """Something that lets calls go at a bounded rate."""

    def acquire(self) -> None:
        """Block until one more call may go."""
        ...


class _NoPacing:
    """The pacer for vendors without a documented rate: never waits."""

    def acquire(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_PACING"


NO_PACING: Pacer = _NoPacing()


class TokenBucket:
    """A thread-safe token bucket: ``rate_per_second`` calls, ``burst`` at once.

    A caller takes a token and, when none is left, reserves the next one and
    sleeps until it is due, outside the lock, so waiting callers queue in the
    order they came. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
            raise ConfigError(
                "rate_limit_per_second must be a positive number; check the settings"
            )
        if burst < 1:
            raise ConfigError("a rate limit's burst must be at least 1")
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._rate = float(rate_per_second)
        self._burst = burst
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def rate(self) -> float:
        return self._rate

    def slow_to(self, rate_per_second: float) -> None:
        """Lower the rate (never raise it): the strictest setting wins."""
        with self._lock:
            self._refill()
            self._rate = min(self._rate, float(rate_per_second))

    def acquire(self) -> None:
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        self._updated = now

    def __repr__(self) -> str:
        return f"TokenBucket(rate_per_second={self._rate:g}, burst={self._burst})"


_BUCKETS: dict[str, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def pacer_for(vendor_key: str, rate: float | None, *, burst: int = 1) -> Pacer:
    """The one token bucket this process keeps for ``vendor_key``.

    Every connector of a vendor account asks with the same key, so all flows
    and tasks in the process draw on one bucket. ``rate`` None means the
    vendor documents no rate to keep to: no pacing. When two settings differ,
    the lower rate wins, since both describe the same vendor limit.
    """
    if rate is None:
        return NO_PACING
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(vendor_key)
        if bucket is None:
            bucket = _BUCKETS[vendor_key] = TokenBucket(rate, burst)
            return bucket
    if rate < bucket.rate:
        logger.warning(
            "%s: a lower rate limit (%g/s) was configured; the shared limiter "
            "now keeps to it",
            vendor_key,
            rate,
        )
        bucket.slow_to(rate)
    return bucket


# -- the loop ------------------------------------------------------------------


def call_with_retries(
    send: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    pacer: Pacer = NO_PACING,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
    retry_if: Callable[[TransientConnectorError], bool] | None = None,
) -> T:
    """``send()``, paced, retried on TransientConnectorError as ``policy`` says.

    ``on_retry(attempt, error, delay)`` is told before each wait; ``retry_if``
    may narrow which transient errors are retried. Other errors pass through
    at once; when retries end, the last transient error is re-raised
    unchanged.
    """
    attempt = 1
    while True:
        pacer.acquire()
        try:
            return send()
        except TransientConnectorError as error:
            if retry_if is not None and not retry_if(error):
                raise
            delay = policy.delay(attempt, error.retry_after)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, error, delay)
            sleep(delay)
            attempt += 1


def retry_logger(log: logging.Logger, system: str, operation: str) -> OnRetry:
    """An ``on_retry`` that tells the story at INFO: system, operation, status."""

    def note(attempt: int, error: TransientConnectorError, delay: float) -> None:
        log.info(
            "%s: %s failed (HTTP %s), attempt %d; retrying in %.2fs",
            system,
            operation,
            error.status if error.status is not None else "none",
            attempt,
            delay,
        )

    return note
