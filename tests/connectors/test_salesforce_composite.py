"""``delete_mode: by_size``: the sObject Collections delete for small steps,
against the loopback org over real HTTP, and the emulator's side of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from connectors._resilience import NO_PACING, RetryPolicy
from connectors._salesforce_auth import build_grant
from connectors._salesforce_composite import delete_collection
from connectors._salesforce_http import OrgSession
from connectors._salesforce_soql import select, soql_literal
from connectors.registry import build
from connectors.salesforce import SalesforceConnector
from erasure import requests
from lethe.cli import app
from lethe.config import load_settings
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._salesforce import Org, Swap, org_factory, serve_swapped
from tests.helpers import Estate, plant_canary_estate

V = "/services/data/v60.0"
COLLECTION_DELETE = f"DELETE {V}/composite/sobjects"
BULK_CREATE = f"POST {V}/jobs/ingest"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorServer, Swap]]:
    yield from serve_swapped()


@pytest.fixture
def make_org(server: tuple[EmulatorServer, Swap]) -> Iterator[Any]:
    yield from org_factory(*server)


def _subject(store: SalesforceStore) -> dict[str, list[str]]:
    """A Contact with two Cases and a Lead: four ids, children listed last."""
    email = "dana.w@example.org"
    contact = store.insert(
        "Contact", {"FirstName": "Dana", "LastName": "West", "Email": email}
    )
    cases = [store.insert("Case", {"ContactId": contact}) for _ in range(2)]
    lead = store.insert("Lead", {"LastName": "West", "Company": "Acme", "Email": email})
    return {"Contact": [contact], "Lead": [lead], "Case": cases}


def _leads(store: SalesforceStore, count: int) -> list[str]:
    return [
        store.insert("Lead", {"LastName": f"P{n}", "Company": "C"})
        for n in range(count)
    ]


def _ids(keys: dict[str, list[str]]) -> list[str]:
    return [value for values in keys.values() for value in values]


def _binned(store: SalesforceStore, record_id: str) -> bool:
    record = store.get(record_id)
    assert record is not None, "the record should still be in the org"
    return bool(record["IsDeleted"])


def _raw(org: Org) -> httpx.Client:
    token = org.store.issue_token()
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=org.base_url, headers=headers)


# -- the collection path ---------------------------------------------------------


def test_small_step_takes_one_collection_call_and_no_bulk_job(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = _subject(org.store)
    bystander = org.store.insert("Contact", {"LastName": "Other"})

    outcome = org.connector.submit(keys, idempotency_key="req-1:crm:delete")

    assert outcome.status == "done" and outcome.action == "deleted"
    assert outcome.job_id is None
    assert outcome.records_affected == 4
    assert org.calls[COLLECTION_DELETE] == 1
    assert org.calls[BULK_CREATE] == 0 and org.store.jobs() == []
    assert all(_binned(org.store, i) for i in _ids(keys))
    assert not _binned(org.store, bystander)


def test_collection_outcome_dates_follow_the_recycle_bin(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = _subject(org.store)
    before = datetime.now().astimezone()

    outcome = org.connector.submit(keys, idempotency_key="k")

    deleted_at = datetime.fromisoformat(outcome.dates["deleted_at"])
    purged_by = outcome.dates["physically_purged_by"]
    assert before - timedelta(seconds=1) <= deleted_at <= datetime.now().astimezone()
    assert purged_by == (deleted_at + timedelta(days=15)).date().isoformat()
    assert outcome.finished_at is not None
    assert f"recoverable there until {purged_by}" in outcome.detail
    assert "Dana" not in outcome.detail and keys["Contact"][0] not in outcome.detail


@pytest.mark.parametrize(
    ("count", "collection_calls", "bulk_jobs"), [(200, 1, 0), (201, 0, 1)]
)
def test_step_size_picks_the_call(
    make_org: Any, count: int, collection_calls: int, bulk_jobs: int
) -> None:
    org = make_org(delete_mode="by_size", bulk_step_seconds=30)
    keys = {"Lead": _leads(org.store, count)}

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert org.calls[COLLECTION_DELETE] == collection_calls
    assert [job["operation"] for job in org.store.jobs()] == ["hardDelete"] * bulk_jobs
    assert (outcome.job_id is None) == (bulk_jobs == 0)
    assert outcome.status == ("done" if bulk_jobs == 0 else "pending")


def test_hard_mode_uses_bulk_even_for_one_record(make_org: Any) -> None:
    org = make_org(bulk_step_seconds=30)
    keys = {"Lead": _leads(org.store, 1)}

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert outcome.status == "pending" and outcome.job_id
    assert org.calls[COLLECTION_DELETE] == 0
    assert org.connector.capabilities.hard_delete
    assert not make_org(delete_mode="by_size").connector.capabilities.hard_delete


# -- verification ----------------------------------------------------------------


def test_verify_after_a_collection_delete_accepts_recycle_bin_rows(
    make_org: Any,
) -> None:
    org = make_org(delete_mode="by_size")
    keys = _subject(org.store)
    org.connector.submit(keys, idempotency_key="k")
    hard = SalesforceConnector(
        system="crm", base_url=org.base_url, client_id="cid", client_secret="secret"
    )
    try:
        strict = hard.verify(keys)
    finally:
        hard.close()

    evidence = org.connector.verify(keys)

    assert evidence.verified
    assert evidence.observed == {
        "Contact.query": 0,
        "Contact.queryAll": 1,
        "Contact.inRecycleBin": 1,
        "Lead.query": 0,
        "Lead.queryAll": 1,
        "Lead.inRecycleBin": 1,
        "Case.query": 0,
        "Case.queryAll": 2,
        "Case.inRecycleBin": 2,
        "Individual.linked": 0,
        "Individual.unflagged": 0,
    }
    assert "4 in the Recycle Bin" in evidence.detail
    assert not strict.verified and "remain in the Recycle Bin" in strict.detail


def test_verify_counts_purged_records_as_deleted(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = {"Lead": _leads(org.store, 2)}
    org.store.delete(keys["Lead"][0])
    org.store.delete(keys["Lead"][1], hard=True)  # gone from queryAll too

    evidence = org.connector.verify(keys)

    assert evidence.verified
    assert evidence.observed["Lead.queryAll"] == 1
    assert evidence.observed["Lead.inRecycleBin"] == 1


def test_verify_fails_while_a_record_is_live(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = {"Lead": _leads(org.store, 2)}
    org.store.delete(keys["Lead"][0])

    evidence = org.connector.verify(keys)

    assert not evidence.verified
    assert evidence.observed["Lead.query"] == 1
    assert "1 Lead records are still live" in evidence.detail


def test_large_step_is_verified_by_the_hard_rules(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = {"Lead": _leads(org.store, 201)}
    for lead in keys["Lead"]:
        org.store.delete(lead)

    evidence = org.connector.verify(keys)

    assert not evidence.verified
    assert "Lead.inRecycleBin" not in evidence.observed
    assert "201 Lead records remain in the Recycle Bin" in evidence.detail


def test_individuals_are_flagged_before_the_collection_delete(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    person = org.store.insert("Individual", {"LastName": "West", "FirstName": "Dana"})
    contact = org.store.insert("Contact", {"LastName": "W", "IndividualId": person})
    keys = {"Contact": [contact]}

    outcome = org.connector.submit(keys, idempotency_key="k")
    evidence = org.connector.verify(keys)

    individual = org.store.get(person)
    assert individual is not None and individual["ShouldForget"] is True
    assert individual["FirstName"] is None and individual["IsDeleted"] is False
    assert "1 flagged" in outcome.detail
    assert evidence.verified
    assert evidence.observed["Individual.linked"] == 1
    assert evidence.observed["Individual.unflagged"] == 0


# -- honest failures ---------------------------------------------------------------


def test_per_id_refusal_is_not_done_and_names_the_code(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = _subject(org.store)
    keys["Case"] = keys["Case"][:1]  # the other Case still holds the Contact

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert outcome.status == "failed" and outcome.action == "none"
    assert outcome.job_id is None
    assert "refused 1 records (1 DELETE_FAILED)" in outcome.detail
    assert "2 records are in the Recycle Bin" in outcome.detail
    assert keys["Contact"][0] not in outcome.detail and "Dana" not in outcome.detail
    assert not _binned(org.store, keys["Contact"][0])
    assert not org.connector.verify(keys).verified


def test_rate_limit_is_retried_after_retry_after(make_org: Any) -> None:
    slept: list[float] = []
    org = make_org(delete_mode="by_size", sleep=slept.append)
    keys = _subject(org.store)
    org.faults.add("429", f"{V}/composite/sobjects", method="DELETE", retry_after=3)

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert [fault["kind"] for fault in org.faults.injected] == ["429"]
    assert len(slept) == 1 and slept[0] >= 3
    assert outcome.status == "done" and outcome.records_affected == 4
    assert org.calls[COLLECTION_DELETE] == 1


def test_server_errors_past_the_retries_are_transient_not_done(make_org: Any) -> None:
    org = make_org(delete_mode="by_size", max_attempts=2, sleep=lambda _: None)
    keys = _subject(org.store)
    org.faults.add("503", f"{V}/composite/sobjects", method="DELETE", times=2)

    with pytest.raises(TransientConnectorError) as caught:
        org.connector.submit(keys, idempotency_key="k")

    assert caught.value.status == 503
    assert org.calls[COLLECTION_DELETE] == 0
    assert not any(_binned(org.store, i) for i in _ids(keys))


def test_lost_answer_is_retried_and_entity_is_deleted_counts(make_org: Any) -> None:
    org = make_org(delete_mode="by_size", timeout=0.3, sleep=lambda _: None)
    keys = _subject(org.store)
    org.faults.add("lost_answer", f"{V}/composite/sobjects", delay=1.0)

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert org.calls[COLLECTION_DELETE] == 2  # the lost one did the work
    assert outcome.status == "done" and outcome.action == "deleted"
    assert outcome.records_affected == 4
    assert "4 of them were there before this call" in outcome.detail


def test_bad_request_is_a_connector_error(make_org: Any) -> None:
    org = make_org()
    grant = build_grant(
        "crm",
        auth="client_credentials",
        client_id="cid",
        client_secret="secret",
        username=None,
        private_key_pem=None,
        private_key_file=None,
        audience="https://login.salesforce.com",
    )
    session = OrgSession(
        system="crm",
        base_url=org.base_url,
        data_path=V,
        grant=grant,
        timeout=5.0,
        transport=None,
        policy=RetryPolicy(max_attempts=1),
        pacer=NO_PACING,
    )
    ids = [org.store.new_id("00Q") for _ in range(201)]
    try:
        with pytest.raises(ConnectorError) as caught:
            delete_collection(session, ids)
    finally:
        session.close()

    assert caught.value.status == 400
    assert "EXCEEDED_ID_LIMIT" in str(caught.value)
    assert ids[0] not in str(caught.value)


# -- crash safety ------------------------------------------------------------------


def test_rerun_after_a_crash_before_the_ledger_write_ends_done(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = _subject(org.store)
    org.connector.submit(keys, idempotency_key="k")  # its answer never recorded

    found = org.connector.find_job(keys, idempotency_key="k")
    again = org.connector.submit(keys, idempotency_key="k")

    assert found is None
    assert org.calls[COLLECTION_DELETE] == 2 and org.store.jobs() == []
    assert again.status == "done" and again.action == "deleted"
    assert again.records_affected == 4
    assert again.dates["physically_purged_by"]
    assert org.connector.verify(keys).verified


def test_nothing_held_anywhere_is_already_absent_without_a_call(make_org: Any) -> None:
    org = make_org(delete_mode="by_size")
    keys = {"Lead": _leads(org.store, 1)}
    org.store.delete(keys["Lead"][0], hard=True)

    outcome = org.connector.submit(keys, idempotency_key="k")

    assert outcome.status == "done" and outcome.action == "already_absent"
    assert org.calls[COLLECTION_DELETE] == 0


@pytest.mark.parametrize(("mode", "adopts"), [("hard", True), ("by_size", False)])
def test_find_job_adopts_bulk_jobs_only_for_bulk_steps(
    make_org: Any, mode: str, adopts: bool
) -> None:
    org = make_org(delete_mode=mode)
    keys = {"Lead": _leads(org.store, 1)}
    spec = {"object": "Lead", "operation": "hardDelete", "contentType": "CSV"}
    with _raw(org) as http:
        orphan = http.post(f"{V}/jobs/ingest", json=spec).json()["id"]

    found = org.connector.find_job(keys, idempotency_key="k")

    assert found == (orphan if adopts else None)


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["soft", "HARD", "", "by size", 200])
def test_unknown_delete_mode_is_a_config_error(make_org: Any, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^crm: delete_mode must be hard or by_size"):
        make_org(delete_mode=value)


def test_estate_setting_reaches_the_connector(server: Any) -> None:
    settings = {
        "kind": "salesforce",
        "base_url": server[0].base_url,
        "client_id": "cid",
        "client_secret": "secret",
    }

    connector = build("crm", settings | {"delete_mode": "by_size"})
    connector.close()

    assert isinstance(connector, SalesforceConnector)
    assert connector.delete_mode == "by_size"
    assert build("crm", settings).delete_mode == "hard"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="crm: delete_mode"):
        build("crm", settings | {"delete_mode": "recycle"})


# -- the emulator's collection delete ----------------------------------------------


def test_emulator_collection_delete_answers_per_id_in_order(make_org: Any) -> None:
    org = make_org()
    live, binned = _leads(org.store, 2)
    org.store.delete(binned)
    soql = select(("Id", "IsDeleted"), "Lead", f"Id = {soql_literal(live)}")

    with _raw(org) as http:
        answer = http.delete(
            f"{V}/composite/sobjects",
            params={"ids": f"{live},00Qnot-an-id,{binned}", "allOrNone": "false"},
        )
        query = http.get(f"{V}/query", params={"q": soql}).json()
        query_all = http.get(f"{V}/queryAll", params={"q": soql}).json()

    results = answer.json()
    assert answer.status_code == 200
    assert results[0] == {"id": live, "success": True, "errors": []}
    assert "id" not in results[1] and results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert results[2]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert query["records"] == []
    assert [row["IsDeleted"] for row in query_all["records"]] == [True]


@pytest.mark.parametrize(
    ("version", "count", "status", "code"),
    [
        ("v60.0", 201, 400, "EXCEEDED_ID_LIMIT"),
        ("v60.0", 0, 400, "MISSING_ARGUMENT"),
        ("v41.0", 1, 404, "NOT_FOUND"),
    ],
)
def test_emulator_collection_delete_refuses_whole_requests(
    make_org: Any, version: str, count: int, status: int, code: str
) -> None:
    org = make_org()
    ids = _leads(org.store, count)

    with _raw(org) as http:
        answer = http.delete(
            f"/services/data/{version}/composite/sobjects",
            params={"ids": ",".join(ids)},
        )

    assert answer.status_code == status
    assert answer.json()[0]["errorCode"] == code
    assert org.store.count("Lead") == count


def test_emulator_faults_apply_to_the_collection_delete(make_org: Any) -> None:
    org = make_org()
    (lead,) = _leads(org.store, 1)
    org.faults.add("500", f"{V}/composite/sobjects", method="DELETE")

    with _raw(org) as http:
        first = http.delete(f"{V}/composite/sobjects", params={"ids": lead})
        untouched = not _binned(org.store, lead)
        second = http.delete(f"{V}/composite/sobjects", params={"ids": lead})

    assert first.status_code == 500 and untouched
    assert second.status_code == 200 and second.json()[0]["success"] is True
    assert org.calls[COLLECTION_DELETE] == 1


# -- through the erasure flow (a real Prefect run) -----------------------------------


@pytest.fixture
def by_size_estate(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Estate]:
    monkeypatch.setenv("LETHE_STEP_RETRIES", "0")
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    path = load_settings().estate_file
    settings = yaml.safe_load(path.read_text())
    settings["systems"]["salesforce"] |= {
        "delete_mode": "by_size",
        "max_attempts": 1,
        "timeout": 1.0,
    }
    path.write_text(yaml.safe_dump(settings))
    try:
        yield planted
    finally:
        planted.servers.stop()


def _erase(request_id: str) -> tuple[str, dict[str, Any]]:
    from flows.erasure import erase_requests

    state = erase_requests([request_id])[request_id]
    shown = CliRunner().invoke(app, ["dsr", "show", request_id, "--json"])
    return state, json.loads(shown.stdout)


def _salesforce_step(shown: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in shown["systems"] if s["system"] == "salesforce")


@pytest.mark.e2e
def test_flow_certifies_a_collection_delete_with_its_purge_date(
    by_size_estate: Estate,
) -> None:
    from flows.capture import capture_lineage

    sf = by_size_estate.servers.salesforce.app
    capture_lineage()
    request_id = requests.submit(
        email=by_size_estate.canary.email, regulation="gdpr"
    ).id

    state, shown = _erase(request_id)

    step = _salesforce_step(shown)
    purged_by = step["dates"]["physically_purged_by"]
    assert state == "completed" and shown["certificate_id"]
    assert step["state"] == "done" and step["verified"]
    assert step["action"] == "deleted" and step["vendor_job_id"] is None
    assert step["outcome"] == f"deleted (logically), physically purged by {purged_by}"
    assert "recoverable there" in step["detail"]
    assert sf.state.calls[COLLECTION_DELETE] == 1
    assert sf.state.store.jobs() == []


@pytest.mark.e2e
def test_flow_rerun_after_a_lost_collection_answer_ends_done(
    by_size_estate: Estate,
) -> None:
    from flows.capture import capture_lineage

    sf = by_size_estate.servers.salesforce.app
    sf.state.faults.add(
        "lost_answer", f"{V}/composite/sobjects", method="DELETE", delay=3.0
    )
    capture_lineage()
    request_id = requests.submit(
        email=by_size_estate.canary.email, regulation="gdpr"
    ).id

    first, lost = _erase(request_id)
    second, shown = _erase(request_id)

    assert first == "incomplete"
    assert _salesforce_step(lost)["state"] == "failed"
    assert "timed out" in _salesforce_step(lost)["detail"]
    step = _salesforce_step(shown)
    assert second == "completed" and shown["certificate_id"]
    assert step["state"] == "done" and step["verified"]
    assert step["action"] == "deleted" and step["records_affected"] >= 1
    assert sf.state.calls[COLLECTION_DELETE] == 2  # the lost one did the work
    assert sf.state.store.jobs() == []
