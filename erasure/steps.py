"""The ledger side of executing one step: attempts before and after each
external call, outcomes and evidence after.

A re-run reads these rows first: a finished attempt is not executed again, and
an async attempt that recorded a vendor job id polls that job instead of
filing a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from erasure import audit
from erasure.models import (
    AWAITING_VENDOR,
    DEFERRED,
    DONE,
    FAILED,
    Attempt,
    SystemStep,
)
from lethe import ledger
from lethe.vault import utcnow


@dataclass(frozen=True)
class AttemptView:
    idempotency_key: str
    state: str
    vendor_job_id: str | None
    runs: int
    called: bool


def idempotency_key(request_id: str, system: str, action: str) -> str:
    return f"{request_id}:{system}:{action}"


def _step(db: Session, request_id: str, system: str) -> SystemStep:
    step = db.exec(
        select(SystemStep).where(
            SystemStep.request_id == request_id, SystemStep.system == system
        )
    ).one()
    return step


def load_step(request_id: str, system: str) -> SystemStep:
    with ledger.session() as db:
        return _step(db, request_id, system)


def begin_attempt(request_id: str, system: str, action: str) -> AttemptView:
    """Write the attempt before the external call (or count one more run)."""
    key = idempotency_key(request_id, system, action)
    with ledger.session() as db:
        attempt = db.get(Attempt, key)
        if attempt is None:
            attempt = Attempt(
                idempotency_key=key, request_id=request_id, system=system, action=action
            )
        elif attempt.state not in ("finished",):
            attempt.runs += 1
        db.add(attempt)
        db.flush()
        view = AttemptView(
            key, attempt.state, attempt.vendor_job_id, attempt.runs, attempt.called
        )
    if view.runs == 1 and view.state == "started":
        audit.append(
            "attempt.started", request_id=request_id, system=system, action=action
        )
    return view


def mark_calling(request_id: str, system: str, action: str) -> None:
    """Write, before the first external call, that the system may now act.

    From here on, a re-run that finds nothing knows it may be its own work.
    """
    with ledger.session() as db:
        attempt = db.get(Attempt, idempotency_key(request_id, system, action))
        assert attempt is not None, "begin_attempt writes the attempt first"
        attempt.called = True
        db.add(attempt)


def record_job(request_id: str, system: str, action: str, job_id: str) -> None:
    """Write the vendor job id the moment the vendor returns it."""
    with ledger.session() as db:
        attempt = db.get(Attempt, idempotency_key(request_id, system, action))
        assert attempt is not None, "begin_attempt writes the attempt first"
        first = attempt.vendor_job_id is None
        attempt.vendor_job_id = job_id
        attempt.state = "submitted"
        db.add(attempt)
        step = _step(db, request_id, system)
        step.vendor_job_id = job_id
        step.state = AWAITING_VENDOR
        step.updated_at = utcnow()
        db.add(step)
    if first:
        audit.append(
            "vendor_job.filed",
            request_id=request_id,
            system=system,
            vendor_job_id=job_id,
        )


def finish_attempt(
    request_id: str,
    system: str,
    action: str,
    *,
    error: str | None = None,
    missing_ok: bool = False,
) -> None:
    with ledger.session() as db:
        attempt = db.get(Attempt, idempotency_key(request_id, system, action))
        if attempt is None and missing_ok:
            return  # the step failed before its attempt was written
        assert attempt is not None, "begin_attempt writes the attempt first"
        attempt.state = "failed" if error else "finished"
        attempt.error = error
        attempt.finished_at = utcnow()
        db.add(attempt)


def update_step(request_id: str, system: str, **fields: Any) -> SystemStep:
    with ledger.session() as db:
        step = _step(db, request_id, system)
        for name, value in fields.items():
            setattr(step, name, value)
        step.updated_at = utcnow()
        db.add(step)
    if fields.get("state") in (DONE, FAILED):
        audit.append(
            f"step.{fields['state']}",
            request_id=request_id,
            system=system,
            action=step.action,
            records_affected=step.records_affected,
            verified=step.verified,
            vendor_job_id=step.vendor_job_id,
        )
    return step


def attempts_of(request_id: str) -> list[Attempt]:
    with ledger.session() as db:
        return list(db.exec(select(Attempt).where(Attempt.request_id == request_id)))


def settle_group(
    request_id: str,
    system: str,
    datasets: list[str],
    state: str,
    outcome: Any,
    evidence: Any,
) -> None:
    """Record one action group's verified result on its datasets' parts."""
    with ledger.session() as db:
        step = _step(db, request_id, system)
        parts = {name: dict(part) for name, part in step.parts.items()}
        for dataset in datasets:
            part = parts.setdefault(dataset, {})
            part.update(
                state=state,
                outcome=outcome.action,
                records_affected=outcome.records_affected,
                verified=evidence.verified,
                observed=evidence.observed.get(dataset),
            )
            if outcome.retained_until is not None:
                part.update(
                    retained_until=outcome.retained_until.isoformat(),
                    basis=outcome.basis,
                )
        step.parts = parts
        step.updated_at = utcnow()
        db.add(step)


def settle_parts(request_id: str, system: str, results: dict[str, str]) -> str:
    """The step's state once each of its action groups has run.

    Done and verified only when every part is; otherwise failed when any
    failed, else awaiting its vendor, else deferred by a hold.
    """
    step = load_step(request_id, system)
    states = set(results.values()) | {
        str(p.get("state")) for p in step.parts.values() if p.get("state")
    }
    if FAILED in states:
        state = FAILED
    elif AWAITING_VENDOR in states:
        state = AWAITING_VENDOR
    elif DEFERRED in states:
        state = DEFERRED
    else:
        state = DONE
    done = [p for p in step.parts.values() if p.get("state") == DONE]
    outcomes = sorted({str(p.get("outcome")) for p in done})
    # a failed or waiting group wrote its own reason on the step: keep it
    detail = {
        DONE: "each dataset's result is in its part",
        DEFERRED: "held: a legal hold defers part of it; the rest is done",
    }.get(state, step.detail or "not every dataset's action has finished")
    update_step(
        request_id,
        system,
        state=state,
        verified=state == DONE,
        action=outcomes[0] if len(outcomes) == 1 else "+".join(outcomes),
        records_affected=sum(int(p.get("records_affected") or 0) for p in done),
        detail=detail,
    )
    return state
