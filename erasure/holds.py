"""Legal holds: freeze part of an erasure, let the rest proceed, resume on release.

A hold names a scope — a system, optionally one dataset and one data category
(fideslang; a dataset is in scope when the policy says it holds that category
or one beneath it) — a reason, and an end date or none. It covers one request,
or every request of the estate when placed without one (a litigation hold
over the ERP's billing, say).

When a step runs, the parts of it in an active hold's scope are marked
``deferred`` and skipped; everything else proceeds at once, and the request is
certified with those parts stated as "deferred by legal hold" (state
``held``). Releasing the hold, or reaching its end date, frees the parts: they
run in the next round (a new attempt, so nothing finished is repeated) and
the request gets a new certificate that supersedes the first and names it.

Only the hold's id, scope and end date reach a certificate; its reason is
staff free text and stays in the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from erasure import audit
from erasure.models import (
    DEFERRED,
    DONE,
    HELD,
    NO_DATA,
    PLANNED,
    LegalHold,
    Request,
    SystemStep,
)
from erasure.requests import get, officer
from lethe import ledger
from lethe.errors import InputError, NotFoundError
from lethe.estate.config import Estate
from lethe.fides import is_known_category
from lethe.vault import utcnow

MAX_REASON_CHARS = 500


def place(
    estate: Estate,
    *,
    system: str,
    reason: str,
    dataset: str | None = None,
    category: str | None = None,
    request_id: str | None = None,
    ends_on: date | None = None,
    by: str | None = None,
) -> LegalHold:
    """Store a hold after checking every part of it; nothing is stored on error."""
    if system not in estate.systems:
        raise InputError(
            f"unknown system {system!r}: the estate's systems are "
            f"{', '.join(sorted(estate.systems))}"
        )
    if category is not None and not is_known_category(category):
        raise InputError(
            f"unknown data category {category!r}: use a fideslang key such as "
            "user.financial"
        )
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise InputError(f"give a reason of 1 to {MAX_REASON_CHARS} characters")
    today = utcnow().date()
    if ends_on is not None and ends_on < today:
        raise InputError(f"the hold's end date {ends_on} is in the past")
    handle = officer(by)
    with ledger.session() as db:
        if request_id is not None:
            request = get(request_id, db)
            if request.estate and request.estate != estate.name:
                raise InputError(
                    f"request {request.id} belongs to another estate; "
                    "place the hold with that estate's file"
                )
            request_id = request.id
        hold = LegalHold(
            id=f"hold-{uuid.uuid4().hex[:12]}",
            estate=estate.name,
            request_id=request_id,
            system=system,
            dataset=dataset,
            category=category,
            reason=reason,
            ends_on=ends_on,
            placed_by=handle,
        )
        db.add(hold)
    audit.append(
        "hold.placed",
        request_id=request_id,
        hold_id=hold.id,
        system=system,
        dataset=dataset,
        category=category,
        ends_on=ends_on.isoformat() if ends_on else None,
    )
    return hold


def release(hold_id: str, *, by: str | None = None) -> list[str]:
    """End a hold now; returns the requests whose deferred parts it freed."""
    handle = officer(by)
    with ledger.session() as db:
        hold = db.get(LegalHold, hold_id)
        if hold is None:
            raise NotFoundError(
                f"no legal hold {hold_id!r}; `lethe hold list` shows them"
            )
        if hold.released_at is not None:
            raise InputError(f"hold {hold_id} was already released")
        hold.released_at = utcnow()
        hold.released_by = handle
        db.add(hold)
    freed = free_parts(hold_ids=[hold_id])
    audit.append("hold.released", hold_id=hold_id, requests=freed)
    return freed


def is_active(hold: LegalHold, today: date) -> bool:
    return hold.released_at is None and (hold.ends_on is None or hold.ends_on >= today)


def active_holds(db: Session, estate: str, request_id: str) -> list[LegalHold]:
    today = utcnow().date()
    rows = db.exec(
        select(LegalHold).where(
            LegalHold.estate == estate,
            LegalHold.released_at == None,  # noqa: E711 (SQL IS NULL)
        )
    )
    return [
        hold
        for hold in rows
        if hold.request_id in (None, request_id) and is_active(hold, today)
    ]


def covers(
    hold: LegalHold, system: str, dataset: str, categories: Iterable[str]
) -> bool:
    if hold.system != system or hold.dataset not in (None, dataset):
        return False
    if hold.category is None:
        return True
    return any(
        c == hold.category or c.startswith(hold.category + ".") for c in categories
    )


def defer_held(estate: Estate, request_id: str, system: str) -> SystemStep:
    """Mark the step's parts an active hold covers as deferred (before it runs)."""
    with ledger.session() as db:
        request = get(request_id, db)
        step = _step(db, request.id, system)
        if step.state == NO_DATA or not step.parts:
            return step
        holds = active_holds(db, estate.name, request.id)
        parts = {name: dict(part) for name, part in step.parts.items()}
        changed = False
        for dataset, part in parts.items():
            if part.get("state") == DONE:
                continue
            categories = estate.policy.dataset_categories.get(f"{system}:{dataset}", ())
            holding = [h.id for h in holds if covers(h, system, dataset, categories)]
            if holding and part.get("state") != DEFERRED:
                part.update(state=DEFERRED, held_by=sorted(holding))
                changed = True
            elif not holding and part.get("state") == DEFERRED:
                # its holds ended (end date passed): it runs in a new round
                part.update(state=PLANNED, held_by=[], round=part.get("round", 0) + 1)
                changed = True
        if changed:
            step.parts = parts
            step.updated_at = utcnow()
            db.add(step)
        return step


