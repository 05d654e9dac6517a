"""One communication user's HTTP session with an S/4HANA host.

The SAP connector's calls all go through here: Basic auth, pacing, 429s, 5xx
and timeouts retried with backoff (``_resilience``), the CSRF token fetched
once per session and again when SAP answers 403 ``x-csrf-token: Required``,
server paging through ``__next``, and the answers retrying cannot help turned
into errors that name the setting to check. A ``Service`` says which OData
service a call is for, so an error names its setting (``base_url`` for
API_BUSINESS_PARTNER, ``billing_base_url`` for API_BILLING_DOCUMENT_SRV) and
its communication scenario.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from connectors._resilience import (
    Pacer,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
    retry_logger,
)
from connectors._sap_odata import csrf_required, is_odata_error, payload
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError

logger = logging.getLogger("connectors.sap")


@dataclass(frozen=True)
class Service:
    """An OData service of the host: its name, setting and scenario."""

    name: str
    setting: str
    scenario: str


PARTNERS = Service("API_BUSINESS_PARTNER", "base_url", "SAP_COM_0008")
BILLING = Service("API_BILLING_DOCUMENT_SRV", "billing_base_url", "SAP_COM_0120")


class SapHttp:
    """Calls to one host; relative URLs are taken from the partner service root."""

    def __init__(
        self,
        *,
        system: str,
        root: httpx.URL,
        username: str,
        password: str,
        timeout: float,
        transport: httpx.BaseTransport | None,
        policy: RetryPolicy,
        pacer: Pacer,
        sleep: Callable[[float], None],
    ) -> None:
        self.system, self.root = system, root
        self._timeout, self._policy, self._pacer = timeout, policy, pacer
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=root,
            auth=(username, password),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    def send(
        self, method: str, url: str | httpx.URL, *, op: str, **options: Any
    ) -> httpx.Response:
        """One call, paced, with 429, 5xx and timeouts retried.

        Every call the connector makes may be repeated: reads, PATCHes of
        fixed values under If-Match (a lost success comes back as 412 and is
        re-read), and DELETEs (a lost success comes back as 404, taken as done).
        """
        return call_with_retries(
            lambda: self._attempt(method, url, op=op, **options),
            policy=self._policy,
            pacer=self._pacer,
            sleep=self._sleep,
            on_retry=retry_logger(logger, self.system, op),
        )

    def write(
        self,
        method: str,
        path: str,
        *,
        op: str,
        json: Mapping[str, Any] | None = None,
        if_match: str | None = None,
    ) -> httpx.Response:
        """A write with the session's CSRF token; 404 and 412 are the caller's."""
        headers = {"If-Match": if_match} if if_match else {}
        for attempt in (1, 2):
            headers["x-csrf-token"] = self._csrf_token()
            response = self.send(method, path, op=op, json=json, headers=headers)
            if not (csrf_required(response) and attempt == 1):
                break
            self._token = None
        if response.status_code in (404, 412) and is_odata_error(response):
            return response
        self.raise_for(response, op)
        return response

    def collect(
        self, set_name: str, params: Mapping[str, str], *, op: str
    ) -> list[dict[str, Any]]:
        """Every entity of a partner-service query, following ``__next``."""
        rows: list[dict[str, Any]] = []
        url: str | httpx.URL | None = set_name
        query: Mapping[str, str] | None = params
        while url is not None:
            response = self.send("GET", url, op=op, params=query)
            self.raise_for(response, op)
            page = payload(response, self.system, op)
            rows.extend(page.get("results", []))
            url, query = self._next_link(page.get("__next"), op), None
        return rows

    def raise_for(
        self, response: httpx.Response, op: str, service: Service = PARTNERS
    ) -> None:
        """Errors for the answers retrying cannot help (``send`` took the rest)."""
        status = response.status_code
        if status < 400:
            return
        prefix = f"{self.system}: {op} answered HTTP {status}"
        if status == 401:
            raise ConfigError(f"{prefix}; check username and password")
        if status == 404 and not is_odata_error(response):
            raise ConfigError(
                f"{prefix} without an OData error; check {service.setting}, which "
                f"must be the {service.name} service root"
            )
        if status == 403:
            raise ConnectorError(
                f"{prefix}; check the communication user's authorisations "
                f"(scenario {service.scenario})",
                status=status,
            )
        raise ConnectorError(
            f"{prefix}; check the API version against $metadata", status=status
        )

    def _csrf_token(self) -> str:
        if self._token is None:
            op = "fetch CSRF token"
            response = self.send("GET", "", op=op, headers={"x-csrf-token": "Fetch"})
            self.raise_for(response, op)
            token = response.headers.get("x-csrf-token", "")
            if not token or token.lower() == "required":
                raise ConnectorError(
                    f"{self.system}: {op} got no token; check that the service "
                    "root is API_BUSINESS_PARTNER and CSRF protection is standard",
                    status=response.status_code,
                )
            self._token = token
        return self._token

    def _next_link(self, link: str | None, op: str) -> httpx.URL | None:
        if not link:
            return None
        url = self.root.join(link)
        if (url.scheme, url.host, url.port) != (
            self.root.scheme,
            self.root.host,
            self.root.port,
        ):
            raise ConnectorError(
                f"{self.system}: {op} was given a next-page link to another host; "
                "check base_url against the host SAP reports"
            )
        return url

    def _attempt(
        self, method: str, url: str | httpx.URL, *, op: str, **options: Any
    ) -> httpx.Response:
        try:
            response = self._client.request(method, url, **options)
        except httpx.TimeoutException:
            raise TransientConnectorError(
                f"{self.system}: {op} timed out after {self._timeout:g} s; "
                "retry later or raise the timeout"
            ) from None
        except httpx.TransportError as exc:
            raise TransientConnectorError(
                f"{self.system}: {op} could not reach SAP ({type(exc).__name__}); "
                "check the service URLs and the network"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientConnectorError(
                f"{self.system}: {op} answered HTTP {status}; SAP is busy or "
                "failing, retry later",
                status=status,
                retry_after=parse_retry_after(response),
            )
        return response
