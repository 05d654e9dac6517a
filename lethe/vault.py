"""The vault: the only place raw identifiers live, always encrypted.

Each request gets its own data key (AES-256-GCM) wrapped by the master key;
lineage keys share one long-lived "lineage" data key. Look-ups go through keyed
digests (HMAC-SHA256 under the digest key), never through the identifiers.
Destroying a data key (crypto-shredding) makes everything sealed under it
unrecoverable, while digests, certificates and the request record remain.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary
from sqlmodel import Column, Field, Session, SQLModel, select

from lethe.errors import ConfigError, KeyDestroyedError
from lethe.keys import KeyRing

LINEAGE_KEY_ID = "lineage"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Redacted:
    """Shows only allow-listed fields in repr, so logs never print identities."""

    _repr_fields: tuple[str, ...] = ("id",)

    def __repr_args__(self) -> Any:
        return [(name, getattr(self, name, None)) for name in self._repr_fields]


class DataKey(Redacted, SQLModel, table=True):
    __tablename__ = "data_key"
    _repr_fields = ("id", "scope", "created_at", "destroyed_at")

    id: str = Field(primary_key=True)
    scope: str
    wrapped: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: datetime = Field(default_factory=utcnow)
    destroyed_at: datetime | None = None


class SealedIdentity(Redacted, SQLModel, table=True):
    """One identifier of one request: submitted by the requester or resolved."""

    __tablename__ = "sealed_identity"
    _repr_fields = ("id", "request_id", "role", "kind", "system", "dataset")

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True)
    role: str  # "submitted" or "resolved"
    kind: str  # email, phone, salesforce_id, or a system's key kind
    system: str | None = None
    dataset: str | None = None
    digest: str = Field(index=True)
    sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class Vault:
    """Seals, opens and shreds identifiers; makes keyed digests."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._master = AESGCM(keys.master_key())
        self._digest_key = keys.digest_key()
        self._open_keys: dict[str, AESGCM] = {}

    def digest(self, kind: str, value: str) -> str:
        """Keyed digest of an already-normalised identifier."""
        message = f"{kind}\x00{value}".encode()
        return hmac.new(self._digest_key, message, hashlib.sha256).hexdigest()

    def new_data_key(
        self, db: Session, *, scope: str, key_id: str | None = None
    ) -> str:
        key_id = key_id or f"dk-{uuid.uuid4().hex}"
        nonce = secrets.token_bytes(12)
        wrapped = nonce + self._master.encrypt(
            nonce, AESGCM.generate_key(bit_length=256), key_id.encode()
        )
        db.add(DataKey(id=key_id, scope=scope, wrapped=wrapped))
        db.flush()
        return key_id

    def lineage_key(self, db: Session) -> str:
        if db.get(DataKey, LINEAGE_KEY_ID) is None:
            self.new_data_key(db, scope="lineage", key_id=LINEAGE_KEY_ID)
        return LINEAGE_KEY_ID

    def _aead(self, db: Session, key_id: str) -> AESGCM:
        if key_id in self._open_keys:
            return self._open_keys[key_id]
        row = db.get(DataKey, key_id)
        if row is None:
            raise ConfigError(f"data key {key_id} is not in this ledger")
        if row.wrapped is None:
            raise KeyDestroyedError(f"data key {key_id} was destroyed")
        try:
            raw = self._master.decrypt(
                row.wrapped[:12], row.wrapped[12:], key_id.encode()
            )
        except InvalidTag as exc:
            raise ConfigError(
                "the master key does not open this ledger's data keys; check "
                "LETHE_MASTER_KEY or LETHE_HOME/keys/master.key"
            ) from exc
        self._open_keys[key_id] = AESGCM(raw)
        return self._open_keys[key_id]

    def seal(self, db: Session, key_id: str, plaintext: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead(db, key_id).encrypt(
            nonce, plaintext.encode(), key_id.encode()
        )

    def open(self, db: Session, key_id: str, sealed: bytes) -> str:
        plain = self._aead(db, key_id).decrypt(
            sealed[:12], sealed[12:], key_id.encode()
        )
        return plain.decode()

    def destroy(self, db: Session, key_id: str) -> None:
        """Crypto-shred: drop the wrapped key and every sealed value under it."""
        row = db.get(DataKey, key_id)
        if row is None:
            return
        row.wrapped = None
        row.destroyed_at = row.destroyed_at or utcnow()
        db.add(row)
        self._open_keys.pop(key_id, None)
        for sealed in db.exec(
            select(SealedIdentity).where(SealedIdentity.request_id == key_id)
        ):
            sealed.sealed = None
            db.add(sealed)
