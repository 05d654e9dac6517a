"""Data subject requests: intake, look-up and their machine-readable state.

Intake validates everything before it writes anything, then writes the request,
its data key and its sealed identity in one transaction: a request is stored
whole or not at all.
"""

from __future__ import annotations

import getpass
import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from erasure import audit, duplicates
from erasure.clocks import DEFAULT_JURISDICTION, REGULATIONS, Clock
from erasure.models import (
    AWAITING_APPROVAL,
    DUPLICATE,
    INCOMPLETE,
    RECEIVED,
    Certificate,
    Request,
    SystemStep,
)
from erasure.outcomes import outcome_label
from lethe import ledger
from lethe.errors import InputError, NotFoundError
from lethe.identity import normalize_email, normalize_phone
from lethe.runtime import current
from lethe.vault import SealedIdentity

REQUEST_TYPES = ("erasure",)
HANDLE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_request_id() -> str:
    return f"dsr-{uuid.uuid4().hex[:12]}"


def officer(handle: str | None = None) -> str:
    """The staff handle of whoever acts: ``--by``, else ``LETHE_OFFICER``, else
    the OS user. A handle is a short staff id (``officer-7``), never an e-mail
    or a name, so the message never repeats what was given."""
    source = "--by"
    if handle is None:
        handle, source = os.environ.get("LETHE_OFFICER"), "LETHE_OFFICER"
    if handle is None:
        try:
            handle, source = getpass.getuser(), "the OS user name"
        except (KeyError, OSError):
            raise InputError(
                "cannot tell who is acting: pass --by HANDLE or set LETHE_OFFICER"
            ) from None
    handle = handle.strip()
    if not HANDLE.fullmatch(handle):
        raise InputError(
            f"{source} must be a staff handle such as officer-7: 1 to 64 letters, "
            "digits, '.', '_' or '-' (not an e-mail address or a name)"
        )
    return handle


def _identities(
    email: str | None, phone: str | None, region: str
) -> list[tuple[str, str]]:
    """Validate and normalise every submitted identity, e-mail first."""
    identities = []
    if email is not None:
        identities.append(("email", normalize_email(email)))
    if phone is not None:
        identities.append(("phone", normalize_phone(phone, region=region)))
    if not identities:
        raise InputError(
            "a request needs an identity: give --email, --phone or both "
            "(a name alone never starts an erasure)"
        )
    return identities


def _received(received_at: datetime | None) -> datetime:
    now = datetime.now(UTC)
    if received_at is None:
        return now
    if received_at.tzinfo is None:
        raise InputError(
            "--received-at needs a UTC offset, e.g. 2026-12-01T18:30:00+01:00 or ...Z"
        )
    if received_at > now + timedelta(minutes=5):
        raise InputError("--received-at is in the future; give the time of receipt")
    return received_at.astimezone(UTC)


