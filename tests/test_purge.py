from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from erasure import requests
from erasure.models import COMPLETED, Request
from erasure.purge import purge_expired
from lethe import ledger
from lethe.errors import KeyDestroyedError
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow


def _completed(days_ago: int) -> str:
    request = requests.submit(email="old@example.org", regulation="ccpa")
    with ledger.session() as db:
        row = db.get(Request, request.id)
        row.state = COMPLETED
        row.completed_at = utcnow() - timedelta(days=days_ago)
        db.add(row)
    return request.id


def test_purge_expired_shreds_only_requests_past_their_proof_period(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_PROOF_PERIOD_DAYS", "10")
    monkeypatch.setenv("LETHE_RECHECK_DAYS", "")
    old, recent = _completed(days_ago=11), _completed(days_ago=2)
    assert purge_expired() == [old]
    vault = current().vault
    with ledger.session() as db:
        rows = {r.request_id: r for r in db.exec(select(SealedIdentity))}
        assert rows[old].sealed is None
        assert vault.open(db, recent, rows[recent].sealed) == "old@example.org"
    with ledger.session() as db, pytest.raises(KeyDestroyedError):
        type(vault)(current().keys).open(db, old, b"\0" * 40)
    assert requests.describe(old)["purged_at"] is not None
    assert purge_expired() == []


def test_purge_waits_for_the_last_recheck(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_RECHECK_DAYS", "7,30")
    request_id = _completed(days_ago=100)
    assert purge_expired() == []  # the re-checks still need its keys
    with ledger.session() as db:
        row = db.get(Request, request_id)
        row.rechecks = {"7": "clean", "30": "clean"}
        db.add(row)
    assert purge_expired() == [request_id]


def test_purged_ledger_file_holds_no_plaintext(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_RECHECK_DAYS", "")
    request_id = _completed(days_ago=100)
    assert purge_expired() == [request_id]
    assert b"old@example.org" not in (home / "ledger.db").read_bytes()
