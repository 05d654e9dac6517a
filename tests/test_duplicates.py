"""Two channels, one person: one run, both intake ids on the certificate."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from erasure import requests
from erasure.models import Certificate
from lethe import ledger
from lethe.emulators.segment import SegmentStore
from lethe.errors import InputError
from tests.helpers import Estate


def test_idempotency_key_returns_the_request_it_created(home: Path) -> None:
    first = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key="client-42"
    )
    again = requests.submit(
        email="A@Example.org ", regulation="gdpr", idempotency_key="client-42"
    )
    assert again.id == first.id and len(requests.list_requests()) == 1
    with pytest.raises(InputError, match="already used for a different request"):
        requests.submit(
            email="b@example.org", regulation="gdpr", idempotency_key="client-42"
        )
    assert len(requests.list_requests()) == 1


def test_duplicate_outside_the_window_is_a_new_request(home: Path) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    first = requests.submit(email="a@example.org", regulation="gdpr", received_at=old)
    second = requests.submit(email="a@example.org", regulation="gdpr")
    assert second.duplicate_of is None and second.id != first.id


@pytest.mark.e2e
def test_two_channels_one_person_one_run(estate: Estate) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    capture_lineage()
    web = requests.submit(email=estate.canary.email, regulation="gdpr", channel="web")
    earlier = datetime.now(UTC) - timedelta(days=2)
    mail = requests.submit(
        email=estate.canary.email.upper(),
        regulation="gdpr",
        channel="support-mail",
        received_at=earlier,
    )
    assert mail.duplicate_of == web.id and mail.state == "duplicate"
    canonical = requests.describe(web.id)
    assert canonical["received_at"].startswith(earlier.date().isoformat())

    states = erase_requests([web.id, mail.id])
    assert states == {web.id: "completed", mail.id: "completed"}
    store = SegmentStore(estate.workdir / "analytics.db")
    assert len([r for r in store.regulations() if estate.user_id in r["subjects"]]) == 1
    store.close()
    with ledger.session() as db:
        certificates = db.exec(select(Certificate)).all()
    assert len(certificates) == 1
    part = certificates[0].jws.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert payload["request"]["intake_ids"] == [web.id, mail.id]
