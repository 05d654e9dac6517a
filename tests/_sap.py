"""The SAP connector tests' shared parts: credentials, and a connector on a served
emulator (each module serves its own, with the page size its cases need)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.sap import SapBusinessPartnerConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.sap import SERVICE_ROOT

USER, PASSWORD = "COMM_USER", "s3cret"


def sap_connector(
    server: EmulatorServer, **options: object
) -> SapBusinessPartnerConnector:
    settings: dict[str, object] = {
        "system": "erp",
        "base_url": server.base_url + SERVICE_ROOT,
        "username": USER,
        "password": PASSWORD,
        "timeout": 2.0,
    }
    return SapBusinessPartnerConnector(**{**settings, **options})  # type: ignore[arg-type]


@pytest.fixture
def sap(server: EmulatorServer) -> Iterator[SapBusinessPartnerConnector]:
    connector = sap_connector(server)
    yield connector
    connector.close()
