"""The API_BUSINESS_PARTNER emulator over loopback HTTP, as an OData client sees it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lethe.emulators import EmulatorServer
from lethe.emulators.sap import SERVICE_ROOT, SapStore, create_app
from tests._servers import Served, serve

USER, PASSWORD = "COMM_USER", "s3cret"
SAP_NS = "{http://www.sap.com/Protocols/SAPData}"


@dataclass
class Sap:
    store: SapStore
    server: EmulatorServer
    client: httpx.Client

    def token(self) -> str:
        response = self.client.get("", headers={"x-csrf-token": "Fetch"})
        assert response.status_code == 200
        return response.headers["x-csrf-token"]


@pytest.fixture(scope="module")
def served() -> Iterator[Served[SapStore]]:
    store = SapStore()
    yield from serve(
        store, create_app(store, username=USER, password=PASSWORD, page_size=2)
    )


@pytest.fixture
def sap(store: SapStore, server: EmulatorServer) -> Iterator[Sap]:
    client = httpx.Client(
        base_url=server.base_url + SERVICE_ROOT + "/",
        auth=(USER, PASSWORD),
        headers={"Accept": "application/json"},
    )
    yield Sap(store, server, client)
    client.close()


def _people(store: SapStore, count: int) -> list[str]:
    return [
        store.create_partner(
            first_name=f"First{n}",
            last_name=f"Last{n}",
            email=f"p{n}@example.com",
            phone=f"+49 30 100{n}",
            city="Berlin",
            country="DE",
        )
        for n in range(count)
    ]


def _deep_insert_body() -> dict[str, object]:
    return {
        "BusinessPartnerCategory": "1",
        "FirstName": "Nora",
        "LastName": "Quist",
        "BusinessPartnerIDByExtSystem": "0035g00000AbCdEAAV",
        "BirthDate": "/Date(318384000000)/",
        "to_BusinessPartnerAddress": {
            "results": [
                {
                    "StreetName": "Lindenweg",
                    "CityName": "Bremen",
                    "Country": "DE",
                    "to_EmailAddress": {
                        "results": [{"EmailAddress": "Nora@Q.example"}]
                    },
                    "to_PhoneNumber": [{"PhoneNumber": "0421 555"}],
                }
            ]
        },
        "to_Customer": {},
    }


def test_sap_emulator_requires_basic_auth(sap: Sap) -> None:
    response = httpx.get(sap.server.base_url + SERVICE_ROOT + "/A_BusinessPartner")
    wrong = httpx.get(
        sap.server.base_url + SERVICE_ROOT + "/A_BusinessPartner", auth=(USER, "no")
    )

    assert response.status_code == 401
    assert wrong.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_sap_write_without_csrf_token_is_refused(sap: Sap) -> None:
    response = sap.client.post("A_BusinessPartner", json=_deep_insert_body())

    assert response.status_code == 403
    assert response.headers["x-csrf-token"] == "Required"
    error = response.json()["error"]
    assert error["message"] == {"lang": "en", "value": "CSRF token validation failed"}
    assert sap.store.count() == 0


def test_sap_csrf_token_needs_its_session_cookie(sap: Sap) -> None:
    token = sap.token()
    stranger = httpx.Client(
        base_url=str(sap.client.base_url), auth=(USER, PASSWORD)
    )  # no cookie jar shared

    response = stranger.post(
        "A_BusinessPartner", json=_deep_insert_body(), headers={"x-csrf-token": token}
    )
    stranger.close()

    assert response.status_code == 403
    assert sap.store.count() == 0


def test_sap_deep_insert_creates_partner_with_children(sap: Sap) -> None:
    response = sap.client.post(
        "A_BusinessPartner",
        json=_deep_insert_body(),
        headers={"x-csrf-token": sap.token()},
    )

    assert response.status_code == 201
    created = response.json()["d"]
    bp = created["BusinessPartner"]
    assert response.headers["location"].endswith(f"/A_BusinessPartner('{bp}')")
    assert created["__metadata"]["type"] == "API_BUSINESS_PARTNER.A_BusinessPartnerType"
    stored = sap.store.partner(bp)
    assert stored["BirthDate"] == "1980-02-03"
    assert stored["BusinessPartnerFullName"] == "Nora Quist"
    (address,) = stored["addresses"]
    assert address["emails"][0]["SearchEmailAddress"] == "NORA@Q.EXAMPLE"
    assert address["phones"][0]["PhoneNumber"] == "0421 555"
    assert stored["customer"]["CustomerName"] == "Nora Quist"


def test_sap_deep_insert_rejects_unknown_property(sap: Sap) -> None:
    body = {**_deep_insert_body(), "ShoeSize": "44"}

    response = sap.client.post(
        "A_BusinessPartner", json=body, headers={"x-csrf-token": sap.token()}
    )

    assert response.status_code == 400
    assert "ShoeSize" in response.json()["error"]["message"]["value"]
    assert sap.store.count() == 0


def test_sap_patch_with_stale_etag_is_412(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)
    token = sap.token()
    read = sap.client.get(f"A_BusinessPartner('{bp}')")
    etag = read.json()["d"]["__metadata"]["etag"]
    assert read.headers["etag"] == etag
    sap.store.update_partner(bp, SearchTerm1="CLERK")

    stale = sap.client.patch(
        f"A_BusinessPartner('{bp}')",
        json={"FirstName": "Changed"},
        headers={"x-csrf-token": token, "If-Match": etag},
    )

    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "/IWBEP/CM_MGW_RT/190"
    assert sap.store.partner(bp)["FirstName"] == "First0"


def test_sap_patch_with_current_etag_succeeds_and_changes_it(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)
    token = sap.token()
    etag = sap.client.get(f"A_BusinessPartner('{bp}')").json()["d"]["__metadata"][
        "etag"
    ]

    response = sap.client.request(
        "MERGE",
        f"A_BusinessPartner('{bp}')",
        json={"FirstName": "Changed", "BusinessPartnerIsBlocked": True},
        headers={"x-csrf-token": token, "If-Match": etag},
    )

    assert response.status_code == 204
    assert response.headers["etag"] != etag
    stored = sap.store.partner(bp)
    assert stored["FirstName"] == "Changed"
    assert stored["BusinessPartnerIsBlocked"] is True


def test_sap_patch_without_if_match_is_428(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)

    response = sap.client.patch(
        f"A_BusinessPartner('{bp}')",
        json={"FirstName": "Changed"},
        headers={"x-csrf-token": sap.token()},
    )

    assert response.status_code == 428
    assert sap.store.partner(bp)["FirstName"] == "First0"


def test_sap_name_change_reaches_customer_name(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)

    response = sap.client.patch(
        f"A_BusinessPartner('{bp}')",
        json={"BusinessPartnerFullName": "Someone Else"},
        headers={"x-csrf-token": sap.token(), "If-Match": "*"},
    )

    assert response.status_code == 204
    customer = sap.client.get(f"A_Customer('{bp}')").json()["d"]
    assert customer["CustomerName"] == "Someone Else"


@pytest.mark.parametrize("entity", ["A_BusinessPartner", "A_Customer"])
def test_sap_partner_and_customer_cannot_be_deleted(sap: Sap, entity: str) -> None:
    (bp,) = _people(sap.store, 1)
    before = sap.store.checksum()

    response = sap.client.delete(
        f"{entity}('{bp}')", headers={"x-csrf-token": sap.token()}
    )

    assert response.status_code == 405
    assert "DELETE" not in response.headers["allow"]
    assert "not deletable" in response.json()["error"]["message"]["value"]
    assert sap.store.checksum() == before


def test_sap_email_and_phone_entries_can_be_deleted(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)
    token = sap.token()
    address = sap.store.partner(bp)["addresses"][0]
    key = (
        f"AddressID='{address['AddressID']}',Person='{address['Person']}',"
        "OrdinalNumber='1'"
    )

    email = sap.client.delete(
        f"A_AddressEmailAddress({key})", headers={"x-csrf-token": token}
    )
    phone = sap.client.delete(
        f"A_AddressPhoneNumber({key})", headers={"x-csrf-token": token}
    )
    again = sap.client.delete(
        f"A_AddressEmailAddress({key})", headers={"x-csrf-token": token}
    )

    assert (email.status_code, phone.status_code, again.status_code) == (204, 204, 404)
    left = sap.store.partner(bp)["addresses"][0]
    assert left["emails"] == [] and left["phones"] == []


def test_sap_deleting_an_address_removes_its_entries(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)
    address_id = sap.store.partner(bp)["addresses"][0]["AddressID"]

    response = sap.client.delete(
        f"A_BusinessPartnerAddress(BusinessPartner='{bp}',AddressID='{address_id}')",
        headers={"x-csrf-token": sap.token()},
    )

    assert response.status_code == 204
    emails = sap.client.get("A_AddressEmailAddress").json()["d"]["results"]
    assert emails == []


def test_sap_filter_joins_and_or_with_escaped_quotes(sap: Sap) -> None:
    _people(sap.store, 2)
    obrien = sap.store.create_partner(first_name="Sean", last_name="O'Brien")
    sap.store.create_partner(first_name="Sean", last_name="Other")

    either = sap.client.get(
        "A_BusinessPartner",
        params={"$filter": "LastName eq 'O''Brien' or LastName eq 'Last1'"},
    )
    both = sap.client.get(
        "A_BusinessPartner",
        params={"$filter": "FirstName eq 'Sean' and (LastName eq 'O''Brien')"},
    )

    assert {r["LastName"] for r in either.json()["d"]["results"]} == {
        "O'Brien",
        "Last1",
    }
    assert [r["BusinessPartner"] for r in both.json()["d"]["results"]] == [obrien]


def test_sap_filter_on_unknown_property_is_400(sap: Sap) -> None:
    response = sap.client.get("A_BusinessPartner", params={"$filter": "Nope eq 'x'"})

    assert response.status_code == 400
    assert response.json()["error"]["message"]["lang"] == "en"


def test_sap_select_returns_only_chosen_properties(sap: Sap) -> None:
    _people(sap.store, 1)

    response = sap.client.get(
        "A_BusinessPartner", params={"$select": "BusinessPartner,LastName"}
    )

    (row,) = response.json()["d"]["results"]
    assert set(row) == {"__metadata", "BusinessPartner", "LastName"}


def test_sap_expand_inlines_nested_navigation(sap: Sap) -> None:
    (bp,) = _people(sap.store, 1)
    expand = (
        "to_BusinessPartnerAddress/to_EmailAddress,"
        "to_BusinessPartnerAddress/to_PhoneNumber,to_Customer"
    )

    expanded = sap.client.get(f"A_BusinessPartner('{bp}')", params={"$expand": expand})
    plain = sap.client.get(f"A_BusinessPartner('{bp}')")

    entity = expanded.json()["d"]
    (address,) = entity["to_BusinessPartnerAddress"]["results"]
    assert address["to_EmailAddress"]["results"][0]["EmailAddress"] == "p0@example.com"
    assert address["to_PhoneNumber"]["results"][0]["PhoneNumber"] == "+49 30 1000"
    assert entity["to_Customer"]["Customer"] == bp
    deferred = plain.json()["d"]["to_BusinessPartnerAddress"]["__deferred"]["uri"]
    assert sap.client.get(deferred).json()["d"]["results"][0]["AddressID"]


def test_sap_server_paging_follows_next_links(sap: Sap) -> None:
    ids = _people(sap.store, 5)

    page = sap.client.get(
        "A_BusinessPartner", params={"$inlinecount": "allpages"}
    ).json()["d"]
    seen, pages = [r["BusinessPartner"] for r in page["results"]], 1
    while "__next" in page:
        page = sap.client.get(page["__next"]).json()["d"]
        seen += [r["BusinessPartner"] for r in page["results"]]
        pages += 1

    assert seen == ids
    assert pages == 3
    assert page["__count"] == "5"


def test_sap_top_and_skip_window_the_collection(sap: Sap) -> None:
    ids = _people(sap.store, 5)

    first = sap.client.get("A_BusinessPartner", params={"$top": "3", "$skip": "1"})
    rest = sap.client.get(first.json()["d"]["__next"]).json()["d"]

    got = [r["BusinessPartner"] for r in first.json()["d"]["results"]]
    got += [r["BusinessPartner"] for r in rest["results"]]
    assert got == ids[1:4]
    assert "__next" not in rest


def test_sap_unknown_entity_set_or_key_is_404_with_odata_error(sap: Sap) -> None:
    unknown_set = sap.client.get("A_Nothing")
    unknown_key = sap.client.get("A_BusinessPartner('9999999')")

    for response in (unknown_set, unknown_key):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] and error["message"]["lang"] == "en"


def test_sap_metadata_states_deletable_flags(sap: Sap) -> None:
    response = sap.client.get("$metadata")

    root = ET.fromstring(response.text)
    flags = {
        node.get("Name"): node.get(f"{SAP_NS}deletable")
        for node in root.iter("{http://schemas.microsoft.com/ado/2008/09/edm}EntitySet")
    }
    assert flags["A_BusinessPartner"] == "false"
    assert flags["A_Customer"] == "false"
    assert flags["A_AddressEmailAddress"] == "true"


def test_sap_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sap.sqlite"
    first = SapStore(path)
    old = first.create_partner(first_name="Ida", last_name="Lund", email="i@l.example")
    checksum = first.checksum()
    first.close()

    second = SapStore(path)
    new = second.create_partner(first_name="Ole", last_name="Lund")

    assert second.checksum(exclude=[new]) == checksum
    assert (
        second.partner(old)["addresses"][0]["emails"][0]["EmailAddress"]
        == "i@l.example"
    )
    assert new != old
    second.close()


def test_sap_checksum_excludes_a_partner_and_its_children() -> None:
    store = SapStore()
    keep, target = _people(store, 2)
    before = store.checksum(exclude=[target])

    store.update_partner(target, FirstName="Changed")

    assert store.checksum(exclude=[target]) == before
    assert store.checksum() != store.checksum(exclude=[target])
    assert store.partner(keep)["FirstName"] == "First0"
