"""Close a request: issue its certificate when every system is verified,
otherwise mark it incomplete and say which systems are outstanding.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from erasure import audit, duplicates
from erasure.certificate import sign
from erasure.models import (
    COMPLETED,
    DONE,
    INCOMPLETE,
    NO_DATA,
    Attempt,
    Certificate,
    Request,
    SystemStep,
)
from erasure.requests import get, steps_of
from lethe import ledger
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow
from lineage import suppression

CERTIFICATE_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def is_settled(step: SystemStep) -> bool:
    return step.state == NO_DATA or (step.state == DONE and step.verified)


def outcome_label(step: SystemStep) -> str:
    """The honest level of what happened, as the certificate states it."""
    if step.state == NO_DATA:
        return "no data held"
    if step.action == "retained":
        return f"retained under {step.basis} until {step.retained_until}"
    if step.action == "anonymised":
        return "anonymised"
    purged_by = step.dates.get("physically_purged_by")
    if step.action in ERASED_ACTIONS and purged_by:
        prefix = "already absent; " if step.action == "already_absent" else ""
        return f"{prefix}deleted, physically purged by {purged_by}"
    if step.action == "already_absent":
        return "already absent"
    return "deleted (logically)" if step.action == "deleted" else step.state


def recipients(db: Session, request: Request, steps: list[SystemStep]) -> list[dict]:
    """Each system that held the data and was told to erase it, and when
    (GDPR Art. 19, CCPA §7022(b)): the first external call of its step."""
    first_call: dict[str, datetime] = {}
    for attempt in db.exec(select(Attempt).where(Attempt.request_id == request.id)):
        if attempt.called:
            first_call.setdefault(attempt.system, attempt.started_at)
    return [
        {
            "system": step.system,
            "told_at": _iso(first_call[step.system]),
            "by": f"vendor job {step.vendor_job_id}"
            if step.vendor_job_id
            else "direct erasure call",
        }
        for step in steps
        if step.system in first_call
    ]


def payload_for(
    request: Request,
    intake_ids: list[str],
    told: list[dict],
    steps: list[SystemStep],
    completed_at: datetime,
    certificate_id: str,
) -> dict[str, Any]:
    return {
        "certificate_id": certificate_id,
        "version": CERTIFICATE_VERSION,
        "issuer": "lethe",
        "request": {
            "id": request.id,
            "intake_ids": intake_ids,
            "type": request.type,
            "regulation": request.regulation,
            "estate": request.estate,
            "linked_to": request.linked_to,
            "received_at": _iso(request.received_at),
            "deadline": request.deadline.isoformat(),
            "completed_at": _iso(completed_at),
        },
        "subject": {
            "digest": request.subject_digest,
            "digest_alg": "HMAC-SHA256",
            "identity": request.subject_kind,
        },
        "systems": [
            {
                "system": step.system,
                "action": step.action or "none",
                "outcome": outcome_label(step),
                "records_affected": step.records_affected,
                "verification": {
                    "observed": step.observed,
                    "verified_at": _iso(step.verified_at),
                },
                "vendor_job_id": step.vendor_job_id,
                "vendor_status": step.vendor_status,
                "retained_until": step.retained_until.isoformat()
                if step.retained_until
                else None,
                "basis": step.basis,
                "dates": step.dates,
            }
            for step in steps
        ],
        "lineage": {"digest": request.lineage_digest},
        "recipients": told,
    }


ERASED_ACTIONS = ("deleted", "already_absent")


def _suppress(request_id: str) -> None:
    """Put what this request erased on the suppression list (digests only)."""
    with ledger.session() as db:
        request = get(request_id, db)
        erased = {
            s.system for s in steps_of(db, request.id) if s.action in ERASED_ACTIONS
        }
        keys = [
            row.digest
            for row in db.exec(
                select(SealedIdentity).where(
                    SealedIdentity.request_id == request.id,
                    SealedIdentity.role == "resolved",
                )
            )
            if row.system in erased
        ]
        suppression.suppress(
            db,
            request.estate,
            request.id,
            systems=erased,
            subjects=request.subjects,
            keys=keys,
        )


def close(request_id: str) -> Certificate | None:
    """Issue the certificate if every step is settled; else mark incomplete."""
    runtime = current()
    with ledger.session() as db:
        request = get(request_id, db)
        existing = db.exec(
            select(Certificate).where(Certificate.request_id == request.id)
        ).first()
        if existing is not None:
            return existing
        steps = steps_of(db, request.id)
        outstanding = [s.system for s in steps if not is_settled(s)]
        if outstanding or not steps:
            request.state = INCOMPLETE
            db.add(request)
            certificate = None
        else:
            completed_at = utcnow()
            certificate_id = f"cert-{uuid.uuid4().hex[:12]}"
            kid, key = runtime.keys.signing_key()
            jws = sign(
                payload_for(
                    request,
                    duplicates.intake_ids(db, request.id),
                    recipients(db, request, steps),
                    steps,
                    completed_at,
                    certificate_id,
                ),
                kid=kid,
                key=key,
            )
            certificate = Certificate(
                id=certificate_id, request_id=request.id, kid=kid, jws=jws
            )
            request.state = COMPLETED
            request.completed_at = completed_at
            db.add(certificate)
            db.add(request)
    if certificate is None:
        audit.append(
            "request.incomplete", request_id=request_id, outstanding=outstanding
        )
    else:
        _suppress(request_id)
        audit.append(
            "certificate.issued",
            request_id=request_id,
            certificate_id=certificate.id,
            kid=certificate.kid,
        )
    return certificate
