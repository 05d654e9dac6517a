"""How the Salesforce connector talks to the org when the answer is not data.

Kept apart from ``salesforce.py`` so the connector reads as the erase steps.
``OrgSession`` owns the HTTP side: the OAuth token from the configured grant
(client credentials or a JWT bearer assertion, ``_salesforce_auth``; renewed
once when the org rejects the session), pacing, retries of 429, 5xx and
timeouts through ``connectors._resilience``, and SOQL reads that follow
``nextRecordsUrl``. ``failure`` turns a failed answer
into a lethe error (429, 5xx and REQUEST_LIMIT_EXCEEDED are transient,
honouring ``Retry-After``; a 404 without an error body points at
``base_url``), and ``token_from`` turns a token endpoint answer into an access
token or the configuration error that explains its absence. Only the status,
the org's ``errorCode`` and the OAuth ``error`` reach a message, never a
response body.

A daily API allocation used up (403 REQUEST_LIMIT_EXCEEDED) is transient for
the flow, which reschedules the step, but is not retried here: it will not
recover within seconds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from connectors._resilience import (
    Pacer,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
    retry_logger,
)
from connectors._salesforce_auth import TokenGrant
from connectors._salesforce_soql import where_in
from lethe.errors import (
    ConfigError,
    ConnectorError,
    LetheError,
    TransientConnectorError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,60}$")
_TOKEN_PATH = "/services/oauth2/token"


class OrgSession:
    """One org's HTTP client: authorised, paced and retried calls."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        data_path: str,
        grant: TokenGrant,
        timeout: float,
        transport: httpx.BaseTransport | None,
        policy: RetryPolicy,
        pacer: Pacer,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.policy = policy
        self._pacer = pacer
        self._sleep = sleep
        self.data_path = data_path
        self._grant = grant
        self._timeout = timeout
        self._token: str | None = None
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def retried(
        self,
        send: Callable[[], T],
        operation: str,
        *,
        retry_if: Callable[[TransientConnectorError], bool] | None = None,
    ) -> T:
        """``send`` under this org's retry policy (``send`` paces its own calls)."""
        return call_with_retries(
            send,
            policy=self.policy,
            sleep=self._sleep,
            retry_if=retry_if,
            on_retry=retry_logger(logger, self.system, operation),
        )

    def send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        accept: Collection[int] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """An authorised call; a rejected session is renewed once.

        A failed answer raises, unless its status is in ``accept``: then the
        caller reads it (a documented 404, say).
        """
        extra = kwargs.pop("headers", {})
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._access_token()}", **extra}
            response = self._http(method, url, operation, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                logger.debug("%s: session rejected; fetching a new token", self.system)
                self._token = None
                continue
            if response.is_success or response.status_code in accept:
                return response
            raise failure(self.system, response, operation)
        raise AssertionError("unreachable")

    def json(self, method: str, url: str, operation: str, **kwargs: Any) -> Any:
        """An authorised call whose answer must be JSON."""
        response = self.send(method, url, operation, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{self.system}: Salesforce {operation} answered HTTP "
                f"{response.status_code} with a body that is not JSON; check base_url",
                status=response.status_code,
            ) from None

    def query(self, soql: str, *, all_rows: bool = False) -> Iterator[dict[str, Any]]:
        """Every record a SOQL query returns, following nextRecordsUrl."""
        operation = "queryAll" if all_rows else "query"
        url: str | None = f"{self.data_path}/{operation}"
        params: dict[str, str] | None = {"q": soql}
        while url is not None:
            body = self.json("GET", url, operation, params=params)
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise ConnectorError(
                    f"{self.system}: Salesforce {operation} answered without a "
                    "records list; check base_url and api_version"
                )
            yield from records
            url, params = self.next_page(body, operation), None

    def next_page(self, body: dict[str, Any], operation: str) -> str | None:
        if body.get("done", True):
            return None
        link = body.get("nextRecordsUrl")
        if not isinstance(link, str) or not link.startswith("/services/data/"):
            raise ConnectorError(
                f"{self.system}: Salesforce {operation} said more records follow "
                "but gave no usable nextRecordsUrl"
            )
        return link

    def rows(
        self, sobject: str, ids: Sequence[str], *, all_rows: bool, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The records of ``sobject`` with these ids, in IN lists of at most 200."""
        rows: list[dict[str, Any]] = []
        for soql in where_in(sobject, fields, "Id", ids):
            rows.extend(self.query(soql, all_rows=all_rows))
        return rows

    def _http(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call, paced; 429, 5xx and timeouts retried unless ``retry`` is off."""
        return call_with_retries(
            lambda: self._attempt(method, url, operation, **kwargs),
            policy=self.policy if retry else replace(self.policy, max_attempts=1),
            pacer=self._pacer,
            sleep=self._sleep,
            on_retry=retry_logger(logger, self.system, operation),
        )

    def _attempt(
        self, method: str, url: str, operation: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise TransientConnectorError(
                f"{self.system}: Salesforce {operation} timed out after "
                f"{self._timeout:g}s; the org may be slow, retry later"
            ) from None
        except httpx.TransportError:
            raise TransientConnectorError(
                f"{self.system}: Salesforce {operation} could not reach the org; "
                "retry later, and check base_url if it persists"
            ) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise failure(self.system, response, operation)
        return response

    def _access_token(self) -> str:
        if self._token is None:
            operation = "token request"
            response = self._http(
                "POST", _TOKEN_PATH, operation, data=self._grant.form()
            )
            self._token = token_from(self.system, response, operation, self._grant)
        return self._token


def answer_was_busy(error: TransientConnectorError) -> bool:
    """429, 5xx or no answer: worth another try now (a daily limit is not)."""
    return error.status is None or error.status == 429 or error.status >= 500


def failure(system: str, response: httpx.Response, operation: str) -> LetheError:
    """The lethe error for an answer that is not a success, by status and code."""
    status = response.status_code
    code = error_code(response)
    where = f"{system}: Salesforce {operation} got HTTP {status}"
    if status == 429 or status >= 500:
        return TransientConnectorError(
            f"{where}; the org is busy or failing, retry later",
            status=status,
            retry_after=parse_retry_after(response),
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        return TransientConnectorError(
            f"{where} (REQUEST_LIMIT_EXCEEDED); the org's daily API allocation "
            "is used up, retry when it recovers",
            status=status,
            retry_after=parse_retry_after(response),
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


def token_from(
    system: str, response: httpx.Response, operation: str, grant: TokenGrant
) -> str:
    """The access token in a token endpoint answer, or the error saying why not.

    A refused grant is a configuration problem, not a vendor fault. The OAuth
    ``error`` is named, and the ``error_description`` too when it is one of
    the few known texts; nothing else of the answer reaches the message.
    """
    if response.status_code in (400, 401):
        error = _oauth_error(response)
        if error is not None:
            raise ConfigError(
                f"{system}: Salesforce refused the {grant.name} ({error}"
                f"{_known_description(response)}); {grant.refused}"
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


def error_code(response: httpx.Response) -> str | None:
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


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and _ERROR_CODE.match(error) else None


_KNOWN_DESCRIPTIONS = frozenset(
    {
        "audience is invalid",
        "client identifier invalid",
        "expired authorization code",
        "invalid assertion",
        "invalid client credentials",
        "user hasn't approved this consumer",
        "inactive user",
    }
)


def _known_description(response: httpx.Response) -> str:
    try:
        description = response.json().get("error_description")
    except (ValueError, AttributeError):
        return ""
    return f": {description}" if description in _KNOWN_DESCRIPTIONS else ""
