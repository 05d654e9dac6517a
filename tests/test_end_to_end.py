"""End to end on a real sample estate, through real Prefect flows.

One estate per ledger backend (SQLite and PostgreSQL). A canary person is
planted in every system; a second request names a person lethe holds no
lineage for. Both run in one flow run, then the canary's request runs again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import select

from connectors.salesforce import SalesforceConnector
from erasure import requests
from erasure.certificate import CertificateInvalid, verify
from erasure.models import Certificate
from erasure.purge import purge
from lethe import ledger
from lethe.config import load_settings
from lethe.emulators.salesforce import SalesforceStore
from lethe.emulators.sap import SapStore
from lethe.emulators.segment import SegmentStore
from lethe.errors import KeyDestroyedError
from lethe.estate.jobs import device_id
from lethe.runtime import current
from lethe.vault import DataKey, SealedIdentity, Vault
from tests.helpers import (
    Estate,
    flush_prefect,
    forms_of,
    plant_canary_estate,
    prefect_files,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def estate(any_ledger: str, tmp_path: Path) -> Iterator[Estate]:
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    try:
        yield planted
    finally:
        planted.servers.stop()


def _others_fingerprint(e: Estate) -> dict[str, object]:
    """Counts and checksums of everyone but the canary, in all four systems."""
    sf = SalesforceStore(e.workdir / "salesforce.db")
    case_ids = [
        r["Id"] for r in sf.records("Case") if r.get("ContactId") == e.contact_id
    ]
    mine = {e.contact_id, *case_ids}
    sf_sum = sf.checksum(exclude=mine)
    sf_counts = {
        o: len([r for r in sf.records(o) if r["Id"] not in mine])
        for o in ("Contact", "Lead", "Case")
    }
    sf.close()
    sap = SapStore(e.workdir / "erp.db")
    sap_sum, sap_count = sap.checksum(exclude=[e.partner_id]), sap.count() - 1
    sap.close()
    events = sqlite3.connect(e.workdir / "analytics.db")
    rows = events.execute(
        "SELECT * FROM events WHERE user_id IS NOT ? AND anonymous_id IS NOT ? "
        "ORDER BY message_id",
        (e.user_id, device_id(e.contact_id)),
    ).fetchall()
    events.close()
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        raw = db.execute(
            text("SELECT * FROM raw_sf_contact WHERE sf_id != :i ORDER BY sf_id"),
            {"i": e.contact_id},
        ).fetchall()
        mart = db.execute(
            text(
                "SELECT * FROM mart_customer_summary WHERE sf_id != :i ORDER BY sf_id"
            ),
            {"i": e.contact_id},
        ).fetchall()
    engine.dispose()
    return {
        "salesforce": (sf_counts, sf_sum),
        "erp": (sap_count, sap_sum),
        "analytics": (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()),
        "warehouse": (
            len(raw),
            len(mart),
            hashlib.sha256(repr((raw, mart)).encode()).hexdigest(),
        ),
    }


def _payload(jws: str) -> dict:
    part = jws.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _certificate(request_id: str) -> str:
    with ledger.session() as db:
        return db.exec(
            select(Certificate.jws).where(Certificate.request_id == request_id)
        ).one()


def test_erasure_end_to_end(estate: Estate, capfd: pytest.CaptureFixture[str]) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    e = estate
    before = _others_fingerprint(e)
    assert capture_lineage()["manifest_copies"] > 0

    canary_request = requests.submit(
        email=f"  {e.canary.email}\u00a0", regulation="gdpr"
    )
    nobody = requests.submit(email="nobody.at.all@example.org", regulation="ccpa")
    states = erase_requests([canary_request.id, nobody.id])
    assert states == {canary_request.id: "completed", nobody.id: "completed"}

    # The paced vendor drew from one Prefect rate limit shared by every run.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("lethe-rate-analytics")
    assert limit.slot_decay_per_second == 10 and limit.limit == 10

    shown = requests.describe(canary_request.id)
    systems = {s["system"]: s for s in shown["systems"]}
    assert systems["salesforce"]["action"] == "deleted"
    assert systems["salesforce"]["records_affected"] == 2  # the Contact and its Case
    assert systems["warehouse"]["observed"] == {
        "raw.sf_contact": 0,
        "mart.customer_summary": 0,
        "crm.newsletter": 0,  # found by the discovery scan alone
    }
    assert systems["warehouse"]["dates"]["physically_purged_by"]  # secure_delete
    assert systems["analytics"]["vendor_status"] == "FINISHED"
    assert systems["erp"]["action"] == "retained"
    assert systems["erp"]["retained_until"] and systems["erp"]["basis"]
    assert all(s["verified"] for s in systems.values())

    # Salesforce returns the canary from neither query nor queryAll.
    sf = e.settings["systems"]["salesforce"]
    connector = SalesforceConnector(
        system="salesforce",
        base_url=sf["base_url"],
        client_id=sf["client_id"],
        client_secret=sf["client_secret"],
    )
    evidence = connector.verify({"Contact": [e.contact_id]})
    assert evidence.verified and set(evidence.observed.values()) == {0}
    assert connector.find_contacts(emails=[e.canary.email.lower()]) in (
        {},
        {"Contact": [], "Lead": []},
    )
    connector.close()
    # Warehouse: no row for the canary in any table.
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        for table in ("raw_sf_contact", "mart_customer_summary"):
            count = db.execute(
                text(
                    f"SELECT count(*) FROM {table} WHERE sf_id = :i "  # noqa: S608
                    "OR lower(email) = :m"
                ),
                {"i": e.contact_id, "m": e.canary.email.lower()},
            ).scalar()
            assert count == 0, table
    engine.dispose()
    # Analytics: the regulation finished and the events are gone.
    segment = SegmentStore(e.workdir / "analytics.db")
    assert segment.events_for(e.user_id) == 0
    assert segment.events_for_anonymous(device_id(e.contact_id)) == 0
    assert systems["analytics"]["keys_found"] == 2  # userId and anonymousId
    mine = [r for r in segment.regulations() if e.user_id in r["subjects"]]
    assert [r["status"] for r in mine] == ["FINISHED"]
    segment.close()
    # ERP: blocked, personal fields overwritten, no e-mail or phone entries.
    sap = SapStore(e.workdir / "erp.db")
    partner = sap.partner(e.partner_id)
    sap.close()
    assert partner["BusinessPartnerIsBlocked"] is True
    assert e.canary.last_name not in json.dumps(partner)
    assert all(not a["emails"] and not a["phones"] for a in partner["addresses"])
    # Everyone else is unchanged.
    assert _others_fingerprint(e) == before

    # The person with no lineage: "no data held" everywhere, and certified.
    nobody_systems = requests.describe(nobody.id)["systems"]
    assert {s["state"] for s in nobody_systems} == {"no_data"}
    nobody_cert = _payload(_certificate(nobody.id))
    assert {s["outcome"] for s in nobody_cert["systems"]} == {"no data held"}

    # Certificate: verifies; one changed byte fails; no identifiers inside.
    jws = _certificate(canary_request.id)
    keys = current().keys.public_keys()
    payload = verify(jws, keys).payload
    assert payload["request"]["id"] == canary_request.id
    assert payload["subject"]["digest"] == canary_request.subject_digest
    told = {r["system"]: r for r in payload["recipients"]}
    assert set(told) == {"salesforce", "warehouse", "analytics", "erp"}
    assert told["analytics"]["by"].startswith("vendor job ") and told["erp"]["told_at"]
    outcome = {s["system"]: s["outcome"] for s in payload["systems"]}
    assert outcome["warehouse"].startswith("deleted, physically purged by ")
    assert outcome["erp"].startswith("retained under ")
    tampered = jws[:60] + ("A" if jws[60] != "A" else "B") + jws[61:]
    with pytest.raises(CertificateInvalid):
        verify(tampered, keys)
    decoded = json.dumps(payload)
    for identifier in (
        e.canary.email,
        e.canary.email.lower(),
        e.canary.last_name,
        e.contact_id,
        e.contact_id[:15],
        e.partner_id,
        e.user_id,
        "5550199",
    ):
        assert identifier not in decoded and identifier not in jws
    cert_file = e.workdir / "canary.jws"
    cert_file.write_text(jws + "\n")
    if shutil.which("openssl"):
        pem = current().keys.publish() / "signing-key.pub.pem"
        result = subprocess.run(
            [
                "bash",
                str(REPO / "scripts/verify-with-openssl.sh"),
                str(cert_file),
                str(pem),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "Verified Successfully" in result.stdout

    # Running the same request again files no second regulation, same outcome.
    assert erase_requests([canary_request.id]) == {canary_request.id: "completed"}
    segment = SegmentStore(e.workdir / "analytics.db")
    assert len([r for r in segment.regulations() if e.user_id in r["subjects"]]) == 1
    segment.close()
    assert requests.describe(canary_request.id)["systems"] == shown["systems"]

    # Purge: the identifiers can no longer be decrypted; the proof remains.
    purge(canary_request.id)
    with ledger.session() as db:
        sealed = db.exec(
            select(SealedIdentity).where(SealedIdentity.request_id == canary_request.id)
        ).all()
        assert sealed and all(row.sealed is None for row in sealed)
        assert db.get(DataKey, canary_request.id).wrapped is None
    with ledger.session() as db, pytest.raises(KeyDestroyedError):
        Vault(current().keys).open(db, canary_request.id, b"\0" * 40)
    assert verify(_certificate(canary_request.id), keys).payload == payload
    record = requests.describe(canary_request.id)
    assert record["state"] == "completed" and record["purged_at"]
    assert record["received_at"] and record["channel"] == "cli"
    assert [s["action"] for s in record["systems"]] == [
        s["action"] for s in shown["systems"]
    ]

    # The canary is nowhere lethe or Prefect wrote, nor in the output.
    flush_prefect()
    printed = capfd.readouterr()
    prefect_dbs = prefect_files()
    assert prefect_dbs, "Prefect's database was not found"
    assert any(canary_request.id.encode() in p.read_bytes() for p in prefect_dbs)
    home_files = [p for p in load_settings().home.rglob("*") if p.is_file()]
    warehouse = e.settings["systems"]["warehouse"]["url"]
    if warehouse.startswith("sqlite:///"):
        home_files.append(Path(warehouse.removeprefix("sqlite:///")))
    raw_keys = [e.contact_id, e.partner_id, e.user_id, device_id(e.contact_id)]
    for path in [*prefect_dbs, *home_files]:
        data = path.read_bytes()
        for form in forms_of(e.canary.email):
            assert form not in data, f"canary e-mail found in {path}"
        if path in home_files[-1:] and warehouse.startswith("sqlite:///"):
            continue  # the warehouse is the estate's, not lethe's: e-mail only
        for key in raw_keys:
            assert key.encode() not in data, f"a raw key of the canary is in {path}"
    for stream in (printed.out, printed.err):
        assert e.canary.email.lower() not in stream.lower()
        assert e.canary.last_name not in stream
