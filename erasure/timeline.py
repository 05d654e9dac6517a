"""A request's legal clock in the ledger: deadlines, extension, pauses.

``erasure/clocks.py`` computes; this module persists. A request stores what it
needs to recompute its clock exactly — receipt instant, jurisdiction, rule
version, pauses and the extension notice — plus the dates the clock gave, so
``lethe dsr list`` can sort and flag without recomputing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from erasure import audit
from erasure.clocks import DEFAULT_JURISDICTION, Clock
from erasure.models import COMPLETED, DENIED, HELD, Request
from erasure.requests import get
from lethe import ledger
from lethe.errors import InputError
from lethe.logsafe import redact

# Answered: completed, denied (and certified), or done except what a legal hold
# defers (the hold is the answer for that part, GDPR Art. 17(3)(e)).
FINISHED = (COMPLETED, DENIED, HELD)


def start(regulation: str, received_at: datetime, jurisdiction: str | None) -> Clock:
    return Clock.for_request(
        regulation, received_at, jurisdiction or DEFAULT_JURISDICTION[regulation]
    )


def clock_of(request: Request) -> Clock:
    """Rebuild the request's clock from what the ledger holds."""
    clock = Clock.for_request(
        request.regulation,
        request.received_at,
        request.jurisdiction,
        rule_version=request.rule_version or None,
    )
    for begun, ended in request.pauses:
        clock = clock.pause(date.fromisoformat(begun), date.fromisoformat(ended))
    if request.extension_notified_on is not None:
        clock = clock.extend(request.extension_notified_on, request.extension_reason)
    return clock


def apply(request: Request, clock: Clock) -> None:
    """Write the clock's dates onto the request."""
    request.rule_version = clock.rule_version
    request.deadline = clock.deadline
    request.extended_deadline = clock.extended_deadline
    request.acknowledge_by = clock.acknowledge_by


def today_in(request: Request) -> date:
    return clock_of(request).jurisdiction.local_date(datetime.now(UTC))


def extend(request_id: str, reason: str, *, notified_on: date | None = None) -> Request:
    """Record the one extension, notified to the subject on ``notified_on``."""
    reason = redact(reason.strip())
    with ledger.session() as db:
        request = get(request_id, db)
        if request.state in FINISHED:
            raise InputError(
                f"request {request.id} is {request.state}; nothing to extend"
            )
        notified = notified_on or today_in(request)
        clock = clock_of(request).extend(notified, reason)
        request.extension_notified_on = notified
        request.extension_reason = reason
        apply(request, clock)
        db.add(request)
    audit.append(
        "request.extended",
        request_id=request_id,
        extended_deadline=clock.extended_deadline.isoformat()
        if clock.extended_deadline
        else None,
    )
    return request


def pause(request_id: str, *, since: date | None = None) -> Request:
    """Stop the clock while lethe waits for the subject (GDPR only moves it)."""
    with ledger.session() as db:
        request = get(request_id, db)
        if request.paused_since is not None:
            raise InputError(
                f"request {request.id} is already paused since {request.paused_since}; "
                "resume it first"
            )
        if request.state in FINISHED:
            raise InputError(
                f"request {request.id} is {request.state}; nothing to pause"
            )
        request.paused_since = since or today_in(request)
        db.add(request)
    audit.append("request.paused", request_id=request_id)
    return request


def resume(request_id: str, *, on: date | None = None) -> Request:
    """Restart the clock; the paused days move a GDPR deadline, not a CCPA one."""
    with ledger.session() as db:
        request = get(request_id, db)
        if request.paused_since is None:
            raise InputError(f"request {request.id} is not paused")
        ended = on or today_in(request)
        clock = clock_of(request).pause(request.paused_since, ended)
        request.pauses = [
            *request.pauses,
            [request.paused_since.isoformat(), ended.isoformat()],
        ]
        request.paused_since = None
        apply(request, clock)
        db.add(request)
    audit.append(
        "request.resumed", request_id=request_id, deadline=clock.deadline.isoformat()
    )
    return request


def due(
    request: Request, *, within_days: int, today: date | None = None
) -> dict[str, Any]:
    """The request's due date and whether it is overdue or due soon."""
    clock = clock_of(request)
    flag = (
        "done"
        if request.state in FINISHED
        else clock.due_state(
            today or clock.jurisdiction.local_date(datetime.now(UTC)), within_days
        )
    )
    return {
        "due_by": clock.due_by.isoformat(),
        "due_state": flag,
        "paused": request.paused_since is not None,
    }