def submit(
    *,
    regulation: str,
    email: str | None = None,
    phone: str | None = None,
    channel: str = "cli",
    received_at: datetime | None = None,
    jurisdiction: str | None = None,
    estate: str = "",
    idempotency_key: str | None = None,
    submitted_by: str = "",
    require_approval: bool = False,
) -> Request:
    """Store a new erasure request and return it.

    Every input is validated before anything is written; the request, its data
    key and its sealed identities are then written in one transaction. A
    repeated ``idempotency_key`` returns the request it created; a request for
    a subject with an open one is stored as its duplicate (erasure/duplicates.py).
    With ``require_approval`` the request waits, in ``awaiting_approval``, for a
    second officer (erasure/decisions.py); a duplicate passes that on to the
    open request if it has not been planned yet.
    """
    if submitted_by:
        submitted_by = officer(submitted_by)
    elif require_approval:
        raise InputError(
            "a request that needs approval needs its submitter's handle "
            "(--by HANDLE or LETHE_OFFICER), so a second officer can approve it"
        )
    regulation = regulation.strip().lower()
    if regulation not in REGULATIONS:
        raise InputError(
            f"unknown regulation {regulation!r}: use one of {', '.join(REGULATIONS)}"
        )
    runtime = current()
    identities = _identities(email, phone, runtime.settings.phone_region)
    received = _received(received_at)
    clock = Clock.for_request(
        regulation, received, jurisdiction or DEFAULT_JURISDICTION[regulation]
    )
    vault = runtime.vault
    request_id = new_request_id()
    digests = [(kind, value, vault.digest(kind, value)) for kind, value in identities]
    # a client's key may carry anything (an e-mail, an order number): the
    # ledger keeps its keyed digest only, and looks it up by that
    key_digest = (
        vault.digest("idempotency", idempotency_key)
        if idempotency_key is not None
        else None
    )
    with ledger.session() as db:
        if idempotency_key is not None and key_digest is not None:
            earlier = _by_idempotency_key(
                db, idempotency_key, key_digest, digests[0][2], regulation
            )
            if earlier is not None:
                return earlier
        open_one = duplicates.open_request_for(
            db,
            subject_digests=[d for _, _, d in digests],
            type_="erasure",
            regulation=regulation,
            estate=estate,
            received=received,
        )
        if open_one is not None:
            duplicate = _duplicate(
                db,
                open_one,
                request_id,
                regulation,
                channel,
                received,
                key_digest,
                digests,
            )
            duplicate.submitted_by = submitted_by
            if require_approval:
                _require_approval(open_one)
    if open_one is not None:
        audit.append(
            "request.duplicate",
            request_id=request_id,
            duplicate_of=open_one.id,
            channel=channel,
            submitted_by=submitted_by or None,
            approval_required=require_approval,
        )
        return duplicate
    with ledger.session() as db:
        vault.new_data_key(db, scope="request", key_id=request_id)
        db.add(
            Request(
                id=request_id,
                regulation=regulation,
                channel=channel,
                estate=estate,
                received_at=received,
                jurisdiction=clock.jurisdiction.code,
                rule_version=clock.rule_version,
                deadline=clock.deadline,
                acknowledge_by=clock.acknowledge_by,
                subject_digest=digests[0][2],
                subject_kind=digests[0][0],
                idempotency_key=key_digest,
                submitted_by=submitted_by,
                approval_required=require_approval,
                state=AWAITING_APPROVAL if require_approval else RECEIVED,
            )
        )
        for kind, value, digest in digests:
            db.add(
                SealedIdentity(
                    request_id=request_id,
                    role="submitted",
                    kind=kind,
                    digest=digest,
                    sealed=vault.seal(db, request_id, value),
                )
            )
    audit.append(
        "request.received",
        request_id=request_id,
        regulation=regulation,
        channel=channel,
        submitted_by=submitted_by or None,
        approval_required=require_approval,
    )
    return get(request_id)


def _require_approval(open_one: Request) -> None:
    """A second intake asks for approval: the open request waits for it too,
    unless it is already planned or approved (then it is past that gate)."""
    if open_one.state != RECEIVED or open_one.approved_at is not None:
        return
    open_one.approval_required = True
    open_one.state = AWAITING_APPROVAL


def _by_idempotency_key(
    db: Session, key: str, key_digest: str, subject_digest: str, regulation: str
) -> Request | None:
    """The request an Idempotency-Key created, found by the key's digest; a
    row written before keys were digested holds the key itself, and is given
    the digest instead when it is found."""
    found = db.exec(
        select(Request).where(col(Request.idempotency_key).in_([key_digest, key]))
    ).first()
    if found is None:
        return None
    if found.idempotency_key != key_digest:
        found.idempotency_key = key_digest
        db.add(found)
    if found.subject_digest != subject_digest or found.regulation != regulation:
        raise InputError(
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new request"
        )
    return found


def _duplicate(
    db: Session,
    open_one: Request,
    request_id: str,
    regulation: str,
    channel: str,
    received: datetime,
    key_digest: str | None,
    digests: list[tuple[str, str, str]],
) -> Request:
    """Store the intake as a duplicate; the open request runs from the earliest
    receipt and learns any identity only this intake gave."""
    duplicate = Request(
        id=request_id,
        regulation=regulation,
        channel=channel,
        estate=open_one.estate,
        received_at=received,
        jurisdiction=open_one.jurisdiction,
        rule_version=open_one.rule_version,
        deadline=open_one.deadline,
        subject_digest=digests[0][2],
        subject_kind=digests[0][0],
        state=DUPLICATE,
        duplicate_of=open_one.id,
        idempotency_key=key_digest,
    )
    db.add(duplicate)
    if received < open_one.received_at and not open_one.pauses:
        clock = Clock.for_request(open_one.regulation, received, open_one.jurisdiction)
        open_one.received_at = received
        open_one.deadline = clock.deadline
        open_one.acknowledge_by = clock.acknowledge_by
        db.add(open_one)
    known = {
        row.digest
        for row in db.exec(
            select(SealedIdentity).where(SealedIdentity.request_id == open_one.id)
        )
    }
    vault = current().vault
    if open_one.resolved_at is None:
        for kind, value, digest in digests:
            if digest not in known:
                db.add(
                    SealedIdentity(
                        request_id=open_one.id,
                        role="submitted",
                        kind=kind,
                        digest=digest,
                        sealed=vault.seal(db, open_one.id, value),
                    )
                )
    db.flush()
    return duplicate


