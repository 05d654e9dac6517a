"""Re-verification of finished requests after fixed intervals.

Copies come back: a restore, a replay, a stale extract. Every completed request
is re-read in every system where it was erased after each interval of
``LETHE_RECHECK_DAYS`` (default ``7,30``); a hit reopens it as a linked
re-erasure. Identifiers are kept until the last re-check has run, so purging
waits for it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlmodel import col, select

from erasure import audit
from erasure.models import COMPLETED, Request
from erasure.requests import get
from lethe import ledger
from lethe.errors import ConfigError

DEFAULT_RECHECK_DAYS = (7, 30)


def intervals() -> tuple[int, ...]:
    text = os.environ.get("LETHE_RECHECK_DAYS")
    if text is None:
        return DEFAULT_RECHECK_DAYS
    try:
        days = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        days = (-1,)
    if any(d < 0 for d in days):
        raise ConfigError("LETHE_RECHECK_DAYS must list whole days, e.g. 7,30")
    return days


def pending(request: Request) -> list[int]:
    """The intervals this request has not been re-checked at yet."""
    return [d for d in intervals() if str(d) not in request.rechecks]


def due(now: datetime) -> list[tuple[str, int]]:
    """(request id, interval) pairs whose re-check time has come."""
    with ledger.session() as db:
        finished = db.exec(
            select(Request).where(
                Request.state == COMPLETED, col(Request.completed_at).is_not(None)
            )
        )
        found = []
        for request in finished:
            for days in pending(request):
                assert request.completed_at is not None
                if request.completed_at + timedelta(days=days) <= now:
                    found.append((request.id, days))
                    break  # one re-check per run; a late run catches up next time
    return found


def record(request_id: str, days: int, *, clean: bool, reopened: str | None) -> None:
    with ledger.session() as db:
        request = get(request_id, db)
        request.rechecks = {
            **request.rechecks,
            str(days): "clean" if clean else f"reopened as {reopened}",
        }
        db.add(request)
    audit.append(
        "request.rechecked",
        request_id=request_id,
        days=days,
        clean=clean,
        reopened=reopened,
    )
