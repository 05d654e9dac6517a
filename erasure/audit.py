"""The audit chain: every event hashes the one before it, so an edit shows.

Details carry request ids, systems, states, counts and vendor job ids only.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import rfc8785
from sqlalchemy import text
from sqlmodel import Session, col, select

from erasure.models import AuditEvent
from lethe import ledger
from lethe.vault import utcnow

GENESIS = "0" * 64
_CHAIN_LOCK = threading.Lock()
_PG_CHAIN_LOCK_ID = 7_411_001


def append(kind: str, *, request_id: str | None = None, **detail: Any) -> None:
    """Append one event in its own short transaction, serialised on the chain."""
    with _CHAIN_LOCK, ledger.session() as db:
        if db.get_bind().dialect.name == "postgresql":
            db.exec(
                text("SELECT pg_advisory_xact_lock(:id)").bindparams(
                    id=_PG_CHAIN_LOCK_ID
                )
            )
        _append(db, kind, request_id=request_id, detail=detail)


def _append(
    db: Session, kind: str, *, request_id: str | None, detail: dict[str, Any]
) -> AuditEvent:
    last = db.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1))
    previous = last.first()
    prev_hash = previous.hash if previous else GENESIS
    at = utcnow()
    body = {
        "kind": kind,
        "request_id": request_id,
        "at": at.isoformat(),
        "detail": detail,
        "prev": prev_hash,
    }
    digest = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    event = AuditEvent(
        request_id=request_id,
        kind=kind,
        at=at,
        detail=detail,
        prev_hash=prev_hash,
        hash=digest,
    )
    db.add(event)
    db.flush()
    return event


def verify_chain(db: Session) -> bool:
    """True when every event's hash matches its content and predecessor."""
    prev_hash = GENESIS
    for event in db.exec(select(AuditEvent).order_by(col(AuditEvent.id))):
        body = {
            "kind": event.kind,
            "request_id": event.request_id,
            "at": event.at.isoformat(),
            "detail": event.detail,
            "prev": prev_hash,
        }
        if (
            event.prev_hash != prev_hash
            or event.hash != hashlib.sha256(rfc8785.dumps(body)).hexdigest()
        ):
            return False
        prev_hash = event.hash
    return True
