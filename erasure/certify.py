"""Close a request: issue its certificate when every system is verified,
otherwise mark it incomplete and say which systems are outstanding.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from erasure import audit, duplicates
from erasure.certificate import sign
from erasure.models import (
    AWAITING_APPROVAL,
    COMPLETED,
    DEFERRED,
    DENIED,
    HELD,
    INCOMPLETE,
    NEEDS_DISAMBIGUATION,
    Attempt,
    Certificate,
    LegalHold,
    Request,
    SystemStep,
)
from erasure.outcomes import ERASED_ACTIONS, is_settled, outcome_label
from erasure.requests import get, steps_of
from lethe import ledger
from lethe.errors import InputError
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow
from lineage import suppression

CERTIFICATE_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
                "parts": _parts(step),
                "holds": _holds(step),
            }
            for step in steps
        ],
        "lineage": {"digest": request.lineage_digest},
        "policy": {"digest": request.policy_digest or None},
        "recipients": told,
    }


def _parts(step: SystemStep) -> dict[str, dict[str, Any]]:
    """Per dataset: the policy's decision and what became of it (no reasons)."""
    kept = ("action", "rule", "basis", "retention_rule", "state", "outcome")
    return {
        dataset: {k: part[k] for k in kept if part.get(k) is not None}
        for dataset, part in sorted(step.parts.items())
    }


def _holds(step: SystemStep) -> list[dict[str, Any]]:
    """The holds deferring part of the step: ids and end dates, never reasons."""
    ids = sorted({h for p in step.parts.values() for h in p.get("held_by") or []})
    if not ids:
        return []
    with ledger.session() as db:
        found = [db.get(LegalHold, i) for i in ids]
    return [
        {"id": h.id, "ends_on": h.ends_on.isoformat() if h.ends_on else None}
        for h in found
        if h is not None
    ]


def _erased_datasets(step: SystemStep) -> set[str]:
    """The step's datasets whose copies are gone (not retained, not held)."""
    found = set()
    for dataset in step.datasets:
        part = step.parts.get(dataset, {})
        if part.get("state") == DEFERRED:
            continue
        outcome = part.get("outcome") or step.action
        if outcome in ERASED_ACTIONS:
            found.add(dataset)
    return found


def _suppress(request_id: str) -> None:
    """Put what this request erased on the suppression list (digests only)."""
    with ledger.session() as db:
        request = get(request_id, db)
        steps = steps_of(db, request.id)
        erased = {s.system: _erased_datasets(s) for s in steps}
        held = {s.system for s in steps if s.state == DEFERRED}
        keys = [
            row.digest
            for row in db.exec(
                select(SealedIdentity).where(
                    SealedIdentity.request_id == request.id,
                    SealedIdentity.role == "resolved",
                )
            )
            if row.dataset in erased.get(row.system or "", set())
        ]
        suppression.suppress(
            db,
            request.estate,
            request.id,
            systems={s for s, datasets in erased.items() if datasets and s not in held},
            subjects=request.subjects,
            keys=keys,
        )


def latest_certificate(db: Session, request_id: str) -> Certificate | None:
    """The request's newest certificate (a superseding one replaces the first)."""
    return db.exec(
        select(Certificate)
        .where(Certificate.request_id == request_id)
        .order_by(col(Certificate.issued_at).desc())
    ).first()


