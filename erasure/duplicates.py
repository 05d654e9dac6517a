"""Duplicate requests: one person, one request type, one run.

Two channels may file the same request (a web form, then an e-mail to
support), and a client may retry a submission after a timeout. An
``Idempotency-Key`` returns the request it already created. Otherwise a new
request for a subject who already has an open request of the same type in the
same estate, received within ``LETHE_DUPLICATE_WINDOW_DAYS`` (default 30), is
stored as a *duplicate* linked to the open one: it is recorded (it is an intake
the company must account for), it starts no second run, and the open request's
deadline runs from the earlier of the two receipts. The certificate lists every
intake id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from erasure.models import DUPLICATE, OPEN_STATES, Request
from lethe.errors import ConfigError

DEFAULT_WINDOW_DAYS = 30


def window() -> timedelta:
    text = os.environ.get("LETHE_DUPLICATE_WINDOW_DAYS", str(DEFAULT_WINDOW_DAYS))
    if not text.isdigit():
        raise ConfigError("LETHE_DUPLICATE_WINDOW_DAYS must be a whole number of days")
    return timedelta(days=int(text))


def open_request_for(
    db: Session,
    *,
    subject_digests: Sequence[str],
    type_: str,
    regulation: str,
    estate: str,
    received: datetime,
) -> Request | None:
    """The open request this one duplicates, if any (the earliest received).

    Only a request under the same regulation: a GDPR and a CCPA request for one
    person are two legal requests, each with its own clock and rule version.
    """
    span = window()
    candidates = db.exec(
        select(Request)
        .where(
            col(Request.subject_digest).in_(list(subject_digests)),
            Request.type == type_,
            Request.regulation == regulation,
            Request.estate == estate,
            col(Request.state).in_(OPEN_STATES),
            col(Request.duplicate_of).is_(None),
        )
        .order_by(col(Request.received_at))
    )
    for request in candidates:
        if abs(request.received_at - received) <= span:
            return request
    return None


def intake_ids(db: Session, canonical_id: str) -> list[str]:
    """The request and every duplicate linked to it, oldest first."""
    rows = db.exec(
        select(Request.id)
        .where(Request.duplicate_of == canonical_id)
        .order_by(col(Request.received_at))
    )
    return [canonical_id, *rows]


def canonical(db: Session, request: Request) -> Request:
    if request.state == DUPLICATE and request.duplicate_of:
        found = db.get(Request, request.duplicate_of)
        if found is not None:
            return found
    return request