def free_parts(*, hold_ids: list[str]) -> list[str]:
    """Un-defer the parts these holds deferred, unless another hold still covers
    them; each freed part runs in a new round. Returns the requests affected."""
    released = set(hold_ids)
    affected: set[str] = set()
    with ledger.session() as db:
        steps = db.exec(select(SystemStep).where(col(SystemStep.state) != NO_DATA))
        for step in steps:
            parts = {name: dict(part) for name, part in step.parts.items()}
            touched = False
            for part in parts.values():
                holders = set(part.get("held_by") or [])
                if part.get("state") != DEFERRED or not holders & released:
                    continue
                remaining = holders - released - _inactive(db, holders)
                if remaining:
                    part["held_by"] = sorted(remaining)
                    continue
                part.update(state=PLANNED, held_by=[], round=part.get("round", 0) + 1)
                touched = True
            if touched:
                step.parts = parts
                step.state = PLANNED
                step.verified = False
                step.updated_at = utcnow()
                db.add(step)
                affected.add(step.request_id)
    return sorted(affected)


def expired(estate: str) -> list[str]:
    """Holds of the estate whose end date has passed and whose parts still wait."""
    today = utcnow().date()
    with ledger.session() as db:
        rows = db.exec(
            select(LegalHold).where(
                LegalHold.estate == estate,
                LegalHold.released_at == None,  # noqa: E711
                LegalHold.ends_on != None,  # noqa: E711
            )
        )
        return [h.id for h in rows if h.ends_on is not None and h.ends_on < today]


def step_holds(step: SystemStep) -> list[str]:
    return sorted(
        {h for part in step.parts.values() for h in part.get("held_by") or []}
    )


def describe(hold: LegalHold) -> dict[str, Any]:
    """A hold for `lethe hold list` (its reason included: ledger readers only)."""
    return {
        "id": hold.id,
        "request_id": hold.request_id,
        "system": hold.system,
        "dataset": hold.dataset,
        "category": hold.category,
        "reason": hold.reason,
        "ends_on": hold.ends_on.isoformat() if hold.ends_on else None,
        "placed_by": hold.placed_by,
        "placed_at": hold.placed_at.isoformat(),
        "released_at": hold.released_at.isoformat() if hold.released_at else None,
        "active": is_active(hold, utcnow().date()),
    }


def listing(estate: str) -> list[dict[str, Any]]:
    with ledger.session() as db:
        rows = db.exec(
            select(LegalHold)
            .where(LegalHold.estate == estate)
            .order_by(col(LegalHold.placed_at))
        )
        return [describe(h) for h in rows]


def held_requests(request_ids: Iterable[str]) -> list[str]:
    with ledger.session() as db:
        return [
            r.id
            for r in db.exec(
                select(Request).where(col(Request.id).in_(list(request_ids)))
            )
            if r.state == HELD
        ]


def _inactive(db: Session, hold_ids: set[str]) -> set[str]:
    today = utcnow().date()
    found = set()
    for hold_id in hold_ids:
        hold = db.get(LegalHold, hold_id)
        if hold is None or not is_active(hold, today):
            found.add(hold_id)
    return found


def _step(db: Session, request_id: str, system: str) -> SystemStep:
    return db.exec(
        select(SystemStep).where(
            SystemStep.request_id == request_id, SystemStep.system == system
        )
    ).one()
