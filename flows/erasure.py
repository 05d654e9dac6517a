"""The erasure flow: request ids in, verified outcomes and certificates out.

For a batch of requests it (1) searches the source system for each submitted
identity so lineage is current, (2) plans every request from lineage before
touching anything, (3) runs one task per system over all requests, each step
written to the ledger before and after its external call, (4) verifies by
re-reading, and (5) certifies the requests whose every system is settled.

Only request ids and system names cross into Prefect: parameters, run names,
results and exception messages carry nothing personal.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

import lineage
from connectors.base import AsyncConnector, Connector, Outcome, SyncConnector
from connectors.registry import VENDOR_SLA_DAYS, plan_method
from erasure import certify, decisions, duplicates, holds, plan, requests, steps
from erasure.models import DEFERRED, DONE, FAILED, NEEDS_DISAMBIGUATION, NO_DATA
from erasure.requests import get_many
from flows import _actions
from flows.estate import (
    connector_for,
    current_estate,
    to_connector_keys,
)
from flows.search import is_planned, search_systems
from lethe import ledger
from lethe.errors import (
    ConfigError,
    ConnectorError,
    LetheError,
    TransientConnectorError,
)
from lethe.estate.config import Estate
from lethe.runtime import current
from lethe.vault import utcnow

log = logging.getLogger(__name__)

DEFAULT_POLL_BUDGET_SECONDS = 300.0
DEFAULT_STEP_RETRIES = 2


def poll_budget() -> float:
    """How long one run waits for a vendor job (``LETHE_POLL_BUDGET_SECONDS``).

    A job still running after it stays ``awaiting_vendor``; the next run polls
    the same job again.
    """
    text = os.environ.get("LETHE_POLL_BUDGET_SECONDS", str(DEFAULT_POLL_BUDGET_SECONDS))
    try:
        return max(0.0, float(text))
    except ValueError:
        raise ConfigError(
            "LETHE_POLL_BUDGET_SECONDS must be a number of seconds"
        ) from None


def step_retries() -> int:
    """How often Prefect re-runs a system's task after a transient failure.

    ``LETHE_STEP_RETRIES`` (default 2), on top of the connector's own retries.
    """
    text = os.environ.get("LETHE_STEP_RETRIES", str(DEFAULT_STEP_RETRIES))
    if not text.isdigit():
        raise ConfigError("LETHE_STEP_RETRIES must be a whole number >= 0")
    return int(text)


def _transient_only(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except TransientConnectorError:
        return True
    except Exception:
        return False
    return False


TASK_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


@task(name="plan-requests", **TASK_OPTIONS)
def plan_requests(request_ids: list[str], searched: dict[str, int]) -> list[str]:
    """Plan every request; returns the ids that are ready to run.

    A request awaiting a second officer's approval, or denied, is never planned.
    """
    estate = current_estate()
    held = decisions.not_runnable(request_ids)
    ready = []
    for request_id in request_ids:
        if request_id in held:
            continue
        if request_id not in searched and not is_planned(request_id):
            continue
        planned = plan.resolve(request_id, estate)
        if planned is None:
            continue
        ready.append(request_id)
        for step in planned:
            if step.state == NO_DATA and not step.observed:
                _settle_no_data(request_id, step.system, searched.get(request_id, 0))
    return ready


def _settle_no_data(request_id: str, system: str, source_matches: int) -> None:
    """A system lineage holds nothing for: say what that rests on.

    Every key downstream comes from a source record or a system's own search,
    and both were searched live just before planning; so "no data held" is
    verified by that search and by lineage, not assumed.
    """
    steps.update_step(
        request_id,
        system,
        action="none",
        verified=True,
        verified_at=utcnow(),
        observed={"lineage_copies": 0, "source_search_matches": source_matches},
        detail="no copy in lineage; the live source search found "
        f"{source_matches} records for the subject",
    )


@task(
    name="erase-in-system",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=_transient_only,
    **TASK_OPTIONS,
)
def erase_in_system(system: str, request_ids: list[str]) -> dict[str, str]:
    """Run one system's step for every request; returns {request_id: state}."""
    estate = current_estate()
    states: dict[str, str] = {}
    with connector_for(estate, system) as connector:
        for request_id in request_ids:
            states[request_id] = _run_step(estate, connector, system, request_id)
    return states