def canonical_ids(request_ids: Sequence[str]) -> list[str]:
    """The requests that actually run: duplicates map to their open request."""
    with ledger.session() as db:
        found = []
        for request_id in request_ids:
            request = duplicates.canonical(db, get(request_id, db))
            if request.id not in found:
                found.append(request.id)
    return found


def mark_unplanned(request_id: str, detail: str) -> None:
    """Record why a request could not be planned; it stays open."""
    with ledger.session() as db:
        request = get(request_id, db)
        request.state = INCOMPLETE
        request.detail = detail
        db.add(request)
    audit.append("request.not_planned", request_id=request_id)


def check_estate(requests: Sequence[Request], estate: str) -> None:
    """Refuse to run requests against an estate other than their own."""
    foreign = [r.id for r in requests if r.estate and r.estate != estate]
    if foreign:
        theirs = sorted({r.estate for r in requests if r.id in foreign})
        raise InputError(
            f"request {', '.join(foreign)} belongs to estate {', '.join(theirs)}, but "
            f"lethe's estate file now names {estate}; point LETHE_ESTATE at that "
            "estate's file (or `lethe estate up --workdir` its folder and copy its "
            "estate.yaml into LETHE_HOME)"
        )


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
            f"no request has id {', '.join(repr(m) for m in missing)}; "
            "`lethe dsr list` shows them"
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
            select(Certificate)
            .where(Certificate.request_id == request.id)
            .order_by(col(Certificate.issued_at).desc())
        ).first()  # the newest: a superseding certificate replaces the first
        candidates = candidates_of(db, request.id)
    return {
        "request_id": request.id,
        "type": request.type,
        "regulation": request.regulation,
        "channel": request.channel,
        "estate": request.estate,
        "linked_to": request.linked_to,
        "duplicate_of": request.duplicate_of,
        "rechecks": request.rechecks,
        "state": request.state,
        "detail": request.detail,
        "submitted_by": request.submitted_by or None,
        "approval": {
            "required": request.approval_required,
            "by": request.approved_by,
            "at": _iso(request.approved_at),
        },
        "denial": {
            "reason": request.denial_reason,
            "by": request.denied_by,
            "at": _iso(request.denied_at),
        }
        if request.denial_reason
        else None,
        "received_at": _iso(request.received_at),
        "jurisdiction": request.jurisdiction,
        "rule_version": request.rule_version,
        "deadline": request.deadline.isoformat(),
        "extended_deadline": _day(request.extended_deadline),
        "acknowledge_by": _day(request.acknowledge_by),
        "paused_since": _day(request.paused_since),
        "completed_at": _iso(request.completed_at),
        "purged_at": _iso(request.purged_at),
        "policy_digest": request.policy_digest or None,
        "certificate_id": certificate.id if certificate else None,
        "certificate_kind": certificate.kind if certificate else None,
        "candidates": candidates,
        "systems": [_step_json(step) for step in steps],
    }


def candidates_of(db: Session, request_id: str) -> list[dict[str, str]]:
    """Records an ambiguous identity matched, for the officer to choose from."""
    vault = current().vault
    rows = db.exec(
        select(SealedIdentity).where(
            SealedIdentity.request_id == request_id,
            SealedIdentity.role == "candidate",
        )
    )
    return [
        {
            "record_id": vault.open(db, request_id, row.sealed),
            "object": row.dataset or "",
        }
        for row in rows
        if row.sealed is not None
    ]


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
        "dates": step.dates,
        "parts": step.parts,
        "outcome": outcome_label(step),
        "detail": step.detail,
    }


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
