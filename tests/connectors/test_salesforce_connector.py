"""The Salesforce connector against the loopback org, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.base import AsyncConnector, Outcome
from connectors.salesforce import SalesforceConnector, soql_literal
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._salesforce import Swap, org_factory, serve_swapped

V = "/services/data/v60.0"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorServer, Swap]]:
    yield from serve_swapped()


@pytest.fixture
def make_org(server: tuple[EmulatorServer, Swap]) -> Iterator[Any]:
    yield from org_factory(*server)


@dataclass
class Subject:
    contact: str
    cases: list[str]
    lead: str
    email: str

    @property
    def keys(self) -> dict[str, list[str]]:
        return {"Case": self.cases, "Contact": [self.contact], "Lead": [self.lead]}


def _subject(store: SalesforceStore, email: str = "dana.w@example.org") -> Subject:
    contact = store.insert(
        "Contact",
        {
            "FirstName": "Dana",
            "LastName": "West",
            "Email": email,
            "Phone": "(415) 555-0134",
        },
    )
    cases = [
        store.insert("Case", {"ContactId": contact, "Subject": f"#{n}"}) for n in (1, 2)
    ]
    lead = store.insert("Lead", {"LastName": "West", "Company": "Acme", "Email": email})
    return Subject(contact, cases, lead, email)


def _bystanders(store: SalesforceStore) -> list[str]:
    other = store.insert("Contact", {"LastName": "Other", "Email": "other@example.org"})
    return [
        other,
        store.insert("Case", {"ContactId": other}),
        store.insert(
            "Lead", {"LastName": "Else", "Company": "B", "Email": "else@example.org"}
        ),
    ]


def _until_done(connector: SalesforceConnector, outcome: Outcome, keys: Any) -> Outcome:
    deadline = time.monotonic() + 5
    while outcome.status == "pending":
        assert time.monotonic() < deadline, "the Bulk jobs did not finish"
        assert outcome.job_id
        time.sleep(connector.poll_interval)
        outcome = connector.poll(outcome.job_id, keys)
    return outcome


# -- end to end ------------------------------------------------------------------


def test_connector_is_an_async_connector(make_org: Any) -> None:
    org = make_org()

    assert isinstance(org.connector, AsyncConnector)
    assert org.connector.capabilities.hard_delete
    assert org.connector.capabilities.batch_cap == 200


def test_erasure_end_to_end_deletes_children_first_and_verifies(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    others = _bystanders(org.store)
    mine = [subject.contact, subject.lead, *subject.cases]
    before = org.store.checksum(exclude=mine)

    located = org.connector.locate(subject.keys)
    first = org.connector.submit(subject.keys, idempotency_key="req-1:crm")
    done = _until_done(org.connector, first, subject.keys)
    evidence = org.connector.verify(subject.keys)

    assert located.counts == {"Case": 2, "Contact": 1, "Lead": 1}
    assert first.status == "pending" and first.job_id and first.job_id.startswith("750")
    assert done.status == "done" and done.action == "deleted"
    assert done.records_affected == 4
    assert done.vendor_status == "JobComplete" and done.finished_at is not None
    assert len(done.job_id.split(",")) == 3  # type: ignore[union-attr]
    jobs = [org.store.job(job)["info"]["object"] for job in done.job_id.split(",")]  # type: ignore[index,union-attr]
    assert jobs == ["Case", "Contact", "Lead"]
    assert evidence.verified
    assert evidence.observed == {
        "Case.query": 0,
        "Case.queryAll": 0,
        "Contact.query": 0,
        "Contact.queryAll": 0,
        "Lead.query": 0,
        "Lead.queryAll": 0,
        "Individual.linked": 0,
        "Individual.unflagged": 0,
    }
    assert "no record left" in evidence.detail
    assert "can no longer be looked up" in evidence.detail
    assert all(org.store.get(record) is None for record in mine)
    assert all(org.store.get(record) is not None for record in others)
    assert org.store.checksum(exclude=mine) == before
    assert org.connector.locate(subject.keys).total == 0


def test_submit_when_nothing_is_live_is_already_absent(make_org: Any) -> None:
    org = make_org()
    gone = org.store.new_id("003")

    outcome = org.connector.submit({"Contact": [gone]}, idempotency_key="req-2:crm")

    assert outcome.status == "done"
    assert outcome.action == "already_absent"
    assert org.store.jobs() == []


def test_polling_a_finished_erasure_again_stays_done(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    done = _until_done(
        org.connector,
        org.connector.submit(subject.keys, idempotency_key="k"),
        subject.keys,
    )

    again = org.connector.poll(done.job_id, subject.keys)  # type: ignore[arg-type]

    assert again.status == "done" and again.records_affected == 4
    assert len(org.store.jobs()) == 3


def test_hard_delete_states_its_dates_and_the_residual_logs(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    done = _until_done(
        org.connector,
        org.connector.submit(subject.keys, idempotency_key="k"),
        subject.keys,
    )

    deleted = datetime.fromisoformat(done.dates["deleted_at"])
    assert done.dates["query_all_may_list_until"] == (
        (deleted + timedelta(days=1)).date().isoformat()
    )
    # lethe's own search by e-mail sits in the org's event logs this long
    assert done.dates["event_logs_expire_by"] == (
        (deleted + timedelta(days=30)).date().isoformat()
    )
    assert "hard-deleted past the Recycle Bin" in done.detail


def test_fifteen_character_ids_are_extended_not_lowercased(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    short = {"Contact": [subject.contact[:15]], "Case": [c[:15] for c in subject.cases]}
    lowered = {"Contact": [subject.contact[:15].lower()]}

    assert org.connector.locate(short).counts == {"Contact": 1, "Case": 2}
    assert org.connector.locate(lowered).counts == {"Contact": 0}
    done = _until_done(
        org.connector, org.connector.submit(short, idempotency_key="k"), short
    )
    assert done.records_affected == 3
    assert org.connector.verify(short).verified


# -- honest failures ---------------------------------------------------------------


def test_contact_job_fails_when_a_case_was_left_out_of_the_keys(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    keys = {"Contact": [subject.contact], "Case": subject.cases[:1]}

    outcome = _until_done(
        org.connector, org.connector.submit(keys, idempotency_key="k"), keys
    )
    evidence = org.connector.verify(keys)

    assert outcome.status == "failed"
    assert outcome.detail == "Contact job JobComplete: 1 records failed"
    assert subject.contact not in outcome.detail and "Dana" not in outcome.detail
    assert not evidence.verified
    assert evidence.observed["Contact.query"] == 1
    assert "still live" in evidence.detail


def test_verify_names_records_left_in_the_recycle_bin(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    org.store.delete(subject.lead)  # a soft delete, as a UI user would do

    evidence = org.connector.verify({"Lead": [subject.lead]})
    outcome = org.connector.submit({"Lead": [subject.lead]}, idempotency_key="k")

    assert not evidence.verified
    assert evidence.observed == {
        "Lead.query": 0,
        "Lead.queryAll": 1,
        "Individual.linked": 0,
        "Individual.unflagged": 0,
    }
    assert "Recycle Bin" in evidence.detail
    assert outcome.action == "already_absent"  # nothing live to hard-delete


def test_aborted_job_is_a_failed_outcome(make_org: Any) -> None:
    org = make_org(bulk_step_seconds=30)
    subject = _subject(org.store)
    keys = {"Lead": [subject.lead]}
    pending = org.connector.submit(keys, idempotency_key="k")
    assert pending.job_id is not None
    org.store.save_job(
        pending.job_id,
        org.store.job(pending.job_id)["info"] | {"state": "Aborted"},  # type: ignore[index]
    )

    outcome = org.connector.poll(pending.job_id, keys)

    assert outcome.status == "failed"
    assert outcome.detail == "Lead job Aborted: 0 records failed"


# -- crash recovery ----------------------------------------------------------------


def test_find_job_returns_the_unfinished_job_and_poll_recovers_it(
    make_org: Any,
) -> None:
    org = make_org()
    subject = _subject(org.store)
    keys = {"Lead": [subject.lead]}
    # A submit that died after creating and filling the job, before closing it.
    http = httpx.Client(base_url=org.base_url)
    token = org.store.issue_token()
    headers = {"Authorization": f"Bearer {token}"}
    spec = {"object": "Lead", "operation": "hardDelete", "contentType": "CSV"}
    orphan = http.post(f"{V}/jobs/ingest", json=spec, headers=headers).json()["id"]
    http.close()

    found = org.connector.find_job(keys, idempotency_key="k")
    none_for_others = org.connector.find_job({"Account": []}, idempotency_key="k")
    outcome = _until_done(org.connector, org.connector.poll(found, keys), keys)  # type: ignore[arg-type]

    assert found == orphan
    assert none_for_others is None
    assert org.store.job(orphan)["info"]["state"] == "Aborted"  # type: ignore[index]
    assert outcome.status == "done" and outcome.records_affected == 1
    assert org.connector.find_job(keys, idempotency_key="k") is None


def test_failed_upload_aborts_the_job_it_created(make_org: Any) -> None:
    org = make_org(max_attempts=1)
    subject = _subject(org.store)
    org.faults.add("500", f"{V}/jobs/ingest/", method="PUT")

    with pytest.raises(TransientConnectorError):
        org.connector.submit({"Lead": [subject.lead]}, idempotency_key="k")

    assert [job["state"] for job in org.store.jobs()] == ["Aborted"]
    assert org.connector.find_job({"Lead": [subject.lead]}, idempotency_key="k") is None


# -- lookups for lineage and resolution --------------------------------------------


def test_find_contacts_by_email_and_phone_in_stored_formats(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store, email="Dana.W@Example.org")
    _bystanders(org.store)

    by_email = org.connector.find_contacts(emails=["dana.w@example.org"])
    by_phone = org.connector.find_contacts(phones=["+14155550134"])

    assert by_email["Contact"] == [
        {
            "Id": subject.contact,
            "Email": "Dana.W@Example.org",
            "Phone": "(415) 555-0134",
            "MobilePhone": None,
        }
    ]
    assert [lead["Id"] for lead in by_email["Lead"]] == [subject.lead]
    assert [c["Id"] for c in by_phone["Contact"]] == [subject.contact]
    assert by_phone["Lead"] == []


def test_find_contacts_escapes_quotes_and_backslashes(make_org: Any) -> None:
    org = make_org()
    tricky = "o'brien\\x@example.org"
    contact = org.store.insert("Contact", {"LastName": "O'Brien", "Email": tricky})
    org.store.insert("Contact", {"LastName": "Other", "Email": "o@example.org"})

    found = org.connector.find_contacts(emails=[tricky, "') OR Email != ('"])

    assert [c["Id"] for c in found["Contact"]] == [contact]


def test_find_contacts_splits_long_in_lists(make_org: Any) -> None:
    org = make_org()
    wanted = [
        org.store.insert("Contact", {"LastName": f"P{n}", "Email": f"p{n}@example.org"})
        for n in range(3)
    ]
    emails = [f"nobody{n}@example.org" for n in range(450)] + [
        f"p{n}@example.org" for n in range(3)
    ]

    found = org.connector.find_contacts(emails=emails)

    assert sorted(c["Id"] for c in found["Contact"]) == sorted(wanted)


def test_snapshot_pages_through_every_record(make_org: Any) -> None:
    org = make_org(page_size=3)
    contacts = [
        org.store.insert("Contact", {"LastName": f"P{n}", "Email": f"p{n}@example.org"})
        for n in range(7)
    ]
    lead = org.store.insert("Lead", {"LastName": "L", "Company": "C", "Phone": "1"})
    case = org.store.insert(
        "Case", {"ContactId": contacts[0], "SuppliedEmail": "s@x.org"}
    )

    rows = list(org.connector.snapshot(("Contact", "Lead", "Case")))

    assert [row["Id"] for row in rows] == [*contacts, lead, case]
    assert rows[0] == {
        "sobject": "Contact",
        "Id": contacts[0],
        "Email": "p0@example.org",
        "Phone": None,
        "MobilePhone": None,
    }
    assert rows[-1]["ContactId"] == contacts[0]
    assert rows[-1]["SuppliedEmail"] == "s@x.org"


def test_cases_for_lists_live_cases_of_the_contacts(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    _bystanders(org.store)
    org.store.delete(subject.cases[1])

    assert org.connector.cases_for([subject.contact[:15]]) == subject.cases[:1]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain@example.org", "'plain@example.org'"),
        ("o'brien@example.org", r"'o\'brien@example.org'"),
        ("back\\slash", r"'back\\slash'"),
        ("\\'", r"'\\\''"),
        ("line\nbreak", r"'line\nbreak'"),
    ],
)
def test_soql_literal_escapes_backslash_then_quote(value: str, literal: str) -> None:
    assert soql_literal(value) == literal


# -- auth and faults -----------------------------------------------------------------


def test_expired_session_is_renewed_once(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    org.connector.locate(subject.keys)
    org.store.revoke_tokens()

    located = org.connector.locate(subject.keys)

    assert located.total == 4


def test_wrong_client_secret_is_a_config_error(make_org: Any) -> None:
    org = make_org(secret="wrong")

    with pytest.raises(ConfigError, match="client_id and client_secret") as caught:
        org.connector.locate({"Contact": []} | {"Lead": [org.store.new_id("00Q")]})

    assert "wrong" not in str(caught.value)


def test_wrong_base_url_is_a_config_error(make_org: Any, server: Any) -> None:
    org = make_org(base_url=server[0].base_url + "/not-salesforce")

    with pytest.raises(ConfigError, match="base_url"):
        org.connector.locate({"Contact": [org.store.new_id("003")]})


def test_rate_limit_is_transient_with_retry_after(make_org: Any) -> None:
    org = make_org(max_attempts=1)
    contact = org.store.insert("Contact", {"LastName": "X", "Email": "x@example.org"})
    org.faults.add("429", f"{V}/query", retry_after=7)

    with pytest.raises(TransientConnectorError) as caught:
        org.connector.locate({"Contact": [contact]})

    assert caught.value.status == 429
    assert caught.value.retry_after == 7
    assert contact not in str(caught.value) and "x@example.org" not in str(caught.value)


def test_server_error_is_transient_and_never_success(make_org: Any) -> None:
    org = make_org(max_attempts=1)
    subject = _subject(org.store)
    org.faults.add("500", f"{V}/jobs/ingest", method="POST")

    with pytest.raises(TransientConnectorError) as caught:
        org.connector.submit(subject.keys, idempotency_key="k")

    assert caught.value.status == 500
    assert org.store.jobs() == []


def test_timeout_is_transient(make_org: Any) -> None:
    org = make_org(timeout=0.2, max_attempts=1)
    org.faults.add("timeout", f"{V}/queryAll", delay=0.5)

    with pytest.raises(TransientConnectorError, match="timed out"):
        org.connector.verify({"Contact": [org.store.new_id("003")]})


def test_daily_api_limit_is_transient(make_org: Any) -> None:
    org = make_org(api_limit=1)
    contact = org.store.new_id("003")
    org.connector.locate({"Contact": [contact]})

    with pytest.raises(TransientConnectorError, match="REQUEST_LIMIT_EXCEEDED"):
        org.connector.locate({"Contact": [contact]})


def test_vendor_errors_name_the_code_but_not_the_query(make_org: Any) -> None:
    org = make_org()

    with pytest.raises(ConnectorError) as caught:
        org.connector.locate({"Nothing__x": [org.store.new_id("003")]})

    assert "INVALID_TYPE" in str(caught.value)
    assert "SELECT" not in str(caught.value)
    assert caught.value.status == 400