def _run_step(
    estate: Estate, connector: Connector, system: str, request_id: str
) -> str:
    step = steps.load_step(request_id, system)
    if step.state == NO_DATA or (step.state == DONE and step.verified):
        return step.state
    plan.redecide(request_id, system, estate)
    step = holds.defer_held(estate, request_id, system)
    keys = plan.keys_for(request_id, system)
    groups = _actions.groups(step.parts, step.planned_action, keys)
    states = {p.get("state") for p in step.parts.values()}
    if not groups:
        if DEFERRED in states:
            return steps.settle_parts(request_id, system, {})
        return step.state
    kind = str(estate.systems[system].get("kind"))
    try:  # a policy naming columns the system lacks fails before anything runs
        _actions.check_fields(connector, kind, step.parts, groups)
    except LetheError as exc:
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        log.warning("request %s: %s step not run: %s", request_id, system, exc)
        return FAILED
    if len(groups) == 1 and not states & {DEFERRED, DONE}:
        [(action, dataset_keys)] = groups.items()
        return _run_group(
            estate, connector, kind, system, request_id, action, dataset_keys
        )
    results = {
        action: _run_group(
            estate, connector, kind, system, request_id, action, ks, whole=False
        )
        for action, ks in groups.items()
    }
    return steps.settle_parts(request_id, system, results)


def _run_group(
    estate: Estate,
    connector: Connector,
    kind: str,
    system: str,
    request_id: str,
    action: str,
    dataset_keys: dict[str, list[str]],
    *,
    whole: bool = True,
) -> str:
    """Run one executed action (delete, anonymise, retain) over its datasets.

    ``whole``: the group is the step's only one, so its result is the step's.
    """
    keys = to_connector_keys(estate, system, dataset_keys)
    try:
        outcome = _act(connector, kind, system, request_id, action, keys)
        if outcome.status == "pending":
            steps.update_step(
                request_id,
                system,
                vendor_status=outcome.vendor_status,
                detail="awaiting the vendor's job",
                dates=_with_sla(steps.load_step(request_id, system).dates, kind),
            )
            return "awaiting_vendor"
        if outcome.status == "failed":
            steps.finish_attempt(request_id, system, action, error=outcome.detail)
            steps.update_step(
                request_id,
                system,
                state=FAILED,
                detail=outcome.detail,
                vendor_status=outcome.vendor_status,
            )
            return FAILED
        return _verify(
            estate,
            connector,
            kind,
            system,
            request_id,
            action,
            keys,
            outcome,
            whole=whole,
        )
    except TransientConnectorError as exc:
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        raise TransientConnectorError(f"{system}: {exc}", status=exc.status) from None
    except ConnectorError as exc:
        steps.finish_attempt(request_id, system, action, error=str(exc))
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        return FAILED
    except LetheError as exc:
        steps.finish_attempt(
            request_id, system, action, error=str(exc), missing_ok=True
        )
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        log.warning("request %s: %s step failed: %s", request_id, system, exc)
        return FAILED
    except Exception as exc:  # anything else may quote values: keep its type only
        detail = f"unexpected {type(exc).__name__} in the {system} connector"
        steps.update_step(request_id, system, state=FAILED, detail=detail)
        log.error("request %s: %s", request_id, detail)
        raise LetheError(detail) from None


