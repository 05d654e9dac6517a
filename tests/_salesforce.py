"""One loopback server per Salesforce test module; each test mounts its own org.

Starting a server costs more than a test, so the server stays up and ``Swap``
forwards to whichever emulator app the current test built.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI

from connectors.salesforce import SalesforceConnector
from lethe.emulators import EmulatorServer, Faults
from lethe.emulators.salesforce import SalesforceStore, create_app


class Swap:
    """An ASGI app that forwards to ``app``, which tests replace."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None
        self.state = SimpleNamespace(faults=Faults())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


def serve_swapped() -> Iterator[tuple[EmulatorServer, Swap]]:
    """Body of a module-scoped ``server`` fixture."""
    swap = Swap()
    with EmulatorServer(swap) as running:  # type: ignore[arg-type]
        yield running, swap


@dataclass
class Org:
    """An emulated org and a connector pointed at it."""

    store: SalesforceStore
    app: FastAPI
    connector: SalesforceConnector
    base_url: str

    @property
    def faults(self) -> Faults:
        return self.app.state.faults  # type: ignore[no-any-return]

    @property
    def calls(self) -> Counter[str]:
        """Data API calls the org served, by ``"METHOD /services/data/..."``."""
        return self.app.state.calls  # type: ignore[no-any-return]


def org_factory(running: EmulatorServer, swap: Swap) -> Iterator[Any]:
    """Body of a ``make_org`` fixture: ``make(...)`` builds a fresh org and its
    connector; every connector is closed afterwards."""
    made: list[SalesforceConnector] = []

    def make(
        *,
        base_url: str | None = None,
        secret: str = "secret",
        timeout: float = 5.0,
        max_attempts: int = 4,
        transport: httpx.BaseTransport | None = None,
        connector_version: str = "v60.0",
        delete_mode: str = "hard",
        sleep: Callable[[float], None] = time.sleep,
        **settings: Any,
    ) -> Org:
        store = SalesforceStore()
        settings.setdefault("bulk_step_seconds", 0.02)
        swap.app = create_app(
            store, client_id="cid", client_secret="secret", **settings
        )
        connector = SalesforceConnector(
            system="crm",
            base_url=base_url or running.base_url,
            client_id="cid",
            client_secret=secret,
            api_version=connector_version,
            timeout=timeout,
            poll_interval=0.01,
            max_attempts=max_attempts,
            transport=transport,
            delete_mode=delete_mode,
            sleep=sleep,
        )
        made.append(connector)
        return Org(store, swap.app, connector, running.base_url)

    yield make
    for connector in made:
        connector.close()
