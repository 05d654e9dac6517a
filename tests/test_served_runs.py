"""Every run lethe shows in Prefect is free of personal data.

A canary person is planted in the sample estate; the capture, erasure,
re-check and divergence flows run against the session's Prefect server; then
everything Prefect kept of those runs — flow runs with their names and
parameters, task runs, logs, artifacts and events, read back through its API,
and its database file where it is SQLite — is searched for every spelling of
the canary's identifiers. Request ids must be there; the canary must not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erasure import requests
from lethe.estate.jobs import device_id
from lethe.identity import normalize_phone
from tests.helpers import (
    Estate,
    flush_prefect,
    forms_of,
    prefect_files,
)

pytestmark = pytest.mark.e2e


def _canary_spellings(e: Estate) -> list[bytes]:
    phone = e.canary.phone or ""
    raw = [
        e.canary.last_name,
        e.contact_id,
        e.contact_id[:15],
        e.partner_id,
        e.user_id,
        device_id(e.contact_id),
        phone,
        normalize_phone(phone),
    ]
    return sorted({*forms_of(e.canary.email or ""), *(v.encode() for v in raw if v)})


def _served_since(since: datetime) -> dict[str, list[str]]:
    """What Prefect's API holds of every run since ``since``, as JSON texts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.events.filters import EventFilter, EventOccurredFilter

    with get_client(sync_client=True) as client:
        recent = FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
        )
        runs = client.read_flow_runs(flow_run_filter=recent, limit=200)
        by_id = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
        flows = {r.flow_id: client.read_flow(r.flow_id).name for r in runs}
        served = {
            "flow names": [flows[r.flow_id] for r in runs],
            "flow runs": [r.model_dump_json() for r in runs],
            "task runs": [
                t.model_dump_json()
                for t in client.read_task_runs(flow_run_filter=by_id, limit=200)
            ],
            "logs": [
                log.model_dump_json()
                for log in client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs]))
                )
            ],
            "artifacts": [
                a.model_dump_json()
                for a in client.read_artifacts(flow_run_filter=by_id)
            ],
            "events": [],
        }
        window = EventFilter(occurred=EventOccurredFilter(since=since))
        page = client.read_events(window, limit=50)  # the API caps a page at 50
        while True:
            served["events"] += [event.model_dump_json() for event in page.events]
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
    return served


def test_served_runs_carry_request_ids_and_no_personal_data(estate: Estate) -> None:
    from flows.capture import capture_lineage
    from flows.divergence import check_divergence
    from flows.erasure import erase_requests
    from flows.recheck import recheck_requests

    e = estate
    since = datetime.now(UTC) - timedelta(seconds=1)
    capture_lineage()
    request = requests.submit(email=e.canary.email, regulation="gdpr")
    assert erase_requests([request.id]) == {request.id: "completed"}
    completed = requests.get_many([request.id])[0].completed_at
    assert completed is not None
    later = (completed.replace(tzinfo=UTC) + timedelta(days=8)).isoformat()
    assert recheck_requests(later) == {request.id: None}  # re-read, still gone
    assert check_divergence()["contact_country"]["compared"] > 0
    flush_prefect()

    served = _served_since(since)

    assert {
        "capture-lineage",
        "erase-requests",
        "recheck-requests",
        "check-divergence",
    } <= set(served["flow names"])
    task_runs = "\n".join(served["task runs"])
    for task in ("search-systems", "erase-in-system", "recheck-request"):
        assert f'"{task}-' in task_runs or f'"name":"{task}' in task_runs, task
    assert served["events"], "Prefect recorded no events for the runs"
    assert any(request.id in run for run in served["flow runs"])  # parameters
    spellings = _canary_spellings(e)
    for kind, texts in served.items():
        for body in texts:
            data = body.encode()
            leaked = [s for s in spellings if s in data]
            assert not leaked, f"a canary identifier is in Prefect's {kind}"
    for path in prefect_files():  # the server's own database, when SQLite
        data = path.read_bytes()
        assert request.id.encode() in data or path.name.endswith("-wal")
        for spelling in spellings:
            assert spelling not in data, f"a canary identifier is in {path}"
