"""An officer's decisions on a request: second-person approval and denial.

Officers act under a staff handle (``requests.officer``). A request submitted
with ``--require-approval``, or to an estate whose policy requires approval,
waits in ``awaiting_approval`` until a second officer, not its submitter,
approves it; until then no flow searches, plans or erases anything for it.
The approver is named explicitly (``--by`` or ``LETHE_OFFICER``), never taken
from the OS user name: an account shared or named differently from the
submitter's handle must not let anyone approve their own request.

A request may be denied, with a reason from ``DENIAL_REASONS``, only before
its erasure starts: no attempt has called a system (a run that failed before
calling one leaves it ``incomplete``, and still deniable). Denial is terminal
and certified: a signed certificate with the same request and subject blocks
as a completion certificate, a ``decision`` block and no systems. Notes are
staff free text, so they are sealed under the request's data key (a purge
shreds them with the identifiers), shown by ``lethe dsr show`` alone and never
put on a certificate, in a log or into Prefect.

A duplicate follows its canonical request (erasure/duplicates.py): approving
or denying a duplicate's id decides the request it duplicates, and so every
intake linked to it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from erasure import audit, certify, duplicates
from erasure.certificate import sign
from erasure.models import (
    AWAITING_APPROVAL,
    DENIED,
    INCOMPLETE,
    NEEDS_DISAMBIGUATION,
    RECEIVED,
    Attempt,
    Certificate,
    Request,
)
from erasure.requests import get, officer
from lethe import ledger
from lethe.errors import InputError, KeyDestroyedError
from lethe.runtime import current
from lethe.vault import utcnow

log = logging.getLogger(__name__)

DENIAL_REASONS = (
    "suspected_fraud",
    "insufficient_verification",
    "no_match",
    "exempt",
    "outside_jurisdiction",
    "other",
)
# incomplete: only while no attempt has called a system (_check_deniable)
DENIABLE_STATES = (RECEIVED, AWAITING_APPROVAL, NEEDS_DISAMBIGUATION, INCOMPLETE)
NOT_RUNNABLE_STATES = (AWAITING_APPROVAL, DENIED)
MAX_NOTE_CHARS = 2000


def approve(
    request_id: str, *, by: str | None = None, note: str | None = None
) -> Request:
    """Record a second officer's approval; the request can then run."""
    approver = approving_officer(by)
    text = _note(note)
    with ledger.session() as db:
        request = duplicates.canonical(db, get(request_id, db))
        if request.state != AWAITING_APPROVAL:
            raise InputError(
                f"request {request.id} is {request.state}, not awaiting_approval; "
                "only a request submitted for approval can be approved"
            )
        if approver.casefold() == request.submitted_by.casefold():
            raise InputError(
                f"request {request.id} was submitted by {approver}; a second "
                "officer must approve it (--by another staff handle)"
            )
        request.approved_by = approver
        request.approved_at = utcnow()
        request.approval_note = _seal(db, request.id, text)
        request.state = RECEIVED
        db.add(request)
    audit.append("request.approved", request_id=request.id, by=approver)
    log.info("request %s approved by a second officer", request.id)
    return request


def approving_officer(handle: str | None = None) -> str:
    """The approver's handle: ``--by``, else ``LETHE_OFFICER``; never the OS
    user name, which need not match the handle the submitter gave."""
    if handle is None and os.environ.get("LETHE_OFFICER") is None:
        raise InputError(
            "an approval names its approver: pass --by HANDLE or set LETHE_OFFICER "
            "(the OS user name is never taken as the approving officer)"
        )
    return officer(handle)


