"""The post-erasure re-check: re-read every system where a request erased the
subject, after each interval; reopen the request as a linked re-erasure on a
hit. ``now`` lets a test (or a catch-up run) simulate the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import lineage
from erasure import plan, recheck, requests
from erasure.certify import ERASED_ACTIONS
from erasure.reopen import reopen
from flows.estate import connector_for, current_estate, to_connector_keys
from lethe import ledger
from lethe.errors import InputError, LetheError
from lethe.runtime import current
from lethe.vault import utcnow

log = logging.getLogger(__name__)


@task(name="recheck-request", persist_result=False, cache_policy=NO_CACHE)
def recheck_request(request_id: str, days: int) -> str | None:
    """Re-read one request's erased systems; returns a reopened request id."""
    estate = current_estate()
    with ledger.session() as db:
        request = requests.get(request_id, db)
        erased = [
            s.system
            for s in requests.steps_of(db, request_id)
            if s.action in ERASED_ACTIONS
        ]
    found_again = []
    for system in erased:
        by_dataset = plan.keys_for(request_id, system)
        keys = to_connector_keys(estate, system, by_dataset)
        if not keys:
            continue
        try:
            with connector_for(estate, system) as connector:
                evidence = connector.verify(keys)
        except LetheError as exc:
            log.warning(
                "re-check of %s in %s could not run: %s", request_id, system, exc
            )
            return None  # try again next run; nothing recorded
        if not evidence.verified:
            found_again.append(system)
            _learn(estate.name, system, by_dataset, evidence.observed, request.subjects)
    reopened = None
    if found_again:
        reopened = reopen(request_id, request.subjects, reason="recheck")
        log.warning(
            "re-check +%dd of %s found the subject again in %s; re-erasure %s",
            days,
            request_id,
            ", ".join(found_again),
            reopened,
        )
    recheck.record(request_id, days, clean=not found_again, reopened=reopened)
    return reopened


def _learn(
    estate: str,
    system: str,
    by_dataset: dict[str, list[str]],
    observed: Mapping[str, object],
    subjects: list[str],
) -> None:
    """Tell lineage where the subject is again, so the re-erasure finds it."""
    vault = current().vault
    with ledger.session() as db:
        for dataset, keys in by_dataset.items():
            if observed.get(dataset) == 0:
                continue  # this dataset re-read clean
            lineage.record_found_again(
                db,
                vault,
                estate,
                f"{system}:{dataset}",
                keys,
                subject_digest=subjects[0] if subjects else "",
            )


@flow(name="recheck-requests", log_prints=False, persist_result=False)
def recheck_requests(now: str | None = None) -> dict[str, str | None]:
    """Re-check every finished request whose interval has come."""
    try:
        at = datetime.fromisoformat(now) if now else utcnow()
    except ValueError:
        raise InputError(f"{now!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise InputError("the re-check time needs a UTC offset")
    return {rid: recheck_request(rid, days) for rid, days in recheck.due(at)}
