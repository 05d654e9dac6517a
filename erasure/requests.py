"""Data subject requests: intake, look-up and their machine-readable state.

Intake validates everything before it writes anything, then writes the request,
its data key and its sealed identity in one transaction: a request is stored
whole or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from erasure import audit
from erasure.deadlines import REGULATIONS, deadline_for
from erasure.models import Certificate, Request, SystemStep
from lethe import ledger
from lethe.errors import InputError, NotFoundError
from lethe.identity import normalize_email
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow

REQUEST_TYPES = ("erasure",)


def new_request_id() -> str:
    return f"dsr-{uuid.uuid4().hex[:12]}"


def submit(
    *,
    email: str,
    regulation: str,
    channel: str = "cli",
    received_at: datetime | None = None,
) -> Request:
    """Store a new erasure request and return it."""
    regulation = regulation.strip().lower()
    if regulation not in REGULATIONS:
        raise InputError(
            f"unknown regulation {regulation!r}: use one of {', '.join(REGULATIONS)}"
        )
    normalized = normalize_email(email)
    received = (received_at or datetime.now(UTC)).astimezone(UTC)
    runtime = current()
    vault = runtime.vault
    request_id = new_request_id()
    with ledger.session() as db:
        vault.new_data_key(db, scope="request", key_id=request_id)
        digest = vault.digest("email", normalized)
        db.add(
            Request(
                id=request_id,
                regulation=regulation,
                channel=channel,
                received_at=received,
                deadline=deadline_for(regulation, received),
                subject_digest=digest,
            )
        )
        db.add(
            SealedIdentity(
                request_id=request_id,
                role="submitted",
                kind="email",
                digest=digest,
                sealed=vault.seal(db, request_id, normalized),
            )
        )
    audit.append(
        "request.received",
        request_id=request_id,
        regulation=regulation,
        channel=channel,
    )
    return get(request_id)


def get(request_id: str, db: Session | None = None) -> Request:
    if db is None:
        with ledger.session() as own:
            return get(request_id, own)
    request = db.get(Request, request_id.strip())
    if request is None:
        raise NotFoundError(
            f"no request has id {request_id.strip()!r}; `lethe dsr list` shows them"
        )
    return request


def get_many(request_ids: Sequence[str]) -> list[Request]:
    """All requests or a NotFoundError naming every unknown id."""
    with ledger.session() as db:
        found = [db.get(Request, rid.strip()) for rid in request_ids]
    missing = [rid for rid, req in zip(request_ids, found, strict=True) if req is None]
    if missing:
        raise NotFoundError(
            f"no request has id {', '.join(missing)}; `lethe dsr list` shows them"
        )
    return [req for req in found if req is not None]


def list_requests() -> list[Request]:
    with ledger.session() as db:
        return list(db.exec(select(Request).order_by(col(Request.received_at))))


def steps_of(db: Session, request_id: str) -> list[SystemStep]:
    return list(
        db.exec(
            select(SystemStep)
            .where(SystemStep.request_id == request_id)
            .order_by(col(SystemStep.system))
        )
    )


def describe(request_id: str) -> dict[str, Any]:
    """The request's state for ``--json`` and for the tables the CLI prints."""
    with ledger.session() as db:
        request = get(request_id, db)
        steps = steps_of(db, request.id)
        certificate = db.exec(
            select(Certificate).where(Certificate.request_id == request.id)
        ).first()
    return {
        "request_id": request.id,
        "type": request.type,
        "regulation": request.regulation,
        "channel": request.channel,
        "state": request.state,
        "received_at": _iso(request.received_at),
        "deadline": request.deadline.isoformat(),
        "completed_at": _iso(request.completed_at),
        "purged_at": _iso(request.purged_at),
        "certificate_id": certificate.id if certificate else None,
        "systems": [_step_json(step) for step in steps],
    }


def _step_json(step: SystemStep) -> dict[str, Any]:
    return {
        "system": step.system,
        "state": step.state,
        "planned_action": step.planned_action,
        "action": step.action,
        "keys_found": step.key_count,
        "records_affected": step.records_affected,
        "verified": step.verified,
        "observed": step.observed,
        "verified_at": _iso(step.verified_at),
        "vendor_job_id": step.vendor_job_id,
        "vendor_status": step.vendor_status,
        "retained_until": step.retained_until.isoformat()
        if step.retained_until
        else None,
        "basis": step.basis,
        "detail": step.detail,
    }


def _iso(value: datetime | None) -> str | None:
    return (
        value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
    )


def touch(step: SystemStep) -> SystemStep:
    step.updated_at = utcnow()
    return step