def deny(
    request_id: str,
    *,
    reason: str,
    note: str | None = None,
    by: str | None = None,
) -> Certificate:
    """Deny a request whose erasure has not started and certify the denial."""
    code = reason_code(reason)
    text = _note(note)
    if code == "other" and text is None:
        raise InputError(
            "--reason other needs --note saying why (the note stays in the "
            "ledger; the certificate carries the reason code only)"
        )
    who = officer(by)
    runtime = current()
    with ledger.session() as db:
        request = duplicates.canonical(db, get(request_id, db))
        _check_deniable(db, request)
        decided_at = utcnow()
        certificate_id = f"cert-{uuid.uuid4().hex[:12]}"
        kid, key = runtime.keys.signing_key()
        payload = denial_payload(
            request,
            duplicates.intake_ids(db, request.id),
            reason=code,
            decided_at=decided_at,
            certificate_id=certificate_id,
        )
        certificate = Certificate(
            id=certificate_id,
            request_id=request.id,
            kid=kid,
            issued_at=decided_at,
            jws=sign(payload, kid=kid, key=key),
            kind="denial",
        )
        request.state = DENIED
        request.denial_reason = code
        request.denied_by = who
        request.denied_at = decided_at
        request.denial_note = _seal(db, request.id, text)
        db.add(certificate)
        db.add(request)
    audit.append("request.denied", request_id=request.id, reason=code, by=who)
    audit.append(
        "certificate.issued",
        request_id=request.id,
        certificate_id=certificate.id,
        kid=certificate.kid,
    )
    log.info("request %s denied (%s); certificate %s", request.id, code, certificate.id)
    return certificate


def reason_code(reason: str) -> str:
    code = reason.strip().lower().replace("-", "_")
    if code not in DENIAL_REASONS:
        raise InputError(
            f"--reason must be one of {', '.join(DENIAL_REASONS)} "
            "(use other with --note for anything else)"
        )
    return code


def denial_payload(
    request: Request,
    intake_ids: list[str],
    *,
    reason: str,
    decided_at: datetime,
    certificate_id: str,
) -> dict[str, Any]:
    """The denial certificate: a completion certificate's request and subject
    blocks, no systems, and the decision with its reason code (never the note)."""
    payload = certify.payload_for(
        request, intake_ids, [], [], decided_at, certificate_id
    )
    payload["request"]["completed_at"] = None  # nothing was erased
    payload["systems"] = []
    payload["decision"] = {
        "outcome": "denied",
        "reason": reason,
        "decided_at": certify._iso(decided_at),
    }
    return payload


def intakes(request_id: str) -> list[str]:
    """The request and every intake linked to it as a duplicate, oldest first:
    what a decision on it decides."""
    with ledger.session() as db:
        return duplicates.intake_ids(db, request_id)


def not_runnable(request_ids: Sequence[str]) -> dict[str, str]:
    """The requests no flow may search, plan or erase for, with their state."""
    held = {}
    with ledger.session() as db:
        for request_id in request_ids:
            request = get(request_id, db)
            if request.state in NOT_RUNNABLE_STATES:
                held[request.id] = request.state
                log.info("request %s is %s: not run", request.id, request.state)
    return held


def notes(request_id: str) -> dict[str, str | None]:
    """The officers' notes, opened from the vault (None once purged)."""
    vault = current().vault
    with ledger.session() as db:
        request = get(request_id, db)
        opened = {}
        for name in ("approval_note", "denial_note"):
            sealed = getattr(request, name)
            try:
                opened[name] = vault.open(db, request.id, sealed) if sealed else None
            except KeyDestroyedError:
                opened[name] = None
    return opened


def _check_deniable(db: Session, request: Request) -> None:
    if request.state not in DENIABLE_STATES:
        raise InputError(
            f"request {request.id} is {request.state}; only a request whose "
            f"erasure has not started ({', '.join(DENIABLE_STATES)}) can be denied"
        )
    attempts = db.exec(select(Attempt).where(Attempt.request_id == request.id))
    called = sorted({attempt.system for attempt in attempts if attempt.called})
    if called:
        raise InputError(
            f"request {request.id} has already called {', '.join(called)}: its "
            "erasure has started, so it can no longer be denied; "
            f"`lethe dsr run {request.id}` finishes it"
        )


def _note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    text = note.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise InputError(f"--note is longer than {MAX_NOTE_CHARS} characters")
    return text


def _seal(db: Session, request_id: str, text: str | None) -> bytes | None:
    return current().vault.seal(db, request_id, text) if text is not None else None
