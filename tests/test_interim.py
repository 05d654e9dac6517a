"""An interim statement for an unfinished request: honest levels now, superseded
by the completion certificate later."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from erasure import certify, requests
from erasure.certificate import verify
from lethe.errors import InputError
from lethe.runtime import current
from tests.helpers import Estate, plant_canary_estate


@pytest.fixture
def estate(home: Path, tmp_path: Path) -> Iterator[Estate]:
    # each Segment regulation state lasts 3 s: the first run's single poll
    # sees it still running on a loaded machine too
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=3.0)
    try:
        yield planted
    finally:
        planted.servers.stop()


def _payload(jws: str) -> dict:
    body = jws.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.mark.e2e
def test_interim_states_awaiting_vendor_then_completion_supersedes(
    estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    capture_lineage()
    request = requests.submit(email=estate.canary.email, regulation="gdpr")
    with pytest.raises(InputError, match="has not been planned yet"):
        certify.interim(request.id)

    monkeypatch.setenv("LETHE_POLL_BUDGET_SECONDS", "0")
    assert erase_requests([request.id]) == {request.id: "incomplete"}
    statement = certify.interim(request.id)
    keys = current().keys.public_keys()
    payload = verify(statement.jws, keys).payload
    assert payload["kind"] == "interim" and payload["complete"] is False
    analytics = {s["system"]: s for s in payload["systems"]}["analytics"]
    sla = (date.today() + timedelta(days=30)).isoformat()
    assert analytics["outcome"] == f"awaiting vendor (SLA {sla})"
    assert payload["request"]["completed_at"] is None

    monkeypatch.setenv("LETHE_POLL_BUDGET_SECONDS", "60")
    assert erase_requests([request.id]) == {request.id: "completed"}
    final = requests.describe(request.id)
    assert final["certificate_kind"] == "completion"
    completion = _payload(certify_latest(request.id))
    assert completion["supersedes"] == statement.id and completion["complete"]
    with pytest.raises(InputError, match="is completed: its certificate is final"):
        certify.interim(request.id)


def certify_latest(request_id: str) -> str:
    from lethe import ledger

    with ledger.session() as db:
        latest = certify.latest_certificate(db, request_id)
        assert latest is not None
        return latest.jws