def close(request_id: str) -> Certificate | None:
    """Certify what is settled; mark the request incomplete when something is not.

    Every step settled: a complete certificate. Settled except parts a legal
    hold defers: a partial certificate saying so (state ``held``). Once those
    parts have run, a new certificate supersedes the partial one and names it.
    """
    with ledger.session() as db:
        request = get(request_id, db)
        latest = latest_certificate(db, request.id)
        if request.state in (AWAITING_APPROVAL, DENIED):
            return latest
        if latest is not None and request.state == COMPLETED:
            return latest
        steps = steps_of(db, request.id)
        outstanding = [
            s.system for s in steps if not is_settled(s) and s.state != DEFERRED
        ]
        deferred = [s.system for s in steps if s.state == DEFERRED]
        if outstanding or not steps:
            request.state = INCOMPLETE
            db.add(request)
            certificate = None
        elif latest is not None and deferred and request.state == HELD:
            return latest  # nothing new to state: the same parts still wait
        else:
            completed_at = utcnow()
            kind = "partial" if deferred else "completion"
            certificate = _issue(
                db, request, steps, latest, kind, None if deferred else completed_at
            )
            request.state = HELD if deferred else COMPLETED
            request.completed_at = None if deferred else completed_at
            db.add(request)
    if certificate is None:
        audit.append(
            "request.incomplete", request_id=request_id, outstanding=outstanding
        )
        return None
    _suppress(request_id)
    audit.append(
        "certificate.issued",
        request_id=request_id,
        certificate_id=certificate.id,
        kid=certificate.kid,
        supersedes=certificate.supersedes,
        deferred=deferred,
    )
    return certificate


def _issue(
    db: Session,
    request: Request,
    steps: list[SystemStep],
    latest: Certificate | None,
    kind: str,
    completed_at: datetime | None,
) -> Certificate:
    """Sign and store one certificate of ``kind``, naming the one it supersedes."""
    certificate_id = f"cert-{uuid.uuid4().hex[:12]}"
    kid, key = current().keys.signing_key()
    stated_at = utcnow()
    payload = payload_for(
        request,
        duplicates.intake_ids(db, request.id),
        recipients(db, request, steps),
        steps,
        completed_at or stated_at,
        certificate_id,
    )
    if completed_at is None:
        payload["request"]["completed_at"] = None
        payload["request"]["stated_at"] = _iso(stated_at)
    supersedes = latest.id if latest is not None else None
    payload.update(kind=kind, complete=kind == "completion", supersedes=supersedes)
    certificate = Certificate(
        id=certificate_id,
        request_id=request.id,
        kid=kid,
        jws=sign(payload, kid=kid, key=key),
        supersedes=supersedes,
        kind=kind,
    )
    db.add(certificate)
    return certificate


def interim(request_id: str) -> Certificate:
    """Sign a statement of where an unfinished request stands, system by system.

    For the deadline: it states each system's honest level now — awaiting the
    vendor (with its documented deadline), failed, deferred — and is marked
    ``"complete": false``. The completion certificate, when it comes,
    supersedes it.
    """
    with ledger.session() as db:
        request = get(request_id, db)
        if request.state in (COMPLETED, DENIED):
            raise InputError(
                f"request {request.id} is {request.state}: its certificate is final; "
                f"`lethe certificate export {request.id}` writes it"
            )
        steps = steps_of(db, request.id)
        if not steps:
            raise InputError(_no_plan(request))
        certificate = _issue(
            db, request, steps, latest_certificate(db, request.id), "interim", None
        )
    audit.append(
        "certificate.interim", request_id=request_id, certificate_id=certificate.id
    )
    return certificate


def _no_plan(request: Request) -> str:
    """Why a request has nothing to state yet, in its state's own terms."""
    rid = request.id
    reasons = {
        AWAITING_APPROVAL: "it awaits a second officer's approval, and nothing is "
        f"searched before it; approve it first (`lethe dsr approve {rid} --by "
        f"HANDLE`), then `lethe dsr run {rid}`",
        INCOMPLETE: f"its search failed before planning; `lethe dsr show {rid}` says "
        f"why; re-run with `lethe dsr run {rid}`",
        NEEDS_DISAMBIGUATION: "its identity matched several people; choose with "
        f"`lethe dsr resolve {rid} --record ID`, then `lethe dsr run {rid}`",
    }
    if request.state not in reasons:
        return (
            f"request {rid} has not been planned yet: run it first "
            f"(`lethe dsr run {rid}`)"
        )
    return f"request {rid} has no plan: {reasons[request.state]}"
