"""How the Salesforce connector reads the org's answers when they are not data.

Kept apart from ``salesforce.py`` so the connector reads as the erase steps:
here a failed answer becomes a lethe error (429, 5xx and
REQUEST_LIMIT_EXCEEDED are transient, honouring ``Retry-After``; a 404 without
an error body points at ``base_url``), and a token endpoint answer becomes an
access token or the configuration error that explains its absence. Only the
status, the org's ``errorCode`` and the OAuth ``error`` reach a message, never
a response body.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

import httpx

from lethe.errors import (
    ConfigError,
    ConnectorError,
    LetheError,
    TransientConnectorError,
)

_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,60}$")


def failure(system: str, response: httpx.Response, operation: str) -> LetheError:
    """The lethe error for an answer that is not a success, by status and code."""
    status = response.status_code
    code = _error_code(response)
    where = f"{system}: Salesforce {operation} got HTTP {status}"
    if status == 429 or status >= 500:
        return TransientConnectorError(
            f"{where}; the org is busy or failing, retry later",
            status=status,
            retry_after=_retry_after(response),
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        return TransientConnectorError(
            f"{where} (REQUEST_LIMIT_EXCEEDED); the org's daily API allocation "
            "is used up, retry when it recovers",
            status=status,
            retry_after=_retry_after(response),
        )
    if status == 404 and code is None:
        return ConfigError(
            f"{where} with no Salesforce error body; check base_url (the org's "
            "My Domain URL) and api_version"
        )
    if status == 401:
        return ConnectorError(
            f"{where} ({code or 'no error code'}) with a fresh session; check "
            "the connected app's "
            "run-as user and its API access",
            status=status,
        )
    return ConnectorError(f"{where} ({code or 'no error code'})", status=status)


def token_from(system: str, response: httpx.Response, operation: str) -> str:
    """The access token in a token endpoint answer, or the error saying why not.

    Refused client credentials are a configuration problem, not a vendor fault.
    """
    if response.status_code in (400, 401):
        error = _oauth_error(response)
        if error is not None:
            raise ConfigError(
                f"{system}: Salesforce refused the client credentials "
                f"({error}); check client_id and client_secret, and that the "
                "connected app allows the client credentials flow"
            )
    if not response.is_success:
        raise failure(system, response, operation)
    try:
        token = response.json().get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise ConfigError(
            f"{system}: the token endpoint answered without an access "
            "token; check base_url"
        )
    return token


def _error_code(response: httpx.Response) -> str | None:
    """The org's errorCode, if the body has the REST error shape."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code = body[0].get("errorCode")
        if isinstance(code, str) and _ERROR_CODE.match(code):
            return code
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and _ERROR_CODE.match(error) else None
