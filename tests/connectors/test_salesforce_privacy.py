"""Salesforce erasure checks against the loopback org, over real HTTP: the
Individual behind a Contact or Lead (failure case B10) and the documented
"not found" answers ``confirm_absent`` relies on (B05)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.responses import HTMLResponse

from connectors.base import Outcome
from connectors.salesforce import SalesforceConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore
from lethe.errors import ConfigError, InputError, TransientConnectorError
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

    @property
    def keys(self) -> dict[str, list[str]]:
        return {"Case": self.cases, "Contact": [self.contact], "Lead": [self.lead]}


def _subject(store: SalesforceStore) -> Subject:
    email = "dana.w@example.org"
    contact = store.insert(
        "Contact", {"FirstName": "Dana", "LastName": "West", "Email": email}
    )
    cases = [store.insert("Case", {"ContactId": contact}) for _ in range(2)]
    lead = store.insert("Lead", {"LastName": "West", "Company": "Acme", "Email": email})
    return Subject(contact, cases, lead)


def _until_done(connector: SalesforceConnector, outcome: Outcome, keys: Any) -> Outcome:
    deadline = time.monotonic() + 5
    while outcome.status == "pending":
        assert time.monotonic() < deadline, "the Bulk jobs did not finish"
        assert outcome.job_id
        time.sleep(connector.poll_interval)
        outcome = connector.poll(outcome.job_id, keys)
    return outcome


# -- Individuals -------------------------------------------------------------------


class _Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def _individual(store: SalesforceStore, **fields: Any) -> str:
    values = {"FirstName": "Dana", "LastName": "West", "BirthDate": "1980-02-03"}
    return store.insert("Individual", values | fields)


def test_submit_flags_and_blanks_individuals_before_the_first_job(
    make_org: Any,
) -> None:
    org = make_org(bulk_step_seconds=30)
    subject = _subject(org.store)
    person, other = _individual(org.store), _individual(org.store, LastName="Keep")
    org.store.update(subject.contact, {"IndividualId": person})
    org.store.update(subject.lead, {"IndividualId": person})

    pending = org.connector.submit(subject.keys, idempotency_key="k")

    flagged = org.store.get(person)
    assert pending.status == "pending" and len(org.store.jobs()) == 1
    assert org.store.jobs()[0]["object"] == "Case"
    assert flagged is not None and flagged["ShouldForget"] is True
    assert flagged["HasOptedOutProcessing"] is True
    assert (flagged["FirstName"], flagged["LastName"]) == (None, "ERASED")
    assert flagged["BirthDate"] is None
    assert "1 flagged ShouldForget" in pending.detail
    assert person not in pending.detail and "Dana" not in pending.detail
    assert org.store.get(other)["ShouldForget"] is False  # type: ignore[index]


def test_individual_outlives_its_contact_and_reruns_do_not_fail(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    person = _individual(org.store)
    org.store.update(subject.contact, {"IndividualId": person})
    keys = subject.keys

    done = _until_done(
        org.connector, org.connector.submit(keys, idempotency_key="k"), keys
    )
    again = org.connector.submit(keys, idempotency_key="k")
    evidence = org.connector.verify(keys)

    assert done.status == "done" and done.records_affected == 4
    assert org.store.get(person) is not None  # flagged, not deleted
    assert again.status == "done" and again.action == "already_absent"
    assert "can no longer be looked up" in again.detail
    assert evidence.verified
    assert evidence.observed["Individual.linked"] == 0


def test_flagging_is_idempotent_and_sent_in_calls_of_200(make_org: Any) -> None:
    transport = _Counting()
    org = make_org(bulk_step_seconds=30, transport=transport)
    individuals = [_individual(org.store, LastName=f"P{n}") for n in range(201)]
    individuals.append(
        _individual(
            org.store,
            LastName="ERASED",
            FirstName=None,
            BirthDate=None,
            ShouldForget=True,
            HasOptedOutProcessing=True,
        )
    )
    contacts = [
        org.store.insert("Contact", {"LastName": "P", "IndividualId": individual})
        for individual in individuals
    ]
    connector = org.connector

    first = connector.submit({"Contact": contacts}, idempotency_key="k")
    first_patches = transport.calls.count(f"PATCH {V}/composite/sobjects")
    second = connector.submit({"Contact": contacts}, idempotency_key="k")

    assert "201 flagged" in first.detail and "1 already were" in first.detail
    assert first_patches == 2  # 200 + 1: the org refuses more than 200
    assert transport.calls.count(f"PATCH {V}/composite/sobjects") == 2
    assert "0 flagged" in second.detail and "202 already were" in second.detail
    assert all(row["ShouldForget"] for row in org.store.records("Individual"))


def test_verify_names_an_unflagged_individual_behind_a_binned_contact(
    make_org: Any,
) -> None:
    org = make_org()
    person = _individual(org.store)
    contact = org.store.insert("Contact", {"LastName": "B", "IndividualId": person})
    org.store.delete(contact)

    evidence = org.connector.verify({"Contact": [contact]})

    assert not evidence.verified
    assert evidence.observed["Individual.linked"] == 1
    assert evidence.observed["Individual.unflagged"] == 1
    assert "neither flagged" in evidence.detail and person not in evidence.detail


def test_individual_flag_failure_files_no_job(make_org: Any) -> None:
    org = make_org(max_attempts=1)
    person = _individual(org.store)
    contact = org.store.insert("Contact", {"LastName": "B", "IndividualId": person})
    org.faults.add("500", f"{V}/composite/sobjects", method="PATCH")

    with pytest.raises(TransientConnectorError):
        org.connector.submit({"Contact": [contact]}, idempotency_key="k")

    assert org.store.jobs() == []
    assert org.store.get(person)["ShouldForget"] is False  # type: ignore[index]


# -- documented "not found" probes (B05) --------------------------------------------


def test_confirm_absent_reads_the_documented_404s(make_org: Any) -> None:
    org = make_org()
    subject = _subject(org.store)
    org.store.delete(subject.lead)  # Recycle Bin: ENTITY_IS_DELETED
    never = org.store.new_id("003")

    found = org.connector.confirm_absent(
        {"Contact": [subject.contact, never[:15]], "Lead": [subject.lead]}
    )

    assert found == {subject.contact: False, never[:15]: True, subject.lead: True}


def test_confirm_absent_wrong_base_url_or_version_is_a_config_error(
    make_org: Any, server: Any
) -> None:
    wrong_url = make_org(base_url=server[0].base_url + "/not-salesforce")
    contact = wrong_url.store.new_id("003")
    with pytest.raises(ConfigError, match="base_url"):
        wrong_url.connector.confirm_absent({"Contact": [contact]})

    old = make_org(api_version="v50.0", connector_version="v59.0")
    with pytest.raises(ConfigError, match="api_version") as caught:
        old.connector.confirm_absent({"Contact": [contact]})
    assert contact not in str(caught.value)


def test_confirm_absent_rejects_an_id_of_another_object(make_org: Any) -> None:
    org = make_org()
    lead = org.store.insert("Lead", {"LastName": "L", "Company": "C"})

    with pytest.raises(InputError, match="another object"):
        org.connector.confirm_absent({"Contact": [lead]})


def test_confirm_absent_faults_are_transient(make_org: Any) -> None:
    org = make_org(max_attempts=1)
    contact = org.store.insert("Contact", {"LastName": "X"})
    org.faults.add("429", f"{V}/sobjects/Contact/", retry_after=3)
    with pytest.raises(TransientConnectorError) as caught:
        org.connector.confirm_absent({"Contact": [contact]})
    assert caught.value.retry_after == 3

    org.faults.add("500", f"{V}/sobjects/Contact")
    with pytest.raises(TransientConnectorError):
        org.connector.confirm_absent({"Contact": [contact]})


def test_confirm_absent_html_404_on_the_record_read_is_a_config_error(
    make_org: Any, server: Any
) -> None:
    org = make_org()
    contact = org.store.insert("Contact", {"LastName": "X"})
    emulator = org.app

    async def retired_api(scope: Any, receive: Any, send: Any) -> None:
        # A proxy in front of the org answers the record reads with its own page.
        if scope["type"] == "http" and scope["path"].startswith(
            f"{V}/sobjects/Contact/"
        ):
            page = HTMLResponse("<html>Not Found</html>", status_code=404)
            await page(scope, receive, send)
            return
        await emulator(scope, receive, send)

    server[1].app = retired_api

    with pytest.raises(ConfigError, match="base_url") as caught:
        org.connector.confirm_absent({"Contact": [contact]})

    assert contact not in str(caught.value) and "html" not in str(caught.value)
