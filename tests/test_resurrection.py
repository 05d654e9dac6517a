"""The resurrection guard: an erased person who comes back is caught twice —
by the next capture, and by the re-check after seven days."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import select

from erasure import requests
from lethe import ledger
from lineage.models import Alert
from tests.helpers import Estate

pytestmark = pytest.mark.e2e


def _raw_row(e: Estate) -> dict:
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        row = (
            db.execute(
                text("SELECT * FROM raw_sf_contact WHERE sf_id = :i"),
                {"i": e.contact_id},
            )
            .mappings()
            .one()
        )
    engine.dispose()
    return dict(row)


def _restore(e: Estate, row: dict) -> None:
    """A stale backup put back: the erased row returns to the raw table."""
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    columns = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    with engine.begin() as db:
        db.execute(
            text(f"INSERT INTO raw_sf_contact ({columns}) VALUES ({marks})"),  # noqa: S608
            row,
        )
    engine.dispose()


def _stale_manifest(e: Estate) -> None:
    now = datetime.now(UTC).isoformat()
    manifest = {
        "job": "nightly_extract",
        "run_id": f"extract-stale-{uuid.uuid4().hex[:6]}",
        "started_at": now,
        "finished_at": now,
        "source": "salesforce:Contact",
        "outputs": [
            {
                "dataset": "warehouse:raw.sf_contact",
                "records": [{"key": e.contact_id, "source_key": e.contact_id}],
            }
        ],
    }
    folder = Path(e.settings["manifests"])
    (folder / f"{manifest['run_id']}.json").write_text(json.dumps(manifest))


def _rows(e: Estate) -> int:
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        count = db.execute(
            text("SELECT count(*) FROM raw_sf_contact WHERE sf_id = :i"),
            {"i": e.contact_id},
        ).scalar()
    engine.dispose()
    return int(count)


def test_resurrection_is_caught_by_capture_and_by_the_recheck(estate: Estate) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests
    from flows.recheck import recheck_requests

    e = estate
    capture_lineage()
    stale = _raw_row(e)
    original = requests.submit(email=e.canary.email, regulation="gdpr").id
    assert erase_requests([original]) == {original: "completed"}
    assert _rows(e) == 0

    # A stale extract re-copies the erased person: the next capture sees it.
    _restore(e, stale)
    _stale_manifest(e)
    assert capture_lineage()["reopened_requests"] == 1
    with ledger.session() as db:
        alerts = db.exec(select(Alert)).all()
    assert [a.dataset for a in alerts] == ["warehouse:raw.sf_contact"]
    assert alerts[0].request_id == original
    reopened = alerts[0].reopened_request_id
    shown = requests.describe(reopened)
    assert shown["linked_to"] == original and shown["channel"] == "resurrection"
    assert capture_lineage()["reopened_requests"] == 0  # one alert per new copy

    # The linked re-erasure finds exactly the returned copy and erases it.
    assert erase_requests([reopened]) == {reopened: "completed"}
    assert _rows(e) == 0
    systems = {s["system"]: s for s in requests.describe(reopened)["systems"]}
    assert systems["warehouse"]["records_affected"] == 1
    assert systems["salesforce"]["state"] == "no_data"

    # A restore no job reports: only the +7-day re-check (simulated clock) sees it.
    _restore(e, stale)
    completed = datetime.fromisoformat(requests.describe(original)["completed_at"])
    assert recheck_requests((completed + timedelta(days=6)).isoformat()) == {}
    found = recheck_requests((completed + timedelta(days=8)).isoformat())
    assert found[original] is not None
    assert requests.describe(original)["rechecks"]["7"].startswith("reopened as")
    again = found[original]
    assert erase_requests([again]) == {again: "completed"}
    assert _rows(e) == 0
