"""The HTTP-error translation that the async-vendor connectors share.

Segment, Mixpanel and Amplitude read a failed call the same way: a timeout or
an unreachable host, a 429 and a 5xx are ``TransientConnectorError`` (try again
later), and an answer that is not the vendor's JSON means ``base_url`` points
somewhere else. What differs per vendor (which 4xx means a bad token, a bad
setting or a refused request) stays in each connector's ``_raise_for``.

Nothing here retries or paces: that is ``_resilience``'s job alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from lethe.errors import ConfigError, TransientConnectorError

RetryAfter = Callable[[httpx.Response], float | None]


def request(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    *,
    system: str,
    operation: str,
    vendor: str,
    **options: Any,
) -> httpx.Response:
    """One request; a timeout or a transport failure becomes a transient error."""
    try:
        return client.request(method, url, **options)
    except httpx.TimeoutException:
        raise TransientConnectorError(
            f"{system}: {operation} timed out; {vendor} may still act on it"
        ) from None
    except httpx.TransportError:
        raise TransientConnectorError(
            f"{system}: {operation} could not reach {vendor}; "
            "check base_url if this persists"
        ) from None


def raise_if_transient(
    response: httpx.Response,
    what: str,
    *,
    vendor: str,
    retry_after: RetryAfter,
    rate_limited: str = "rate limited",
) -> None:
    """A 429 or a 5xx as a transient error carrying the vendor's Retry-After.

    ``what`` opens the message (``"<system>: <operation> answered <status>"``).
    """
    status = response.status_code
    if status != 429 and status < 500:
        return
    why = rate_limited if status == 429 else f"{vendor} had a server error"
    raise TransientConnectorError(
        f"{what}; {why}", status=status, retry_after=retry_after(response)
    )


def json_object(
    response: httpx.Response,
    *,
    system: str,
    operation: str,
    vendor: str,
    hint: str = "check base_url",
) -> dict[str, Any]:
    """The answer's JSON object; anything else says base_url is wrong."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ConfigError(
            f"{system}: {operation} answered {response.status_code} without "
            f"{vendor}'s JSON; {hint}"
        )
    return body
