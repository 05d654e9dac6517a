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

A hold must protect something: its dataset is one the estate knows in that
system, its category one the policy declares a dataset of that system (or that
dataset) to hold, and its request one with something left to hold. A hold is
active through its end date, inclusive, and expires the day after.

Only the hold's id, scope and end date reach a certificate or a log line; its
reason is staff free text, screened for e-mail addresses and phone numbers
(``lethe.logsafe.redact``), and stays in the ledger.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from erasure import audit, duplicates
from erasure.models import (
    COMPLETED,
    DEFERRED,
    DENIED,
    DONE,
    DUPLICATE,
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
from lethe.logsafe import redact
from lethe.vault import utcnow
from lineage.models import FlowEdge

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
FINISHED_STATES = (COMPLETED, DENIED)  # nothing is left to hold


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
    """Store a hold after checking every part of it; nothing is stored on error.

    The reason is stored screened (an e-mail address or phone number in it is
    replaced), so ``hold.reason`` differs from the text given when something
    was redacted. A hold placed on a duplicate's id holds the request it
    duplicates: ``hold.request_id`` names that one.
    """
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
    text = screened_reason(reason)
    today = utcnow().date()
    if ends_on is not None and ends_on < today:
        raise InputError(f"the hold's end date {ends_on} is in the past")
    handle = officer(by)
    with ledger.session() as db:
        _check_dataset(db, estate, system, dataset)
        _check_category(estate, system, dataset, category)
        if request_id is not None:
            request_id = _holdable(db, estate, request_id).id
        hold = LegalHold(
            id=f"hold-{uuid.uuid4().hex[:12]}",
            estate=estate.name,
            request_id=request_id,
            system=system,
            dataset=dataset,
            category=category,
            reason=text,
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
    log.info(
        "legal hold %s placed on %s for %s, ends %s",
        hold.id,
        scope(hold),
        request_id or "every request",
        ends_on or "never",
    )
    return hold


def screened_reason(reason: str) -> str:
    """The reason as it may be stored: trimmed, e-mail addresses and phone
    numbers replaced (staff should name the matter, not the person)."""
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON_CHARS:
        raise InputError(f"give a reason of 1 to {MAX_REASON_CHARS} characters")
    return redact(text)


def scope(hold: LegalHold) -> str:
    """``system[:dataset][, category C]``: what the hold freezes, for messages."""
    where = f"{hold.system}:{hold.dataset}" if hold.dataset else hold.system
    return f"{where}, category {hold.category}" if hold.category else where


def known_datasets(db: Session, estate: Estate, system: str) -> set[str]:
    """The datasets of ``system`` the estate knows (``Policy.known``: flow edges,
    ``tables`` / ``datasets`` settings, Fides-annotated tables, the policy's
    ``datasets:``) and those lineage captured or imported since."""
    known = set(estate.policy.known.get(system, ()))
    for edge in db.exec(select(FlowEdge).where(FlowEdge.estate == estate.name)):
        for end in (edge.source, edge.target):
            owner, _, name = end.partition(":")
            if owner == system and name:
                known.add(name)
    return known


def _check_dataset(
    db: Session, estate: Estate, system: str, dataset: str | None
) -> None:
    if dataset is None:
        return
    known = known_datasets(db, estate, system)
    if dataset in known:
        return
    if not known:
        raise InputError(
            f"the estate knows no dataset of system {system} (none in its flows:, "
            "its tables: or datasets: settings, its Fides annotations or the "
            "policy's datasets:); hold the whole system (drop --dataset) or "
            "declare the dataset"
        )
    raise InputError(
        f"system {system} has no dataset {redact(dataset)!r} the estate knows; its "
        f"known datasets are {', '.join(sorted(known))}"
    )


def _check_category(
    estate: Estate, system: str, dataset: str | None, category: str | None
) -> None:
    """A category hold must cover a dataset the policy says holds it."""
    if category is None:
        return
    declared = estate.policy.dataset_categories
    if dataset is not None:
        if not holds_category(declared.get(f"{system}:{dataset}", ()), category):
            raise InputError(
                f"dataset {dataset} of system {system} is not declared to hold "
                f"{category}; declare it in the policy's datasets: or drop --category"
            )
        return
    mine = [cats for key, cats in declared.items() if key.startswith(f"{system}:")]
    if not any(holds_category(cats, category) for cats in mine):
        raise InputError(
            f"no dataset of system {system} is declared to hold {category}; "
            "declare it in the policy's datasets: or drop --category"
        )


def _holdable(db: Session, estate: Estate, request_id: str) -> Request:
    """The request a hold on ``request_id`` covers: a duplicate's canonical
    request; never one that is finished."""
    given = get(request_id, db)
    request = duplicates.canonical(db, given)
    if request.estate and request.estate != estate.name:
        raise InputError(
            f"request {request.id} belongs to another estate; "
            "place the hold with that estate's file"
        )
    if request.state in FINISHED_STATES or request.state == DUPLICATE:
        named = (
            request.id
            if request.id == given.id
            else f"{request.id} (which {given.id} duplicates)"
        )
        raise InputError(
            f"request {named} is {request.state}: nothing is left to hold; "
            "a hold defers parts of an open request"
        )
    return request


def release(hold_id: str, *, by: str | None = None) -> list[str]:
    """End one hold now; returns the requests whose deferred parts it freed."""
    return release_all([hold_id], by=by)


def release_all(hold_ids: Sequence[str], *, by: str | None = None) -> list[str]:
    """End these holds now, all or none: every id is checked before any is
    released, then all are released and their parts freed in one transaction.
    Returns the requests whose deferred parts were freed."""
    handle = officer(by)
    wanted = list(dict.fromkeys(h.strip() for h in hold_ids))
    if not wanted:
        raise InputError("name the holds to release")
    with ledger.session() as db:
        found = {hold_id: db.get(LegalHold, hold_id) for hold_id in wanted}
        missing = [hold_id for hold_id, hold in found.items() if hold is None]
        if missing:
            raise NotFoundError(
                f"no legal hold {', '.join(repr(m) for m in missing)}; nothing was "
                "released; `lethe hold list` shows them"
            )
        done = [h.id for h in found.values() if h and h.released_at is not None]
        if done:
            raise InputError(
                f"hold {', '.join(done)} was already released; nothing was released"
            )
        released = [hold for hold in found.values() if hold is not None]
        now = utcnow()
        for hold in released:
            hold.released_at = now
            hold.released_by = handle
            db.add(hold)
        db.flush()
        freed = _free_parts(db, set(wanted))
    for hold in released:
        audit.append("hold.released", hold_id=hold.id, requests=freed)
        log.info(
            "legal hold %s on %s released; requests freed: %s",
            hold.id,
            scope(hold),
            ", ".join(freed) or "none",
        )
    return freed


def is_active(hold: LegalHold, today: date) -> bool:
    """Unreleased, and ``today`` is on or before its end date (if it has one)."""
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
    return hold.category is None or holds_category(categories, hold.category)


def holds_category(categories: Iterable[str], category: str) -> bool:
    """Whether a dataset declared to hold ``categories`` holds ``category``:
    it, or a category beneath it (``user.financial.bank_account``)."""
    return any(c == category or c.startswith(category + ".") for c in categories)


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
                part.update(state=PLANNED, held_by=[], round=next_round(parts))
                changed = True
        if changed:
            step.parts = parts
            step.updated_at = utcnow()
            db.add(step)
        return step


def free_parts(*, hold_ids: list[str]) -> list[str]:
    """Un-defer the parts these holds deferred, unless another hold still covers
    them; each freed part runs in a new round. Returns the requests affected."""
    with ledger.session() as db:
        return _free_parts(db, set(hold_ids))


def _free_parts(db: Session, released: set[str]) -> list[str]:
    affected: set[str] = set()
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
            part.update(state=PLANNED, held_by=[], round=next_round(parts))
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
        "released_by": hold.released_by,
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


def next_round(parts: dict[str, dict[str, Any]]) -> int:
    """A round no part of the step has used: each release runs under attempts of
    its own (``delete.r2``), never one an earlier release finished."""
    return 1 + max((int(part.get("round") or 0) for part in parts.values()), default=0)
