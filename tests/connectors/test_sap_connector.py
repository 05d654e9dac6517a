"""SapBusinessPartnerConnector against the SAP emulator over loopback HTTP."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from connectors.base import SyncConnector
from connectors.registry import build
from connectors.sap import PLACEHOLDER, SapBusinessPartnerConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.sap import SERVICE_ROOT, SapStore, create_app
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._sap import PASSWORD, USER, sap_connector
from tests._servers import Served, serve

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATA = Path(os.environ.get("LETHE_SAMPLE_DATA", REPO.parent / "shared" / "data"))
PASSENGERS = SAMPLE_DATA / "erp" / "sap-cap-sflight" / "sap.fe.cap.travel-Passenger.csv"


@pytest.fixture(scope="module")
def served() -> Iterator[Served[SapStore]]:
    store = SapStore()
    yield from serve(
        store, create_app(store, username=USER, password=PASSWORD, page_size=3)
    )


def _subject(store: SapStore) -> str:
    return store.create_partner(
        first_name="Ann",
        last_name="O'Brien",
        email="Ann.OBrien@Example.com",
        phone="+49 30 1234567",
        street="Lindenstr. 5",
        postal_code="10115",
        city="Berlin",
        country="DE",
        ext_id="0035g00000AbCdEAAV",
        birth_date="1980-02-03",
    )


def _bystander(store: SapStore) -> str:
    return store.create_partner(
        first_name="Ben",
        last_name="Keep",
        email="ben@example.com",
        phone="+49 40 7654321",
        city="Hamburg",
        country="DE",
        ext_id="0035g00000ZyXwVAAV",
    )


def _keys(*ids: str) -> dict[str, list[str]]:
    return {"A_BusinessPartner": list(ids)}


class _ConcurrentClerk(httpx.BaseTransport):
    """Real HTTP, but a clerk edits the partner just before the connector's PATCH."""

    def __init__(self, store: SapStore, bp: str, edits: int) -> None:
        self._inner = httpx.HTTPTransport()
        self._store, self._bp, self._edits = store, bp, edits
        self.partner_patches = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and "/A_BusinessPartner(" in request.url.path:
            self.partner_patches += 1
            if self._edits:
                self._edits -= 1
                self._store.update_partner(self._bp, SearchTerm1="CLERK")
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def test_sap_connector_is_a_syncsap_connector(sap: SapBusinessPartnerConnector) -> None:
    assert isinstance(sap, SyncConnector)
    assert sap.capabilities.anonymise and not sap.capabilities.hard_delete


def test_sap_connector_is_built_from_estate_settings(server: EmulatorServer) -> None:
    settings = {
        "kind": "sap_business_partner",
        "base_url": server.base_url + SERVICE_ROOT,
        "username": USER,
        "password": PASSWORD,
        "retention_years": 8,
    }

    connector = build("erp", settings)

    assert isinstance(connector, SapBusinessPartnerConnector)
    assert connector.retention_years == 8
    connector.close()


