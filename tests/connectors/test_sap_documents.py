"""Last-document dates from API_BILLING_DOCUMENT_SRV, over loopback HTTP.

The retention clock of §257 HGB / §147 AO starts at the end of the year of a
partner's last document, so the SAP connector reads each partner's latest
billing document that is not cancelled before it blocks the partner.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from connectors._sap_odata import odata_date
from connectors.sap import SapBusinessPartnerConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.sap import BILLING_ROOT, SERVICE_ROOT, SapStore, create_app
from lethe.errors import ConfigError, TransientConnectorError
from lethe.estate import jobs
from lethe.estate.people import billing_history, from_sample_data
from tests._sap import PASSWORD, USER, sap_connector
from tests._servers import Served, serve

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATA = Path(os.environ.get("LETHE_SAMPLE_DATA", REPO.parent / "shared" / "data"))
SFLIGHT = SAMPLE_DATA / "erp" / "sap-cap-sflight"


@pytest.fixture(scope="module")
def served() -> Iterator[Served[SapStore]]:
    store = SapStore()
    yield from serve(
        store, create_app(store, username=USER, password=PASSWORD, page_size=2)
    )


@pytest.fixture
def billing(server: EmulatorServer) -> Iterator[httpx.Client]:
    client = httpx.Client(
        base_url=server.base_url + BILLING_ROOT + "/", auth=(USER, PASSWORD)
    )
    yield client
    client.close()


def _partner(store: SapStore, name: str = "Lee") -> str:
    return store.create_partner(
        first_name="Ann", last_name=name, email=f"{name.lower()}@example.com"
    )


def _keys(*ids: str) -> dict[str, list[str]]:
    return {"A_BusinessPartner": list(ids)}


# -- the emulated service ---------------------------------------------------------


def test_billing_service_answers_the_documented_envelope(
    store: SapStore, billing: httpx.Client
) -> None:
    partner = _partner(store)
    number = store.add_billing_document(partner, "2025-02-12", net_amount="438.5")

    response = billing.get(
        "A_BillingDocument",
        params={"$filter": f"SoldToParty eq '{partner}'", "$format": "json"},
    )
    entity = response.json()["d"]["results"][0]

    assert response.status_code == 200
    assert (
        entity["__metadata"]["type"] == "API_BILLING_DOCUMENT_SRV.A_BillingDocumentType"
    )
    assert entity["__metadata"]["uri"].endswith(
        f"{BILLING_ROOT}/A_BillingDocument('{number}')"
    )
    assert entity["BillingDocumentDate"] == "/Date(1739318400000)/"
    assert (entity["TotalNetAmount"], entity["TransactionCurrency"]) == (
        "438.50",
        "EUR",
    )
    assert (entity["SoldToParty"], entity["BillingDocumentType"]) == (partner, "F2")
    assert entity["BillingDocumentIsCancelled"] is False


def test_billing_service_orders_tops_and_selects(
    store: SapStore, billing: httpx.Client
) -> None:
    partner = _partner(store)
    for day in ("2023-05-02", "2025-01-09", "2024-11-30"):
        store.add_billing_document(partner, day)

    response = billing.get(
        "A_BillingDocument",
        params={
            "$filter": f"SoldToParty eq '{partner}' "
            "and BillingDocumentIsCancelled eq false",
            "$orderby": "BillingDocumentDate desc",
            "$top": "2",
            "$select": "BillingDocument,BillingDocumentDate",
        },
    )
    rows = response.json()["d"]["results"]

    assert [odata_date(r["BillingDocumentDate"]) for r in rows] == [
        date(2025, 1, 9),
        date(2024, 11, 30),
    ]
    assert set(rows[0]) == {"__metadata", "BillingDocument", "BillingDocumentDate"}
    assert "__next" not in response.json()["d"]


def test_billing_service_is_read_only(store: SapStore, billing: httpx.Client) -> None:
    number = store.add_billing_document(_partner(store), "2025-02-12")
    fetch = billing.get("", headers={"x-csrf-token": "Fetch"})
    token = {"x-csrf-token": fetch.headers["x-csrf-token"]}
    path = f"A_BillingDocument('{number}')"

    without_token = billing.patch(path, json={"TotalNetAmount": "1.00"})
    patched = billing.patch(
        path, json={"TotalNetAmount": "1.00"}, headers={**token, "If-Match": "*"}
    )
    created = billing.post("A_BillingDocument", json={}, headers=token)
    deleted = billing.delete(path, headers=token)
    metadata = billing.get("$metadata").text

    assert without_token.status_code == 403
    assert [r.status_code for r in (patched, created, deleted)] == [405, 405, 405]
    assert 'sap:creatable="false" sap:updatable="false" sap:deletable="false"' in (
        metadata
    )
    assert billing.get(path).json()["d"]["TotalNetAmount"] == "100.00"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"$format": "xml"}, 501),
        ({"$filter": "Nonsense eq 'x'"}, 400),
        ({"$orderby": "BillingDocumentDate sideways"}, 400),
    ],
)
def test_billing_service_rejects_what_it_does_not_serve(
    billing: httpx.Client, params: dict[str, str], status: int
) -> None:
    response = billing.get("A_BillingDocument", params=params)

    assert response.status_code == status
    assert set(response.json()["error"]) >= {"code", "message"}


def test_billing_service_needs_basic_auth(server: EmulatorServer) -> None:
    response = httpx.get(server.base_url + BILLING_ROOT + "/A_BillingDocument")

    assert response.status_code == 401


# -- OData dates --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/Date(1739318400000)/", date(2025, 2, 12)),
        ("/Date(-14256000000)/", date(1969, 7, 20)),
        ("/Date(-1)/", date(1969, 12, 31)),
        ("/Date(1739314800000+0060)/", date(2025, 2, 12)),
        ("/Date(1739318400000-0120)/", date(2025, 2, 11)),
        ("2025-02-12T23:30:00+01:00", date(2025, 2, 12)),
        ("2025-02-12", date(2025, 2, 12)),
        ("/Date(1739318400000+60)/", None),
        ("/Date(abc)/", None),
        ("", None),
        (None, None),
        (1739318400000, None),
    ],
)
def test_odata_date_reads_every_v2_form(value: object, expected: date | None) -> None:
    assert odata_date(value) == expected


# -- the connector --------------------------------------------------------------------


def test_sap_documents_latest_date_is_picked(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    partner, other = _partner(store), _partner(store, "Keep")
    for day in ("2022-03-01", "2024-10-15", "2023-12-31"):
        store.add_billing_document(partner, day)
    store.add_billing_document(other, "2025-06-30")

    assert sap.last_document_dates(_keys(partner)) == {partner: date(2024, 10, 15)}


def test_sap_documents_cancelled_are_ignored(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    partner = _partner(store)
    store.add_billing_document(partner, "2023-04-01")
    store.add_billing_document(partner, "2025-06-01", cancelled=True)
    only_cancelled = _partner(store, "Void")
    store.add_billing_document(only_cancelled, "2025-01-01", cancelled=True)

    found = sap.last_document_dates(_keys(partner, only_cancelled))

    assert found == {partner: date(2023, 4, 1)}


def test_sap_documents_partners_with_none_are_absent(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    billed, unbilled = _partner(store), _partner(store, "None")
    store.add_billing_document(billed, "2024-02-29")
    # A partner without the customer role is never billed as a customer, even
    # if a document names its partner number.
    no_customer = store.insert_tree(
        {"BusinessPartnerCategory": "1", "LastName": "Vendor"}, [], customer=None
    )
    store.add_billing_document(no_customer, "2025-01-01")

    found = sap.last_document_dates(_keys(billed, unbilled, no_customer, "9999999"))

    assert found == {billed: date(2024, 2, 29)}


def test_sap_documents_pre_1970_dates_cross_the_wire(
    store: SapStore, sap: SapBusinessPartnerConnector, billing: httpx.Client
) -> None:
    partner = _partner(store)
    store.add_billing_document(partner, "1969-07-20")

    raw = billing.get("A_BillingDocument").json()["d"]["results"][0]

    assert raw["BillingDocumentDate"] == "/Date(-14256000000)/"
    assert sap.last_document_dates(_keys(partner)) == {partner: date(1969, 7, 20)}


def test_sap_documents_erase_carries_the_latest_across_partners(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    first, second, unbilled = (_partner(store, n) for n in ("One", "Two", "Three"))
    store.add_billing_document(first, "2021-08-08")
    store.add_billing_document(second, "2024-05-17")
    store.add_billing_document(second, "2025-03-03", cancelled=True)

    outcome = sap.erase(_keys(first, second, unbilled), idempotency_key="req-1:erp")

    assert (outcome.action, outcome.records_affected) == ("retained", 3)
    assert outcome.dates == {"last_document": "2024-05-17"}
    assert outcome.retained_until == date(date.today().year + 10, 12, 31)
    assert outcome.detail == (
        "blocked and anonymised; 1 partner(s) have no billing document"
    )
    assert sap.verify(_keys(first, second, unbilled)).verified


def test_sap_documents_erase_without_any_says_so(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    partner = _partner(store)

    outcome = sap.erase(_keys(partner), idempotency_key="req-1:erp")
    again = sap.erase(_keys(partner), idempotency_key="req-1:erp")

    assert outcome.action == again.action == "retained"
    assert "last_document" not in outcome.dates
    assert outcome.detail.endswith("; no billing document found for the partner(s)")
    assert partner not in outcome.detail


def test_sap_documents_rate_limits_and_server_errors_are_retried(
    store: SapStore, server: EmulatorServer
) -> None:
    partner = _partner(store)
    store.add_billing_document(partner, "2024-01-31")
    sleeps: list[float] = []
    sap = sap_connector(server, max_attempts=3, sleep=sleeps.append)
    seen = len(server.faults.injected)
    server.faults.add("429", BILLING_ROOT, retry_after=2)
    server.faults.add("503", BILLING_ROOT)

    outcome = sap.erase(_keys(partner), idempotency_key="req-1:erp")
    sap.close()

    assert outcome.dates == {"last_document": "2024-01-31"}
    assert [f["kind"] for f in server.faults.injected[seen:]] == ["429", "503"]
    assert len(sleeps) == 2 and sleeps[0] >= 2.0


def test_sap_documents_failing_service_stops_erase_before_any_write(
    store: SapStore, server: EmulatorServer
) -> None:
    partner = _partner(store)
    before = store.checksum()
    sap = sap_connector(server, max_attempts=2, sleep=lambda _: None)
    seen = len(server.faults.injected)
    server.faults.add("503", BILLING_ROOT, times=5)

    with pytest.raises(TransientConnectorError, match="503"):
        sap.erase(_keys(partner), idempotency_key="req-1:erp")
    sap.close()

    assert len(server.faults.injected) - seen == 2
    assert store.checksum() == before


@pytest.mark.parametrize(
    "path",
    [
        "/sap/opu/odata/sap/API_BILLING_DOC",  # nothing there: a bare 404
        SERVICE_ROOT,  # another OData service: an OData 404 for the set
    ],
)
def test_sap_documents_wrong_service_path_is_config_error(
    store: SapStore, server: EmulatorServer, path: str
) -> None:
    partner = _partner(store)
    store.add_billing_document(partner, "2024-01-31")
    before = store.checksum()
    sap = sap_connector(server, billing_base_url=server.base_url + path)

    with pytest.raises(ConfigError, match="billing_base_url") as caught:
        sap.erase(_keys(partner), idempotency_key="req-1:erp")
    sap.close()

    assert store.checksum() == before
    assert partner not in str(caught.value)


def test_sap_documents_can_be_switched_off(
    store: SapStore, server: EmulatorServer
) -> None:
    partner = _partner(store)
    store.add_billing_document(partner, "2024-01-31")
    seen = len(server.faults.injected)
    server.faults.add("503", BILLING_ROOT, times=5)
    sap = sap_connector(server, read_billing_documents=False)

    outcome = sap.erase(_keys(partner), idempotency_key="req-1:erp")
    sap.close()

    assert outcome.dates == {}
    assert "read_billing_documents is off" in outcome.detail
    assert len(server.faults.injected) == seen


# -- the sample estate's billing ------------------------------------------------------


def test_generated_billing_history_is_stable_and_sometimes_empty() -> None:
    today = date(2026, 6, 1)
    histories = [billing_history(n, today=today) for n in range(10)]

    assert histories == [billing_history(n, today=today) for n in range(10)]
    assert histories[4] == histories[9] == []
    assert all(1 <= len(histories[n]) <= 4 for n in (0, 1, 2, 3, 5, 6, 7, 8))
    assert all(
        date(2022, 6, 1) <= d.on < today for history in histories for d in history
    )


@pytest.mark.skipif(
    not (SFLIGHT / "sap.fe.cap.travel-Booking.csv").is_file(),
    reason=f"sflight sample data not found at {SFLIGHT}; set LETHE_SAMPLE_DATA",
)
def test_sflight_passengers_are_billed_for_their_bookings(
    store: SapStore, sap: SapBusinessPartnerConnector
) -> None:
    with (SFLIGHT / "sap.fe.cap.travel-Booking.csv").open(newline="") as handle:
        bookings = [
            row
            for row in csv.DictReader(handle, delimiter=";")
            if row["to_Customer_CustomerID"] == "000001"
        ]
    passenger = from_sample_data(SAMPLE_DATA).erp_customers[0]
    partner = _partner(store, passenger.last_name)

    jobs.erp_billing(store, {partner: passenger.documents})
    found = sap.last_document_dates(_keys(partner))

    assert len(passenger.documents) == len(bookings) > 0
    assert sorted(d.on.isoformat() for d in passenger.documents) == sorted(
        b["BookingDate"] for b in bookings
    )
    kept = [d.on for d in passenger.documents if not d.cancelled]
    assert found == ({partner: max(kept)} if kept else {})
