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
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

import lineage
from connectors.base import AsyncConnector, Connector, Outcome, SyncConnector
from erasure import certify, duplicates, plan, requests, steps
from erasure.models import DONE, FAILED, NEEDS_DISAMBIGUATION, NO_DATA
from erasure.requests import get_many
from flows.estate import (
    can_discover,
    connector_for,
    current_estate,
    discover,
    source_records,
    to_connector_keys,
)
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


@task(name="search-systems", **TASK_OPTIONS)
def search_systems(request_ids: list[str]) -> dict[str, int]:
    """Find each subject's records by identity before planning.

    The source system is searched by e-mail and phone (its records and their
    Cases join lineage); systems that can search by e-mail themselves (the ERP)
    are asked too, so records no job copied from Salesforce are found.
    Requests already planned are not searched again.
    """
    estate = current_estate()
    pending = [rid for rid in request_ids if not _planned(rid)]
    found: dict[str, int] = {}
    identities = {rid: _identities(rid) for rid in pending}
    with connector_for(estate, estate.source) as source:
        for request_id in pending:
            try:
                found[request_id] = _search_source(
                    estate, source, identities[request_id]
                )
            except LetheError as exc:
                _not_searched(request_id, estate.source, exc)
    searched = [rid for rid in pending if rid in found]
    for system in estate.systems:
        if system == estate.source or not searched:
            continue
        with connector_for(estate, system) as connector:
            if not can_discover(connector):
                continue
            for request_id in list(searched):
                try:
                    _discover(estate, system, connector, identities[request_id])
                except LetheError as exc:
                    _not_searched(request_id, system, exc)
                    searched.remove(request_id)
                    found.pop(request_id, None)
    return found


def _not_searched(request_id: str, system: str, exc: LetheError) -> None:
    """A search failed: the request stays unplanned, visibly, until a re-run."""
    detail = f"could not search {system} for the subject ({exc}); nothing was erased"
    requests.mark_unplanned(request_id, detail)
    log.warning("request %s: %s", request_id, detail)


def _planned(request_id: str) -> bool:
    return get_many([request_id])[0].resolved_at is not None


def _identities(request_id: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"email": [], "phone": []}
    with ledger.session() as db:
        for kind, value in plan.submitted_identities(db, request_id):
            found.setdefault(kind, []).append(value)
    return found


def _search_source(
    estate: Estate, source: Any, identities: dict[str, list[str]]
) -> int:
    runtime = current()
    matches = source.find_contacts(
        emails=identities["email"], phones=identities["phone"]
    )
    records = []
    for sobject, rows in matches.items():
        records += source_records(sobject, rows)
    for contact in [r.id for r in records if r.sobject == "Contact"]:
        records += [
            lineage.SourceRecord(sobject="Case", id=case_id, parent_id=contact)
            for case_id in source.cases_for([contact])
        ]
    with ledger.session() as db:
        lineage.record_source_snapshot(
            db,
            runtime.vault,
            estate.name,
            estate.source,
            records,
            phone_region=runtime.settings.phone_region,
        )
    return len(records)


def _discover(
    estate: Estate, system: str, connector: Any, identities: dict[str, list[str]]
) -> None:
    vault = current().vault
    for email in identities["email"]:
        found = discover(connector, emails=[email])
        with ledger.session() as db:
            for dataset, keys in found.items():
                lineage.record_discovered(
                    db,
                    vault,
                    estate.name,
                    f"{system}:{dataset}",
                    keys,
                    identity_kind="email",
                    identity_digest=vault.digest("email", email),
                )


@task(name="plan-requests", **TASK_OPTIONS)
def plan_requests(request_ids: list[str], searched: dict[str, int]) -> list[str]:
    """Plan every request; returns the ids that are ready to run."""
    estate = current_estate()
    ready = []
    for request_id in request_ids:
        if request_id not in searched and not _planned(request_id):
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
    keys = to_connector_keys(estate, system, plan.keys_for(request_id, system))
    action = step.planned_action
    try:
        outcome = _act(connector, system, request_id, action, keys)
        if outcome.status == "pending":
            steps.update_step(
                request_id,
                system,
                vendor_status=outcome.vendor_status,
                detail="awaiting the vendor's job",
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
        return _verify(estate, connector, system, request_id, keys, outcome)
    except TransientConnectorError as exc:
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        raise TransientConnectorError(f"{system}: {exc}", status=exc.status) from None
    except ConnectorError as exc:
        steps.finish_attempt(request_id, system, action, error=str(exc))
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        return FAILED
    except LetheError as exc:
        steps.update_step(request_id, system, state=FAILED, detail=str(exc))
        return FAILED
    except Exception as exc:  # anything else may quote values: keep its type only
        detail = f"unexpected {type(exc).__name__} in the {system} connector"
        steps.update_step(request_id, system, state=FAILED, detail=detail)
        log.error("request %s: %s", request_id, detail)
        raise LetheError(detail) from None


def _act(
    connector: Connector,
    system: str,
    request_id: str,
    action: str,
    keys: dict[str, list[str]],
) -> Outcome:
    attempt = steps.begin_attempt(request_id, system, action)
    if not attempt.called:
        missing = _missing_where_lineage_says(connector, keys)
        if missing is not None:
            if missing.status == "done":
                steps.finish_attempt(request_id, system, action)
                _record(request_id, system, missing)
            return missing
        steps.mark_calling(request_id, system, action)
    if isinstance(connector, AsyncConnector):
        return _act_async(connector, system, request_id, action, keys, attempt)
    if not isinstance(connector, SyncConnector):
        raise LetheError(f"the {system} connector can neither erase nor submit")
    if attempt.state == "finished":
        step = steps.load_step(request_id, system)
        return Outcome(
            status="done",
            action=step.action or "deleted",  # type: ignore[arg-type]
            records_affected=step.records_affected,
            retained_until=step.retained_until,
            basis=step.basis,
        )
    outcome = connector.erase(keys, idempotency_key=attempt.idempotency_key)
    steps.finish_attempt(request_id, system, action)
    _record(request_id, system, outcome)
    return outcome


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
    system: str,
    request_id: str,
    keys: dict[str, list[str]],
    outcome: Outcome,
) -> str:
    evidence = connector.verify(keys)
    state = DONE if evidence.verified else FAILED
    detail = evidence.detail or outcome.detail
    if not evidence.verified:
        detail = f"verification did not show the subject gone: {detail}"
    steps.update_step(
        request_id,
        system,
        state=state,
        verified=evidence.verified,
        observed=dict(evidence.observed),
        verified_at=evidence.checked_at or utcnow(),
        detail=detail,
    )
    if evidence.verified:
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
    searched = search_systems(request_ids)
    ready = plan_requests(request_ids, searched)
    if ready:
        step = erase_in_system.with_options(retries=step_retries())
        futures = [step.submit(system, ready) for system in estate.systems]
        wait(futures)
    states = close_requests(request_ids)
    with ledger.session() as db:
        return {
            rid: states[duplicates.canonical(db, requests.get(rid, db)).id]
            for rid in asked
        }
