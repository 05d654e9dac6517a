"""Before planning: search every system that can search by identity, so
lineage knows each subject's records before anything is touched.

The source system is searched by e-mail and phone (its records and their
Cases join lineage); systems that search by identity themselves — the ERP by
e-mail, a warehouse through its Fides annotations (lethe/fides.py) — are asked
too, so records no job reported are found. Requests already planned are not
searched again. Only counts and request ids are logged.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import lineage
from erasure import plan, requests
from erasure.requests import get_many
from flows.estate import (
    can_discover,
    connector_for,
    current_estate,
    discover,
    source_records,
)
from lethe import ledger
from lethe.errors import LetheError
from lethe.estate.config import Estate
from lethe.runtime import current

log = logging.getLogger(__name__)


@task(name="search-systems", persist_result=False, cache_policy=NO_CACHE)
def search_systems(request_ids: list[str]) -> dict[str, int]:
    """Find each subject's records by identity before planning (see the module
    docstring); returns the source system's match count per request."""
    estate = current_estate()
    pending = [rid for rid in request_ids if not is_planned(rid)]
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


def is_planned(request_id: str) -> bool:
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
    """Record what the system's own search finds for each e-mail.

    Only e-mails are searched: an address names one person, while a phone a
    table shares would need the officer's choice, which only Salesforce
    records can offer today (docs/discovery.md).
    """
    vault = current().vault
    scan = hasattr(connector, "find_by_identity")
    job = "discovery scan" if scan else "identity search"
    for email in identities["email"]:
        found = discover(connector, emails=[email])
        with ledger.session() as db:
            added = sum(
                lineage.record_discovered(
                    db,
                    vault,
                    estate.name,
                    f"{system}:{dataset}",
                    keys,
                    identity_kind="email",
                    identity_digest=vault.digest("email", email),
                    job=job,
                )
                for dataset, keys in found.items()
            )
        log.info(
            "%s in %s: keys in %d datasets, %d new copies",
            job,
            system,
            len(found),
            added,
        )
