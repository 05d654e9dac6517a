"""Crypto-shredding: destroy a finished request's data key.

After a purge the request's identifiers cannot be recovered by anyone: the
wrapped data key and every sealed value under it are gone (the ledger runs
SQLite with ``secure_delete``, so the bytes do not linger in free pages). What
remains answers the CCPA duty to keep a record of requests for 24 months
(11 CCR §7101): dates, type, channel, outcome per system, the certificate —
none of it personal. The subject's keyed digest stays, so a later copy of the
same person can still be recognised without knowing who they were.

A request is purged when its proof period has passed (``LETHE_PROOF_PERIOD_DAYS``,
default 30 days after completion, or after denial for a denied request), or at
once with ``lethe dsr purge ID``. The officers' sealed notes go with the key.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlmodel import col, select

from erasure import audit
from erasure.models import COMPLETED, DENIED, Request
from erasure.requests import get
from lethe import ledger
from lethe.errors import ConfigError, InputError
from lethe.runtime import current
from lethe.vault import utcnow

DEFAULT_PROOF_PERIOD_DAYS = 30
FINISHED_STATES = (COMPLETED, DENIED)


def proof_period() -> timedelta:
    text = os.environ.get("LETHE_PROOF_PERIOD_DAYS", str(DEFAULT_PROOF_PERIOD_DAYS))
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days < 0:
        raise ConfigError("LETHE_PROOF_PERIOD_DAYS must be a whole number of days >= 0")
    return timedelta(days=days)


def purge(request_id: str) -> Request:
    """Destroy the data key of one completed (or denied) request."""
    vault = current().vault
    with ledger.session() as db:
        request = get(request_id, db)
        if request.state not in FINISHED_STATES:
            raise InputError(
                f"request {request.id} is {request.state}; only a completed request "
                "(or a denied one) can be purged (its identifiers are still needed "
                "to finish it)"
            )
        if request.purged_at is None:
            vault.destroy(db, request.id)
            request.approval_note = request.denial_note = None
            request.purged_at = utcnow()
            db.add(request)
            purged = True
        else:
            purged = False
    if purged:
        audit.append("request.purged", request_id=request.id)
    return request


def purge_expired(now: datetime | None = None) -> list[str]:
    """Purge every finished request whose proof period has passed."""
    cutoff = (now or utcnow()) - proof_period()
    with ledger.session() as db:
        due = list(
            db.exec(
                select(Request.id).where(
                    Request.state == COMPLETED,
                    col(Request.purged_at).is_(None),
                    col(Request.completed_at) <= cutoff,
                )
            )
        )
        denied = list(
            db.exec(
                select(Request.id).where(
                    Request.state == DENIED,
                    col(Request.purged_at).is_(None),
                    col(Request.denied_at) <= cutoff,
                )
            )
        )
    from erasure.recheck import pending

    ready = []
    for request_id in due:
        if not pending(get(request_id)):  # re-checks need the keys: they go first
            ready.append(purge(request_id).id)
    # nothing was erased for a denied request, so there is nothing to re-check
    return ready + [purge(request_id).id for request_id in denied]
