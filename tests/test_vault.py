from pathlib import Path

import pytest

from erasure import audit
from erasure.models import AuditEvent
from lethe import ledger, runtime
from lethe.errors import ConfigError, KeyDestroyedError
from lethe.keys import KeyRing
from lethe.vault import Vault


def test_vault_seals_opens_and_shreds(home: Path) -> None:
    vault = runtime.current().vault
    with ledger.session() as db:
        vault.new_data_key(db, scope="request", key_id="dsr-x")
        sealed = vault.seal(db, "dsr-x", "dana@example.org")
        assert b"dana" not in sealed
        assert vault.open(db, "dsr-x", sealed) == "dana@example.org"
        vault.destroy(db, "dsr-x")
    fresh = Vault(KeyRing.load())
    with ledger.session() as db, pytest.raises(KeyDestroyedError):
        fresh.open(db, "dsr-x", sealed)


def test_vault_refuses_a_wrong_master_key(home: Path, monkeypatch) -> None:
    vault = runtime.current().vault
    with ledger.session() as db:
        vault.new_data_key(db, scope="request", key_id="dsr-y")
        sealed = vault.seal(db, "dsr-y", "x")
    monkeypatch.setenv("LETHE_MASTER_KEY", "A" * 43)
    other = Vault(KeyRing.load())
    with ledger.session() as db, pytest.raises(ConfigError, match="master key"):
        other.open(db, "dsr-y", sealed)


def test_digests_are_keyed_and_stable(home: Path) -> None:
    vault = runtime.current().vault
    assert vault.digest("email", "a@b.org") == vault.digest("email", "a@b.org")
    assert vault.digest("email", "a@b.org") != vault.digest("phone", "a@b.org")
    import hashlib

    assert vault.digest("email", "a@b.org") != hashlib.sha256(b"a@b.org").hexdigest()


def test_audit_chain_detects_an_edit(any_ledger: str) -> None:
    for n in range(3):
        audit.append("test.event", request_id=f"dsr-{n}", n=n)
    with ledger.session() as db:
        assert audit.verify_chain(db)
        event = db.get(AuditEvent, 2)
        event.detail = {"n": 99}
        db.add(event)
    with ledger.session() as db:
        assert not audit.verify_chain(db)