def test_sap_connector_finds_partners_by_ext_id_and_email(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    subject, bystander = _subject(store), _bystander(store)

    by_ext = sap.find_partners(ext_ids=["0035g00000AbCdEAAV"])
    by_email = sap.find_partners(emails=["  ann.obrien@EXAMPLE.com "])
    by_both = sap.find_partners(
        ext_ids=["0035g00000ZyXwVAAV"], emails=["ann.obrien@example.com"]
    )
    nobody = sap.find_partners(ext_ids=["x' or BusinessPartner ne '"])

    assert by_ext == [subject]
    assert by_email == [subject]
    assert by_both == sorted([subject, bystander])
    assert nobody == []


def test_sap_connector_finds_many_partners_across_pages(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    ids = [
        store.create_partner(first_name="P", last_name=str(n), ext_id=f"EXT{n:03d}")
        for n in range(20)
    ]

    found = sap.find_partners(ext_ids=[f"EXT{n:03d}" for n in range(20)])

    assert found == sorted(ids)


def test_sap_connector_erase_then_verify_leaves_bystander_unchanged(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    subject, bystander = _subject(store), _bystander(store)
    before = store.checksum(exclude=[subject])
    assert sap.locate(_keys(subject, bystander)).counts == {"A_BusinessPartner": 2}

    outcome = sap.erase(_keys(subject), idempotency_key="req-1:erp")
    evidence = sap.verify(_keys(subject))

    assert (outcome.status, outcome.action, outcome.records_affected) == (
        "done",
        "retained",
        1,
    )
    assert outcome.retained_until == date(date.today().year + 10, 12, 31)
    assert outcome.basis == "HGB §257(1) / AO §147(1): books and records"
    assert outcome.detail == (
        "blocked and anonymised; no billing document found for the partner(s)"
    )
    assert "last_document" not in outcome.dates
    assert evidence.verified, evidence.detail
    assert evidence.observed == {
        "partners": 1,
        "missing": 0,
        "blocked": 1,
        "anonymised": 1,
        "emails": 0,
        "phones": 0,
        "customers_unblocked": 0,
    }
    assert store.checksum(exclude=[subject]) == before
    assert sap.locate(_keys(subject, bystander)).counts == {"A_BusinessPartner": 1}


def test_sap_connector_erase_overwrites_with_neutral_values(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    subject = _subject(store)

    sap.erase(_keys(subject), idempotency_key="req-1:erp")

    after = store.partner(subject)
    (address,) = after["addresses"]
    values = [v for v in [*after.values(), *address.values()] if isinstance(v, str)]
    for original in ("Ann", "O'Brien", "BRIEN", "Lindenstr", "10115", "Berlin"):
        assert not any(original in value for value in values)
    assert after["BirthDate"] is None
    assert after["FirstName"] == after["LastName"] == PLACEHOLDER
    assert address["emails"] == [] and address["phones"] == []
    assert address["Country"] == "DE"
    assert after["customer"]["PostingIsBlocked"] is True
    assert after["customer"]["OrderIsBlockedForCustomer"] == "01"
    assert after["customer"]["CustomerName"] == PLACEHOLDER
    assert after["BusinessPartnerIDByExtSystem"] == "0035g00000AbCdEAAV"


def test_sap_connector_second_erase_changes_nothing(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    subject = _subject(store)
    sap.erase(_keys(subject), idempotency_key="req-1:erp")
    after_first = store.checksum()

    again = sap.erase(_keys(subject), idempotency_key="req-1:erp")

    assert (again.status, again.action, again.records_affected) == (
        "done",
        "retained",
        0,
    )
    assert store.checksum() == after_first


def test_sap_connector_retries_once_on_stale_etag(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    clerk = _ConcurrentClerk(store, subject, edits=1)
    connector = sap_connector(server, transport=clerk)

    outcome = connector.erase(_keys(subject), idempotency_key="req-1:erp")

    assert outcome.records_affected == 1
    assert clerk.partner_patches == 2
    assert connector.verify(_keys(subject)).verified
    connector.close()


def test_sap_connector_gives_up_after_a_second_stale_etag(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    connector = sap_connector(
        server, transport=_ConcurrentClerk(store, subject, edits=2)
    )

    with pytest.raises(ConnectorError) as caught:
        connector.erase(_keys(subject), idempotency_key="req-1:erp")

    assert caught.value.status == 412
    assert subject not in str(caught.value)
    assert not connector.verify(_keys(subject)).verified
    connector.close()


def test_sap_connector_fetches_a_new_csrf_token_when_the_session_expired(
    store: SapStore, server: EmulatorServer, sap: SapBusinessPartnerConnector
) -> None:
    first, second = _subject(store), _bystander(store)
    sap.erase(_keys(first), idempotency_key="req-1:erp")

    server.app.state.sessions.expire_all()
    outcome = sap.erase(_keys(second), idempotency_key="req-2:erp")

    assert outcome.records_affected == 1
    assert sap.verify(_keys(first, second)).verified


def test_sap_connector_rate_limit_is_transient_with_retry_after(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    sap = sap_connector(server, max_attempts=1)
    server.faults.add("429", SERVICE_ROOT, retry_after=7)

    with pytest.raises(TransientConnectorError) as caught:
        sap.locate(_keys(subject))
    sap.close()

    assert caught.value.status == 429
    assert caught.value.retry_after == 7
    assert subject not in str(caught.value) and "erp" in str(caught.value)


def test_sap_connector_server_error_mid_erase_is_transient_and_not_done(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    sap = sap_connector(server, max_attempts=1)
    server.faults.add("500", SERVICE_ROOT + "/A_BusinessPartner(", method="PATCH")

    with pytest.raises(TransientConnectorError) as caught:
        sap.erase(_keys(subject), idempotency_key="req-1:erp")
    half_done = sap.verify(_keys(subject))
    retried = sap.erase(_keys(subject), idempotency_key="req-1:erp")

    assert caught.value.status == 500
    assert not half_done.verified
    assert half_done.observed["blocked"] == 0
    assert retried.records_affected == 1
    assert sap.verify(_keys(subject)).verified
    sap.close()


def test_sap_connector_timeout_is_transient(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    connector = sap_connector(server, timeout=0.2, max_attempts=1)
    server.faults.add("timeout", SERVICE_ROOT, delay=0.5)

    with pytest.raises(TransientConnectorError) as caught:
        connector.locate(_keys(subject))

    assert "timed out" in str(caught.value)
    connector.close()


def test_sap_connector_wrong_base_url_is_config_error(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    connector = sap_connector(
        server, base_url=server.base_url + "/sap/opu/odata/sap/API_BP"
    )

    with pytest.raises(ConfigError) as caught:
        connector.locate(_keys(subject))

    assert "base_url" in str(caught.value)
    connector.close()


def test_sap_connector_wrong_password_is_config_error(
    store: SapStore, server: EmulatorServer
) -> None:
    connector = sap_connector(server, password="wrong")

    with pytest.raises(ConfigError) as caught:
        connector.find_partners(ext_ids=["0035g00000AbCdEAAV"])

    assert "password" in str(caught.value)
    assert "0035g00000AbCdEAAV" not in str(caught.value)
    connector.close()


def test_sap_connector_unknown_partner_is_unresolved(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    _bystander(store)

    outcome = sap.erase(_keys("9999999"), idempotency_key="req-1:erp")
    evidence = sap.verify(_keys("9999999"))

    assert outcome.action == "already_absent"
    assert not evidence.verified
    assert evidence.observed["missing"] == 1
    assert "9999999" not in evidence.detail


def test_sap_connector_confirm_absent_keeps_retained_partners_present(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    subject, bystander = _subject(store), _bystander(store)
    sap.erase(_keys(subject), idempotency_key="req-1:erp")  # blocked, anonymised

    found = sap.confirm_absent(_keys(subject, bystander, "9999999"))

    assert found == {subject: False, bystander: False, "9999999": True}


def test_sap_connector_confirm_absent_needs_the_business_partner_service(
    server: EmulatorServer,
) -> None:
    other = FastAPI()

    @other.get("/sap/opu/odata/sap/API_OTHER/{rest:path}")
    async def odata(rest: str) -> JSONResponse:
        if not rest:
            return JSONResponse({"d": {"EntitySets": ["A_Product"]}})
        error = {"code": "/IWBEP/CM_MGW_RT/020", "message": {"value": "not found"}}
        return JSONResponse({"error": error}, status_code=404)

    with EmulatorServer(other) as elsewhere:
        wrong_service = sap_connector(
            elsewhere, base_url=elsewhere.base_url + "/sap/opu/odata/sap/API_OTHER"
        )
        with pytest.raises(ConfigError, match="API_BUSINESS_PARTNER"):
            wrong_service.confirm_absent(_keys("9999999"))
        wrong_service.close()
    html = sap_connector(server, base_url=server.base_url + "/sap/opu/odata/sap/API_BP")
    with pytest.raises(ConfigError, match="base_url") as caught:
        html.confirm_absent(_keys("9999999"))
    html.close()

    assert "9999999" not in str(caught.value)


def test_sap_connector_confirm_absent_faults_are_transient(
    store: SapStore, server: EmulatorServer
) -> None:
    subject = _subject(store)
    sap = sap_connector(server, max_attempts=1)
    server.faults.add("429", SERVICE_ROOT + "/A_BusinessPartner(", retry_after=4)
    with pytest.raises(TransientConnectorError) as caught:
        sap.confirm_absent(_keys(subject))
    server.faults.add("503", SERVICE_ROOT + "/A_BusinessPartner(")
    with pytest.raises(TransientConnectorError, match="503"):
        sap.confirm_absent(_keys(subject))
    sap.close()

    assert caught.value.retry_after == 4


def test_sap_connector_rejects_datasets_it_does_not_serve(
    sap: SapBusinessPartnerConnector,
) -> None:
    with pytest.raises(ConfigError):
        sap.locate({"A_Supplier": ["1000000"]})


def _load_passengers(store: SapStore, count: int) -> list[dict[str, str]]:
    with PASSENGERS.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=";")
        rows = [row for _, row in zip(range(count), reader, strict=False)]
    for row in rows:
        row["bp"] = store.create_partner(
            first_name=row["FirstName"],
            last_name=row["LastName"],
            email=row["EMailAddress"],
            phone=row["PhoneNumber"],
            street=row["Street"],
            postal_code=row["PostalCode"],
            city=row["City"],
            country=row["CountryCode_code"],
            ext_id=f"SFLIGHT{row['CustomerID']}",
        )
    return rows


@pytest.mark.skipif(
    not PASSENGERS.is_file(),
    reason=f"sflight sample data not found at {PASSENGERS}; set LETHE_SAMPLE_DATA",
)
def test_sap_connector_erases_one_sflight_passenger_among_twenty(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    passengers = _load_passengers(store, 20)
    target = passengers[4]
    others = [p["bp"] for p in passengers if p is not target]
    before = store.checksum(exclude=[target["bp"]])

    found = sap.find_partners(emails=[target["EMailAddress"].upper()])
    outcome = sap.erase(_keys(*found), idempotency_key="req-sflight:erp")
    evidence = sap.verify(_keys(*found))

    assert found == [target["bp"]]
    assert outcome.records_affected == 1 and evidence.verified
    assert store.checksum(exclude=[target["bp"]]) == before
    assert store.count() == 20
    assert sap.locate(_keys(*others)).counts == {"A_BusinessPartner": 19}