def _act(
    connector: Connector,
    kind: str,
    system: str,
    request_id: str,
    action: str,
    keys: dict[str, list[str]],
) -> Outcome:
    method = plan_method(kind, _actions.base(action))
    attempt = steps.begin_attempt(request_id, system, action)
    if not attempt.called:
        missing = _missing_where_lineage_says(connector, keys)
        if missing is not None:
            if missing.status == "done":
                steps.finish_attempt(request_id, system, action)
                _record(request_id, system, missing)
            return missing
        if method == "anonymise":
            fields = _actions.fields_of(steps.load_step(request_id, system).parts, keys)
            _actions.seal_pre_image(connector, request_id, system, keys, fields)
        steps.mark_calling(request_id, system, action)
    if method == "erase" and isinstance(connector, AsyncConnector):
        return _act_async(connector, system, request_id, action, keys, attempt)
    if attempt.state == "finished":
        step = steps.load_step(request_id, system)
        return Outcome(
            status="done",
            action=step.action or "deleted",  # type: ignore[arg-type]
            records_affected=step.records_affected,
            retained_until=step.retained_until,
            basis=step.basis,
        )
    if method is None:
        outcome = _actions.retain_in_place(keys)
    elif method == "anonymise":
        fields = _actions.fields_of(steps.load_step(request_id, system).parts, keys)
        outcome = connector.anonymise(  # type: ignore[attr-defined]
            keys, fields, idempotency_key=attempt.idempotency_key
        )
    elif isinstance(connector, SyncConnector):
        outcome = connector.erase(keys, idempotency_key=attempt.idempotency_key)
    else:
        raise LetheError(f"the {system} connector can neither erase nor submit")
    outcome = _with_policy(request_id, system, action, keys, outcome)
    steps.finish_attempt(request_id, system, action)
    _record(request_id, system, outcome)
    return outcome


def _with_sla(dates: dict[str, str], kind: str) -> dict[str, str]:
    """The vendor's documented deadline for a job it has accepted, set once."""
    days = VENDOR_SLA_DAYS.get(kind)
    if days is None or "vendor_sla_by" in dates:
        return dates
    return {
        **dates,
        "vendor_sla_by": (utcnow() + timedelta(days=days)).date().isoformat(),
    }


def _with_policy(
    request_id: str,
    system: str,
    action: str,
    keys: dict[str, list[str]],
    outcome: Outcome,
) -> Outcome:
    """A retained outcome takes its basis and until-date from the policy's rule."""
    if outcome.status != "done" or _actions.base(action) != "retain":
        return outcome
    step = steps.load_step(request_id, system)
    found = _actions.retention(
        step.parts, list(keys), outcome, requests.get_many([request_id])[0]
    )
    if found is None:
        return outcome
    until, basis, note = found
    detail = "; ".join(p for p in (outcome.detail, note) if p)
    return replace(
        outcome, action="retained", retained_until=until, basis=basis, detail=detail
    )


def _missing_where_lineage_says(
    connector: Connector, keys: dict[str, list[str]]
) -> Outcome | None:
    """Before the first attempt: are the keys lineage named really there?

    None when they are. When none are, the system's documented "not found"
    (``confirm_absent``) turns that into success, already absent; without such
    proof it is unresolved, never success (DESIGN: complete means verified).
    """
    if connector.locate(keys).total > 0:
        return None
    probe = getattr(connector, "confirm_absent", None)
    if probe is not None and all(probe(keys).values()):
        return Outcome(
            status="done",
            action="already_absent",
            detail="the system answers 'not found' for every key lineage named",
            finished_at=utcnow(),
        )
    return Outcome(
        status="failed",
        action="none",
        detail="lineage lists keys here but the system holds none of them: "
        "unresolved; check the lineage or the connector settings",
    )


def _act_async(
    connector: AsyncConnector,
    system: str,
    request_id: str,
    action: str,
    keys: dict[str, list[str]],
    attempt: steps.AttemptView,
) -> Outcome:
    job_id = attempt.vendor_job_id
    if job_id is None and attempt.called:
        job_id = connector.find_job(keys, idempotency_key=attempt.idempotency_key)
        if job_id:
            steps.record_job(request_id, system, action, job_id)
    if job_id is None:
        outcome = connector.submit(keys, idempotency_key=attempt.idempotency_key)
        if outcome.job_id is None:
            steps.finish_attempt(request_id, system, action)
            _record(request_id, system, outcome)
            return outcome
        job_id = outcome.job_id
        steps.record_job(request_id, system, action, job_id)
    deadline = time.monotonic() + poll_budget()
    while True:
        outcome = connector.poll(job_id, keys)
        if outcome.job_id and outcome.job_id != job_id:
            job_id = outcome.job_id
            steps.record_job(request_id, system, action, job_id)
        if outcome.status != "pending" or time.monotonic() > deadline:
            break
        time.sleep(getattr(connector, "poll_interval", 0.5))
    if outcome.status == "done":
        steps.finish_attempt(request_id, system, action)
        _record(request_id, system, outcome)
    return outcome


