"""Two channels, one person: one run, both intake ids on the certificate."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from erasure import decisions, requests
from erasure.models import Certificate, Request
from lethe import ledger
from lethe.cli import app
from lethe.emulators.segment import SegmentStore
from lethe.errors import InputError
from lethe.runtime import current
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


def test_idempotency_key_is_stored_as_a_keyed_digest(home: Path) -> None:
    key = "retry-for-jane.roe@example.org"
    first = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key=key
    )
    duplicate = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key=key + "-mail"
    )
    assert duplicate.duplicate_of == first.id
    with ledger.session() as db:
        stored = {r.id: r.idempotency_key for r in db.exec(select(Request))}
    vault = current().vault
    assert stored == {
        first.id: vault.digest("idempotency", key),
        duplicate.id: vault.digest("idempotency", key + "-mail"),
    }
    assert b"jane.roe" not in (home / "ledger.db").read_bytes()
    again = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key=key + "-mail"
    )
    assert again.id == duplicate.id and len(requests.list_requests()) == 2


def test_idempotency_key_stored_in_clear_earlier_is_found_and_digested(
    home: Path,
) -> None:
    first = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key="client-7"
    )
    with ledger.session() as db:  # a row as written before keys were digested
        row = db.get(Request, first.id)
        row.idempotency_key = "client-7"
        db.add(row)
    again = requests.submit(
        email="a@example.org", regulation="gdpr", idempotency_key="client-7"
    )
    assert again.id == first.id and len(requests.list_requests()) == 1
    digest = current().vault.digest("idempotency", "client-7")
    assert requests.get(first.id).idempotency_key == digest


def test_certificate_export_of_a_duplicate_writes_its_canonical_certificate(
    home: Path, tmp_path: Path
) -> None:
    first = requests.submit(email="a@example.org", regulation="gdpr", channel="web")
    second = requests.submit(email="A@example.org", regulation="gdpr", channel="mail")
    certificate = decisions.deny(first.id, reason="no_match", by="officer-2")
    out = tmp_path / "cert.jws"
    exported = CliRunner().invoke(
        app, ["certificate", "export", second.id, "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.stderr
    assert out.read_text().strip() == certificate.jws
    said = " ".join(exported.stdout.split())
    assert f"the certificate of {first.id}, the request {second.id} duplicates" in said
    by_id = CliRunner().invoke(
        app,
        ["certificate", "export", second.id, "--out", str(out), "--id", certificate.id],
    )
    assert by_id.exit_code == 0, by_id.stderr


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


def test_same_person_under_another_regulation_is_its_own_request(home: Path) -> None:
    from erasure.timeline import due

    gdpr = requests.submit(
        email="ola@example.org",
        regulation="gdpr",
        received_at=datetime(2026, 12, 3, 10, tzinfo=UTC),
    )
    ccpa = requests.submit(
        email="ola@example.org",
        regulation="ccpa",
        received_at=datetime(2026, 12, 3, 11, tzinfo=UTC),
    )

    assert ccpa.duplicate_of is None and ccpa.id != gdpr.id
    assert (ccpa.jurisdiction, ccpa.deadline.isoformat()) == ("US-CA", "2027-01-17")
    assert ccpa.acknowledge_by is not None and ccpa.rule_version.startswith("ccpa")
    assert gdpr.deadline.isoformat() == "2027-01-04"
    # every request's clock still reads (dsr list reads them all)
    for request in (gdpr, ccpa):
        assert due(requests.get(request.id), within_days=5)["due_by"]
