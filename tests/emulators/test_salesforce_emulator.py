"""The Salesforce emulator speaks the org's documented REST and Bulk 2.0 API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore, create_app
from tests._salesforce import Swap, serve_swapped

V = "/services/data/v60.0"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorServer, Swap]]:
    yield from serve_swapped()


@dataclass
class Org:
    store: SalesforceStore
    http: httpx.Client
    app: FastAPI

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def select(
        self, fields: str, sobject: str, where: str, *, all_rows: bool = False
    ) -> httpx.Response:
        soql = f"SELECT {fields} FROM {sobject} WHERE {where}"  # noqa: S608
        return self.query(soql, all_rows=all_rows)

    def query(self, soql: str, *, all_rows: bool = False) -> httpx.Response:
        return self.http.get(
            f"{V}/{'queryAll' if all_rows else 'query'}", params={"q": soql}
        )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_org(server: tuple[EmulatorServer, Swap]) -> Iterator[Any]:
    running, swap = server
    clients: list[httpx.Client] = []

    def make(store: SalesforceStore | None = None, **settings: Any) -> Org:
        store = store or SalesforceStore()
        swap.app = create_app(
            store, client_id="cid", client_secret="secret", **settings
        )
        http = httpx.Client(base_url=running.base_url, timeout=5)
        clients.append(http)
        token = _token(http).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        return Org(store, http, swap.app)

    yield make
    for client in clients:
        client.close()


def _token(http: httpx.Client, secret: str = "secret") -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": secret,
    }
    return http.post("/services/oauth2/token", data=form, headers={"Authorization": ""})


def _contact(store: SalesforceStore, n: int, **fields: Any) -> str:
    return store.insert(
        "Contact", {"LastName": f"Person{n}", "Email": f"p{n}@example.org"} | fields
    )


# -- auth ------------------------------------------------------------------------


def test_token_client_credentials_returns_documented_fields(make_org: Any) -> None:
    org = make_org()

    body = _token(org.http).json()

    assert body["token_type"] == "Bearer"
    assert set(body) >= {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "issued_at",
    }
    assert body["id"].endswith(f"/{org.store.org_id}/{org.store.user_id}")
    assert body["issued_at"].isdigit()


def test_token_wrong_secret_is_invalid_client(make_org: Any) -> None:
    org = make_org()

    response = _token(org.http, secret="nope")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert "error_description" in response.json()


def test_data_call_without_valid_session_is_invalid_session_id(make_org: Any) -> None:
    org = make_org()

    missing = org.http.get(
        f"{V}/query",
        params={"q": "SELECT Id FROM Contact"},
        headers={"Authorization": ""},
    )
    org.store.revoke_tokens()
    revoked = org.query("SELECT Id FROM Contact")

    for response in (missing, revoked):
        assert response.status_code == 401
        assert response.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_limit_info_header_counts_calls_until_request_limit_exceeded(
    make_org: Any,
) -> None:
    org = make_org(api_limit=2)

    first = org.query("SELECT Id FROM Contact")
    second = org.query("SELECT Id FROM Contact")
    third = org.query("SELECT Id FROM Contact")

    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/2"
    assert second.headers["Sforce-Limit-Info"] == "api-usage=2/2"
    assert third.status_code == 403
    assert third.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_unknown_api_version_or_path_is_not_found(make_org: Any) -> None:
    org = make_org(api_version="v60.0")

    newer = org.get(
        "/services/data/v99.0/query", params={"q": "SELECT Id FROM Contact"}
    )
    unknown = org.get(f"{V}/nothing/here")

    assert newer.status_code == unknown.status_code == 404
    assert newer.json()[0]["errorCode"] == unknown.json()[0]["errorCode"] == "NOT_FOUND"


# -- query -----------------------------------------------------------------------


def test_query_pages_through_next_records_url(make_org: Any) -> None:
    org = make_org(page_size=3)
    ids = [_contact(org.store, n) for n in range(7)]

    page = org.query("SELECT Id FROM Contact").json()
    seen, sizes = [], []
    while True:
        sizes.append(len(page["records"]))
        seen += [record["Id"] for record in page["records"]]
        if page["done"]:
            break
        assert page["nextRecordsUrl"].startswith(f"{V}/query/01g")
        page = org.get(page["nextRecordsUrl"]).json()

    assert page["totalSize"] == 7
    assert sizes == [3, 3, 1]
    assert seen == ids
    assert "nextRecordsUrl" not in page


def test_query_record_shape_uses_canonical_names_and_attributes(make_org: Any) -> None:
    org = make_org()
    contact = _contact(org.store, 1, Email="Jane.Doe@Example.org")

    body = org.query(
        "select ID, email from CONTACT where EMAIL = 'jane.doe@example.ORG'"
    ).json()

    assert body["totalSize"] == 1
    assert body["records"][0] == {
        "attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{contact}"},
        "Id": contact,
        "Email": "Jane.Doe@Example.org",
    }


def test_query_hides_recycle_bin_that_query_all_shows(make_org: Any) -> None:
    org = make_org()
    gone, kept = _contact(org.store, 1), _contact(org.store, 2)

    deleted = org.http.delete(
        f"{V}/composite/sobjects", params={"ids": gone, "allOrNone": "false"}
    )
    both = f"Id IN ('{gone}', '{kept}')"
    live = org.select("Id", "Contact", both).json()
    every = org.select("Id, IsDeleted", "Contact", both, all_rows=True).json()

    assert deleted.json() == [{"id": gone, "success": True, "errors": []}]
    assert [r["Id"] for r in live["records"]] == [kept]
    assert {r["Id"]: r["IsDeleted"] for r in every["records"]} == {
        gone: True,
        kept: False,
    }


def test_query_literal_escapes_and_operators(make_org: Any) -> None:
    org = make_org()
    quoted = _contact(org.store, 1, Email="o'brien\\x@example.org")
    other = _contact(org.store, 2, Email=None, Phone="+1 415 555 0100")

    def ids(where: str) -> list[str]:
        body = org.select("Id", "Contact", where).json()
        return [record["Id"] for record in body["records"]]

    assert ids(r"Email = 'O\'Brien\\x@example.org'") == [quoted]
    assert ids("Email != 'nobody@example.org'") == [quoted, other]  # nulls included
    assert ids("Email = null") == [other]
    assert ids(f"Id NOT IN ('{quoted}')") == [other]
    assert ids("(Email = null OR Phone = 'x') AND NOT LastName = 'Person1'") == [other]
    assert ids("Phone LIKE '+1 415%'") == [other]
    assert ids(f"Id = '{quoted[:15]}'") == [quoted]  # a 15-character id works
    assert ids(f"Id = '{quoted[:15].lower()}'") == []  # and is case-sensitive


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Nothing__x", "INVALID_TYPE"),
        ("SELECT Nope FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE Nope = 'a'", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE IsDeleted = 'true'", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE Email = 3", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id Contact", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE Email = 'unterminated", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Contact WHERE Email = 'a' AND Phone = 'b' OR Id = null",
            "MALFORMED_QUERY",
        ),
        (r"SELECT Id FROM Contact WHERE Email = 'bad \q escape'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact LIMIT x", "MALFORMED_QUERY"),
        ("", "MALFORMED_QUERY"),
    ],
)
def test_query_errors_carry_the_org_error_code(
    make_org: Any, soql: str, code: str
) -> None:
    org = make_org()

    response = org.query(soql)

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == code


def test_query_limit_and_derived_case_fields(make_org: Any) -> None:
    org = make_org()
    contact = _contact(org.store, 1, Email="c@example.org")
    org.store.insert("Case", {"ContactId": contact, "Subject": "one"})
    org.store.insert("Case", {"ContactId": contact, "Subject": "two"})

    where = f"ContactId = '{contact}' LIMIT 1"
    body = org.select("CaseNumber, ContactEmail", "Case", where).json()

    assert body["totalSize"] == 1
    assert body["records"][0]["CaseNumber"] == "00001001"
    assert body["records"][0]["ContactEmail"] == "c@example.org"


# -- sObject writes ----------------------------------------------------------------


def test_contact_with_live_case_cannot_be_deleted_until_the_case_is(
    make_org: Any,
) -> None:
    org = make_org()
    contact = _contact(org.store, 1)
    case = org.store.insert("Case", {"ContactId": contact})

    blocked = org.http.delete(f"{V}/sobjects/Contact/{contact}")
    case_gone = org.http.delete(f"{V}/sobjects/Case/{case}")
    contact_gone = org.http.delete(f"{V}/sobjects/Contact/{contact}")

    assert blocked.status_code == 400
    assert blocked.json()[0]["errorCode"] == "DELETE_FAILED"
    assert "associated with the following cases" in blocked.json()[0]["message"]
    assert case_gone.status_code == contact_gone.status_code == 204
    assert org.store.count("Contact") == 0
    assert org.store.count("Contact", include_deleted=True) == 1


def test_sobject_delete_of_unknown_or_deleted_record(make_org: Any) -> None:
    org = make_org()
    contact = _contact(org.store, 1)
    org.store.delete(contact)
    never = org.store.new_id("003")

    again = org.http.delete(f"{V}/sobjects/Contact/{contact}")
    unknown = org.http.delete(f"{V}/sobjects/Contact/{never}")
    wrong_type = org.http.delete(f"{V}/sobjects/Lead/{contact}")

    assert again.status_code == 404
    assert again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert unknown.status_code == wrong_type.status_code == 404
    assert unknown.json()[0]["errorCode"] == "NOT_FOUND"


def test_sobject_read_answers_the_documented_404s(make_org: Any) -> None:
    org = make_org()
    live, binned, purged = (_contact(org.store, n) for n in (1, 2, 3))
    org.store.delete(binned)
    org.store.delete(purged, hard=True)

    found = org.get(f"{V}/sobjects/Contact/{live[:15]}", params={"fields": "id"})
    deleted = org.get(f"{V}/sobjects/Contact/{binned}")
    gone = org.get(f"{V}/sobjects/Contact/{purged}")
    bad_field = org.get(f"{V}/sobjects/Contact/{live}", params={"fields": "Nope"})
    info = org.get(f"{V}/sobjects/contact").json()["objectDescribe"]

    assert found.status_code == 200
    assert found.json() == {
        "attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{live}"},
        "Id": live,
    }
    assert deleted.status_code == gone.status_code == 404
    assert deleted.json() == [
        {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED"}
    ]
    assert gone.json()[0]["errorCode"] == "NOT_FOUND"
    assert bad_field.json()[0]["errorCode"] == "INVALID_FIELD"
    assert (info["name"], info["keyPrefix"]) == ("Contact", "003")
    assert org.get(f"{V}/sobjects/Nothing__x").status_code == 404


def test_individual_is_a_privacy_record_that_outlives_its_contact(
    make_org: Any,
) -> None:
    org = make_org()
    person = org.store.insert("Individual", {"FirstName": "Ann", "LastName": "Lee"})
    contact = _contact(org.store, 1, IndividualId=person[:15])
    org.store.delete(contact, hard=True)

    row = org.select(
        "Id, Name, ShouldForget, HasOptedOutProcessing", "Individual", "Id != null"
    ).json()["records"][0]
    record = {"attributes": {"type": "Individual"}, "id": person}
    body = {"allOrNone": False, "records": [record | {"ShouldForget": True}]}
    flag = org.http.patch(f"{V}/composite/sobjects", json=body)
    missing_name = org.http.post(f"{V}/sobjects/Individual", json={"FirstName": "X"})

    assert person.startswith("0PK")
    assert (row["Id"], row["Name"]) == (person, "Ann Lee")
    assert (row["ShouldForget"], row["HasOptedOutProcessing"]) == (False, False)
    assert flag.json() == [{"id": person, "success": True, "errors": []}]
    assert org.store.get(person)["ShouldForget"] is True  # type: ignore[index]
    assert missing_name.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_sobject_patch_updates_fields_and_rejects_unknown_ones(make_org: Any) -> None:
    org = make_org()
    contact = _contact(org.store, 1)

    ok = org.http.patch(
        f"{V}/sobjects/Contact/{contact}", json={"email": "new@example.org"}
    )
    bad = org.http.patch(f"{V}/sobjects/Contact/{contact}", json={"Nope": 1})
    system = org.http.patch(f"{V}/sobjects/Contact/{contact}", json={"IsDeleted": True})

    assert ok.status_code == 204 and ok.content == b""
    assert org.store.get(contact)["Email"] == "new@example.org"  # type: ignore[index]
    assert bad.json()[0]["errorCode"] == "INVALID_FIELD"
    assert system.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_composite_delete_caps_ids_at_200(make_org: Any) -> None:
    org = make_org()
    ids = ",".join(org.store.new_id("003") for _ in range(201))

    response = org.http.delete(f"{V}/composite/sobjects", params={"ids": ids})

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_composite_delete_reports_in_order_and_all_or_none_rolls_back(
    make_org: Any,
) -> None:
    org = make_org()
    contact = _contact(org.store, 1)
    case = org.store.insert("Case", {"ContactId": contact})
    loner = _contact(org.store, 2)

    rolled = org.http.delete(
        f"{V}/composite/sobjects",
        params={"ids": f"{loner},{contact}", "allOrNone": "true"},
    ).json()
    children_first = org.http.delete(
        f"{V}/composite/sobjects", params={"ids": f"{case},{contact},{loner}"}
    ).json()

    assert [r["success"] for r in rolled] == [False, False]
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert rolled[1]["errors"][0]["statusCode"] == "DELETE_FAILED"
    assert [r["id"] for r in children_first] == [case, contact, loner]
    assert org.store.count("Contact") == org.store.count("Case") == 0


def test_composite_patch_updates_records_and_reports_failures(make_org: Any) -> None:
    org = make_org()
    contact = _contact(org.store, 1)
    deleted = _contact(org.store, 2)
    org.store.delete(deleted)
    records = [
        {
            "attributes": {"type": "Contact"},
            "id": contact,
            "Email": None,
            "Phone": None,
        },
        {"attributes": {"type": "Contact"}, "id": deleted, "Email": None},
    ]

    results = org.http.patch(
        f"{V}/composite/sobjects", json={"allOrNone": False, "records": records}
    ).json()

    assert results[0] == {"id": contact, "success": True, "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert org.store.get(contact)["Email"] is None  # type: ignore[index]


# -- Bulk API 2.0 ----------------------------------------------------------------


def _job(org: Org, sobject: str, operation: str, ids: list[str], **spec: Any) -> str:
    body = {
        "object": sobject,
        "operation": operation,
        "contentType": "CSV",
        "lineEnding": "LF",
    }
    created = org.http.post(f"{V}/jobs/ingest", json=body | spec)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["state"] == "Open" and job["id"].startswith("750")
    upload = org.http.put(
        f"{V}/jobs/ingest/{job['id']}/batches",
        content=spec.get("_csv", "Id\n" + "".join(f"{i}\n" for i in ids)),
        headers={"Content-Type": "text/csv"},
    )
    assert upload.status_code == 201 and upload.content == b""
    closed = org.http.patch(
        f"{V}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"}
    )
    assert closed.json()["state"] == "UploadComplete"
    return str(job["id"])


def test_bulk_hard_delete_moves_on_the_clock_and_applies_at_completion(
    make_org: Any,
) -> None:
    clock = Clock()
    org = make_org(clock=clock, bulk_step_seconds=10)
    blocked, free = _contact(org.store, 1), _contact(org.store, 2)
    org.store.insert("Case", {"ContactId": blocked})
    bystander = _contact(org.store, 3)
    before = org.store.checksum(exclude=[blocked, free])

    job = _job(org, "Contact", "hardDelete", [blocked, free])
    states = [org.get(f"{V}/jobs/ingest/{job}").json()["state"]]
    clock.now += 10
    states.append(org.get(f"{V}/jobs/ingest/{job}").json()["state"])
    still_there = org.store.get(free) is not None
    clock.now += 10
    info = org.get(f"{V}/jobs/ingest/{job}").json()
    failed = org.get(f"{V}/jobs/ingest/{job}/failedResults/").text.splitlines()
    succeeded = org.get(f"{V}/jobs/ingest/{job}/successfulResults/").text.splitlines()

    assert states + [info["state"]] == ["UploadComplete", "InProgress", "JobComplete"]
    assert still_there  # work is done at JobComplete, not before
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (2, 1)
    assert failed[0] == '"sf__Id","sf__Error","Id"'
    assert "DELETE_FAILED" in failed[1] and blocked in failed[1]
    assert succeeded == ['"sf__Id","sf__Created","Id"', f'"{free}","false","{free}"']
    assert org.store.get(free) is None  # gone from queryAll too
    every = org.select("Id", "Contact", f"Id = '{free}'", all_rows=True).json()
    assert every["totalSize"] == 0
    assert org.store.get(bystander) is not None
    assert org.store.checksum(exclude=[blocked, free]) == before


def test_bulk_delete_soft_deletes_into_the_recycle_bin(make_org: Any) -> None:
    clock = Clock()
    org = make_org(clock=clock, bulk_step_seconds=1)
    lead = org.store.insert("Lead", {"LastName": "L", "Company": "C"})

    job = _job(org, "Lead", "delete", [lead])
    clock.now += 2
    info = org.get(f"{V}/jobs/ingest/{job}").json()

    assert info["state"] == "JobComplete"
    assert org.store.count("Lead") == 0
    assert org.store.get(lead)["IsDeleted"] is True  # type: ignore[index]


def test_bulk_job_fails_on_wrong_line_ending_and_lists_jobs(make_org: Any) -> None:
    clock = Clock()
    org = make_org(clock=clock, bulk_step_seconds=1)
    contact = _contact(org.store, 1)

    job = _job(org, "Contact", "hardDelete", [], _csv=f"Id\r\n{contact}\r\n")
    clock.now += 2
    info = org.get(f"{V}/jobs/ingest/{job}").json()
    listing = org.get(f"{V}/jobs/ingest").json()

    assert info["state"] == "Failed"
    assert "LineEnding" in info["errorMessage"]
    assert org.store.get(contact) is not None
    assert listing["done"] is True
    assert [(j["id"], j["state"]) for j in listing["records"]] == [(job, "Failed")]


def test_bulk_job_rejects_unsupported_requests(make_org: Any) -> None:
    org = make_org()

    bad_object = org.http.post(
        f"{V}/jobs/ingest", json={"object": "Nope", "operation": "delete"}
    )
    insert = org.http.post(
        f"{V}/jobs/ingest", json={"object": "Contact", "operation": "insert"}
    )
    unknown = org.get(f"{V}/jobs/ingest/{org.store.new_id('750')}")

    assert bad_object.status_code == insert.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json()[0]["errorCode"] == "NOT_FOUND"


def test_bulk_job_can_be_aborted_before_it_completes(make_org: Any) -> None:
    clock = Clock()
    org = make_org(clock=clock, bulk_step_seconds=1)
    contact = _contact(org.store, 1)

    job = _job(org, "Contact", "hardDelete", [contact])
    aborted = org.http.patch(f"{V}/jobs/ingest/{job}", json={"state": "Aborted"}).json()
    clock.now += 5

    assert aborted["state"] == "Aborted"
    assert org.get(f"{V}/jobs/ingest/{job}").json()["state"] == "Aborted"
    assert org.store.get(contact) is not None


# -- persistence -------------------------------------------------------------------


def test_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "org.sqlite"
    first = SalesforceStore(path)
    contact = _contact(first, 1, Email="kept@example.org")
    gone = _contact(first, 2)
    first.delete(gone)
    token = first.issue_token()
    digest = first.checksum()
    first.close()

    second = SalesforceStore(path)

    assert second.get(contact)["Email"] == "kept@example.org"  # type: ignore[index]
    assert second.get(gone)["IsDeleted"] is True  # type: ignore[index]
    assert second.token_valid(token)
    assert second.checksum() == digest
    assert _contact(second, 3) not in (contact, gone)