def _record(request_id: str, system: str, outcome: Outcome) -> None:
    steps.update_step(
        request_id,
        system,
        action=outcome.action,
        records_affected=outcome.records_affected,
        vendor_status=outcome.vendor_status,
        retained_until=outcome.retained_until,
        basis=outcome.basis,
        detail=outcome.detail,
        dates=dict(outcome.dates),
        **({"vendor_job_id": outcome.job_id} if outcome.job_id else {}),
    )


def _verify(
    estate: Estate,
    connector: Connector,
    kind: str,
    system: str,
    request_id: str,
    action: str,
    keys: dict[str, list[str]],
    outcome: Outcome,
    *,
    whole: bool,
) -> str:
    method = plan_method(kind, _actions.base(action))
    if method is None:
        evidence = _actions.verify_retained(connector, keys)
    elif method == "anonymise":
        fields = _actions.fields_of(steps.load_step(request_id, system).parts, keys)
        evidence = _actions.verify_anonymised(
            connector, request_id, system, keys, fields
        )
    else:
        evidence = connector.verify(keys)
    state = DONE if evidence.verified else FAILED
    detail = evidence.detail or outcome.detail
    if not evidence.verified:
        detail = f"verification did not show the planned result: {detail}"
    if not whole:  # one group of several: the step settles when all have run
        steps.settle_group(request_id, system, list(keys), state, outcome, evidence)
        return state
    steps.update_step(
        request_id,
        system,
        state=state,
        verified=evidence.verified,
        observed=dict(evidence.observed),
        verified_at=evidence.checked_at or utcnow(),
        detail=detail,
    )
    if evidence.verified and method is not None:
        _forget_lineage_keys(estate, request_id, system)
    return state


def _forget_lineage_keys(estate: Estate, request_id: str, system: str) -> None:
    step = steps.load_step(request_id, system)
    runtime = current()
    keys = plan.keys_for(request_id, system)
    digests = [lineage.key_digest(runtime.vault, k) for ks in keys.values() for k in ks]
    with ledger.session() as db:
        lineage.mark_erased(
            db, estate.name, digests, [f"{system}:{d}" for d in step.datasets]
        )


@task(name="close-requests", **TASK_OPTIONS)
def close_requests(request_ids: list[str]) -> dict[str, str]:
    states = {}
    for request_id in request_ids:
        if get_many([request_id])[0].state != NEEDS_DISAMBIGUATION:
            certify.close(request_id)
        states[request_id] = get_many([request_id])[0].state
    return states


@flow(
    name="erase-requests",
    log_prints=False,
    persist_result=False,
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def erase_requests(request_ids: list[str]) -> dict[str, str]:
    """Erase the subjects of these requests everywhere lineage says they are."""
    estate = current_estate()
    # unknown ids, or requests of another estate, fail before anything runs
    requests.check_estate(get_many(request_ids), estate.name)
    asked, request_ids = list(request_ids), requests.canonical_ids(request_ids)
    # awaiting approval or denied: no system is searched, planned or erased
    held = decisions.not_runnable(request_ids)
    request_ids = [rid for rid in request_ids if rid not in held]
    if not request_ids:
        return _as_asked(asked, held)
    searched = search_systems(request_ids)
    ready = plan_requests(request_ids, searched)
    if ready:
        step = erase_in_system.with_options(retries=step_retries())
        futures = [step.submit(system, ready) for system in estate.systems]
        wait(futures)
    states = close_requests(request_ids)
    return _as_asked(asked, {**held, **states})


def _as_asked(asked: list[str], states: dict[str, str]) -> dict[str, str]:
    """Each id as given, duplicates answered by their canonical request."""
    with ledger.session() as db:
        return {
            rid: states[duplicates.canonical(db, requests.get(rid, db)).id]
            for rid in asked
        }
